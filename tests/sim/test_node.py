"""The simulated node writes kernel-shaped files and keeps exact ground truth."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ceems.exporter.collectors.cpu import parse_proc_stat
from ceems.exporter.collectors.ipmi import parse_dcmi_text
from ceems.exporter.collectors.meminfo import parse_meminfo
from ceems.exporter.collectors.rapl import discover_zones
from ceems.sim.node import NodeSpec, SimulatedNode


def test_same_seed_same_evolution(tmp_path: Path) -> None:
    a = SimulatedNode(tmp_path / "a", NodeSpec(), seed=11)
    b = SimulatedNode(tmp_path / "b", NodeSpec(), seed=11)
    for _ in range(50):
        a.advance(1.0)
        b.advance(1.0)
    assert a.ground_truth() == b.ground_truth()
    assert (tmp_path / "a/proc/stat").read_text() == (tmp_path / "b/proc/stat").read_text()


def test_energy_is_power_integrated_over_time(tmp_path: Path) -> None:
    node = SimulatedNode(tmp_path, NodeSpec(package_idle_w=50, package_max_w=50), seed=1)
    before = node.ground_truth()["package-0_joules"]
    node.advance(10.0)
    assert node.ground_truth()["package-0_joules"] - before == pytest.approx(500.0)


def test_files_parse_with_the_collectors_parsers(tmp_path: Path) -> None:
    spec = NodeSpec(sockets=2, cores_per_socket=2, threads_per_core=2)
    node = SimulatedNode(tmp_path, spec, seed=2)
    node.advance(30.0)
    stat = parse_proc_stat((node.procfs / "stat").read_text())
    assert stat.cpu_count == 8
    assert sum(stat.seconds.values()) == pytest.approx(8 * 30.0, abs=0.1)
    assert (
        parse_meminfo((node.procfs / "meminfo").read_text())["MemTotal"][0] == spec.mem_total_bytes
    )
    assert [z.name for z in discover_zones(node.sysfs)] == ["package", "dram", "package", "dram"]
    output = subprocess.run([node.ipmi_command], capture_output=True, text=True, check=True).stdout
    assert parse_dcmi_text(output).current == round(node.power_w["node"])


def test_rapl_counter_wraps_at_its_range(tmp_path: Path) -> None:
    spec = NodeSpec(sockets=1, package_idle_w=100, package_max_w=100, rapl_range_uj=10**9)
    node = SimulatedNode(tmp_path, spec, seed=0)
    node.advance(25.0)  # 2500 J through a 1000 J counter
    raw = int((node.sysfs / "class/powercap/intel-rapl:0/energy_uj").read_text())
    assert raw == int(node.ground_truth()["package-0_joules"] * 1e6) % 10**9
    assert raw < 10**9


def test_time_must_move_forward(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        SimulatedNode(tmp_path, NodeSpec(), seed=0).advance(0)
