"""The simulated node, exporter and real Prometheus shared by the attribution tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest

from ceems.attribution.rulefile import describe, render, rule_files
from ceems.attribution.spec import Emissions, HostJob, PowerSource, RuleSpec
from ceems.common.httpconfig import HttpClientConfig
from ceems.sim.cgroups import SimCgroups, SimUnit
from ceems.sim.node import NodeSpec, SimulatedNode
from ceems.sim.prometheus import PrometheusProcess
from ceems.tsdb.client import TsdbClient
from tests.conftest import free_port, missing_service

FACTOR_G_PER_KWH = 50.0
SPEC = RuleSpec(
    hosts=(HostJob("ceems", PowerSource.IPMI, rapl=True, rapl_dram=True),),
    evaluation_interval=timedelta(seconds=1),
    rate_interval=timedelta(seconds=4),
    emissions=Emissions(static_g_per_kwh=FACTOR_G_PER_KWH),
)
JOBS = (("101", 8, 0.9), ("102", 4, 0.5), ("103", 2, 0.2))  # uuid, CPUs, starting load


@dataclass
class Stack:
    node: SimulatedNode
    prometheus: PrometheusProcess
    client: TsdbClient


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if shutil.which("prometheus") is None:
        missing_service("prometheus not installed (scripts/services.sh install prometheus)")
    root = tmp_path_factory.mktemp("accuracy")
    node = SimulatedNode(root / "node", NodeSpec(hostname="acc-node", hwmon=False), seed=7)
    node.cgroups = SimCgroups(root / "node" / "cgroup", node.procfs, "v2", seed=7)
    for uuid, cpus, load in JOBS:
        node.cgroups.add(SimUnit("slurm", uuid, cpus, 8 * 2**30, pid=40000 + int(uuid), load=load))
    stop = threading.Event()
    ticker = threading.Thread(target=node.run, args=(stop, 0.25), daemon=True)
    ticker.start()
    port = free_port()
    exporter = subprocess.Popen(
        [
            sys.executable, "-m", "ceems.exporter.cli",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--path.procfs={node.procfs}", f"--path.sysfs={node.sysfs}",
            f"--path.cgroupfs={root / 'node' / 'cgroup'}",
            "--collector.hostname=acc-node",
            "--collector.ipmi_dcmi", f"--collector.ipmi_dcmi.cmd={node.ipmi_command}",
            "--collector.ipmi_dcmi.interval=1",
            "--collector.slurm", "--collector.gpu.type=nogpu",
        ],
        stdout=(root / "exporter.log").open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    rules = root / "rules"
    rules.mkdir()
    for file in rule_files(SPEC):
        (rules / file.name).write_text(render(file, describe(SPEC)))
    config = root / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{rules}/*.rules']\n"
        "scrape_configs:\n  - job_name: ceems\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    prometheus = PrometheusProcess(config, root / "prometheus", free_port())
    prometheus.start()
    client = TsdbClient(HttpClientConfig(url=prometheus.url))
    try:
        yield Stack(node, prometheus, client)
    finally:
        client.close()
        prometheus.stop()
        exporter.terminate()
        exporter.wait(timeout=10)
        stop.set()
        ticker.join(timeout=5)
