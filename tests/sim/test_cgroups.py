"""Simulated unit cgroups: the unit collector reads back the simulator's ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ceems.exporter.cgroups.collector import CgroupUnitCollector, UnitCollectorConfig
from ceems.exporter.cgroups.fs import CgroupFS
from ceems.exporter.cgroups.layouts import slurm_layout
from ceems.sim.cgroups import SimCgroups, SimUnit, slurm_jobs
from ceems.sim.node import NodeSpec, SimulatedNode


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cpu_seconds_match_ground_truth(tmp_path: Path, version: str) -> None:
    node = SimulatedNode(tmp_path / "node", NodeSpec(), seed=5)
    node.cgroups = SimCgroups(tmp_path / "cgroup", node.procfs, version, seed=5)  # type: ignore[arg-type]
    for job in slurm_jobs(3):
        node.cgroups.add(job)
    for _ in range(30):
        node.advance(1.0)
    node.cgroups.end("1001")
    collector = CgroupUnitCollector(
        UnitCollectorConfig(slurm_layout(), CgroupFS.open(tmp_path / "cgroup"), "n", node.procfs)
    )
    registry = CollectorRegistry()
    registry.register(collector)
    truth = node.cgroups.ground_truth()
    assert set(truth) == {"1000", "1002"}
    for uuid, cpu_s in truth.items():
        labels = {"manager": "slurm", "hostname": "n", "cgrouphostname": "", "uuid": uuid}
        user = registry.get_sample_value("ceems_compute_unit_cpu_user_seconds_total", labels)
        system = registry.get_sample_value("ceems_compute_unit_cpu_system_seconds_total", labels)
        assert user is not None and system is not None
        assert user + system == pytest.approx(cpu_s, abs=1e-5)
    assert (
        registry.get_sample_value("ceems_compute_units", {"manager": "slurm", "hostname": "n"}) == 2
    )


def test_units_drive_node_load_and_share_its_dynamic_energy(tmp_path: Path) -> None:
    spec = NodeSpec(sockets=1, cores_per_socket=4, threads_per_core=1)
    node = SimulatedNode(tmp_path / "node", spec, seed=1)
    node.cgroups = SimCgroups(tmp_path / "cgroup", node.procfs, "v2", seed=1)
    node.cgroups.add(SimUnit("slurm", "1", cpus=2, memory_limit_bytes=None, pid=100, load=1.0))
    node.cgroups.add(SimUnit("slurm", "2", cpus=2, memory_limit_bytes=None, pid=101, load=0.5))
    start = node.ground_truth()["package-0_joules"]
    for _ in range(20):
        node.advance(0.5)
    dynamic = node.ground_truth()["package-0_joules"] - start - spec.package_idle_w * 10
    assert sum(node.unit_energy_j.values()) == pytest.approx(dynamic, rel=1e-9)
    assert node.unit_energy_j["1"] > node.unit_energy_j["2"]
    written = json.loads((tmp_path / "node/state/units_ground_truth.json").read_text())
    assert written == node.unit_ground_truth()
    assert written["1"]["dynamic_energy_joules"] == node.unit_energy_j["1"]


def test_slurm_environ_carries_gpus(tmp_path: Path) -> None:
    cgroups = SimCgroups(tmp_path / "cgroup", tmp_path / "proc", "v2")
    cgroups.add(SimUnit("slurm", "77", 1, None, pid=4242, gpus=("0", "2")))
    environ = (tmp_path / "proc" / "4242" / "environ").read_bytes().split(b"\0")
    assert b"SLURM_JOB_GPUS=0,2" in environ
    cgroups.make_stale("77")
    assert (
        "populated 0"
        in (tmp_path / "cgroup/system.slice/slurmstepd.scope/job_77/cgroup.events").read_text()
    )
