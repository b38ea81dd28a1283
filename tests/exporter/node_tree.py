"""A complete simulated node tree for whole-exporter tests: every collector has a source."""

from __future__ import annotations

import shutil
from pathlib import Path

from ceems.sim.node import NodeSpec, SimulatedNode
from tests.conftest import FIXTURES


def full_node(root: Path, seed: int = 3) -> tuple[SimulatedNode, list[str]]:
    """A simulated node plus netdev/infiniband fixtures; returns it and the exporter flags."""
    node = SimulatedNode(root, NodeSpec(hostname="sim-1", cray=True), seed)
    node.advance(5.0)
    shutil.copytree(FIXTURES / "netdev" / "proc" / "net", node.procfs / "net")
    shutil.copytree(
        FIXTURES / "infiniband" / "sys" / "class" / "infiniband",
        node.sysfs / "class" / "infiniband",
    )
    flags = [
        "--path.procfs", str(node.procfs), "--path.sysfs", str(node.sysfs),
        "--collector.hostname", "sim-1",
        "--collector.hwmon", "--collector.cray_pm_counters", "--collector.netdev",
        "--collector.infiniband", "--collector.ipmi_dcmi",
        "--collector.ipmi_dcmi.cmd", str(node.ipmi_command), "--collector.ipmi_dcmi.interval", "1",
        "--collector.emissions", "--collector.emissions.provider", "owid",
        "--collector.emissions.provider", "global", "--collector.emissions.country-code", "FR",
    ]  # fmt: skip
    return node, flags
