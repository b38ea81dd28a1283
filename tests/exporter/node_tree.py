"""A complete simulated node tree for whole-exporter tests: every collector has a source."""

from __future__ import annotations

import shutil
from pathlib import Path

from ceems.sim.cgroups import SimCgroups, SimUnit
from ceems.sim.gpus import demo_gpus, write_fake_nvidia_smi
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


def gpu_node(root: Path, redfish_url: str, seed: int = 4) -> tuple[SimulatedNode, list[str]]:
    """A v2 GPU node running three SLURM jobs and a user session, with a Redfish BMC.

    Returns the node and the exporter flags for every collector that applies to it.
    """
    node = SimulatedNode(root / "node", NodeSpec(hostname="gpu-1"), seed)
    node.cgroups = SimCgroups(root / "cgroup", node.procfs, "v2", seed=seed)
    node.cgroups.add(SimUnit("slurm", "1000", 4, 8 * 2**30, pid=3000, uid=1001, gpus=("0", "1")))
    node.cgroups.add(SimUnit("slurm", "1001", 2, 4 * 2**30, pid=3001, uid=1002, gpus=("2",)))
    node.cgroups.add(SimUnit("slurm", "1002", 1, 2 * 2**30, pid=3002, uid=1002))
    node.cgroups.add(SimUnit("userslice", "root", 16, None, pid=3100, uid=0))
    node.advance(5.0)
    nvidia_smi = write_fake_nvidia_smi(root / "bin", demo_gpus())
    config = root / "redfish.yml"
    config.write_text(
        "redfish_web_config:\n  protocol: http\n"
        f"  hostname: 127.0.0.1\n  port: {redfish_url.rsplit(':', 1)[1]}\n"
        "  username: root\n  password: calvin\n  use_session_token: true\n  timeout: 2000\n"
    )
    flags = [
        "--path.procfs", str(node.procfs), "--path.sysfs", str(node.sysfs),
        "--path.cgroupfs", str(root / "cgroup"), "--collector.hostname", "gpu-1",
        "--collector.slurm", "--collector.userslice",
        "--collector.gpu.type", "nvidia", "--collector.gpu.nvidia-smi-path", str(nvidia_smi),
        "--collector.slurm.gres-config-file", str(root / "no-gres.conf"),
        "--collector.redfish", "--collector.redfish.config.file", str(config),
        "--collector.redfish.interval", "1",
        "--collector.ipmi_dcmi", "--collector.ipmi_dcmi.cmd", str(node.ipmi_command),
        "--collector.ipmi_dcmi.interval", "1",
    ]  # fmt: skip
    return node, flags
