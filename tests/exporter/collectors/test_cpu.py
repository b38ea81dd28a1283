"""The cpu collector on fixture /proc trees."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ceems.exporter.collectors.cpu import CpuCollector, parse_proc_stat, parse_threads_per_core
from tests.conftest import FIXTURES

PROC = FIXTURES / "proc"


def registry_with(collector: CpuCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def test_cpu_seconds_per_mode_from_proc_stat() -> None:
    registry = registry_with(CpuCollector(PROC / "good", "node1"))
    value = registry.get_sample_value
    assert value("ceems_cpu_seconds_total", {"hostname": "node1", "mode": "user"}) == 3018.54
    assert value("ceems_cpu_seconds_total", {"hostname": "node1", "mode": "idle"}) == 89790.04
    assert value("ceems_cpu_seconds_total", {"hostname": "node1", "mode": "steal"}) == 0
    assert value("ceems_cpu_count", {"hostname": "node1"}) == 4
    assert value("ceems_cpu_per_core_count", {"hostname": "node1"}) == 2


def test_guest_columns_are_not_modes() -> None:
    stat = parse_proc_stat((PROC / "good" / "stat").read_text())
    assert set(stat.seconds) == {
        "user",
        "nice",
        "system",
        "idle",
        "iowait",
        "irq",
        "softirq",
        "steal",
    }


def test_cpu_seconds_never_go_backwards(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text((PROC / "good" / "cpuinfo").read_text())
    (tmp_path / "stat").write_text("cpu  100 0 100 1000 500 0 0 0 0 0\ncpu0 1 1 1 1 1 0 0 0\n")
    collector = CpuCollector(tmp_path, "n")
    registry = registry_with(collector)
    labels = {"hostname": "n", "mode": "iowait"}
    assert registry.get_sample_value("ceems_cpu_seconds_total", labels) == 5.0
    # Some kernels report a smaller iowait later (documented in proc(5)).
    (tmp_path / "stat").write_text("cpu  200 0 100 1000 400 0 0 0 0 0\ncpu0 1 1 1 1 1 0 0 0\n")
    assert registry.get_sample_value("ceems_cpu_seconds_total", labels) == 5.0
    assert registry.get_sample_value("ceems_cpu_seconds_total", {**labels, "mode": "user"}) == 2.0


@pytest.mark.parametrize(
    ("tree", "error"),
    [("truncated", ValueError), ("garbage", ValueError), ("absent", FileNotFoundError)],
)
def test_broken_proc_stat_raises(tree: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        list(CpuCollector(PROC / tree, "n").collect())


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        ("siblings\t: 8\ncpu cores\t: 4\n", 2),
        ("siblings\t: 4\ncpu cores\t: 4\n", 1),
        ("processor\t: 0\nBogoMIPS\t: 50.00\n", 1),  # arm64 has neither field
    ],
)
def test_threads_per_core(cpuinfo: str, expected: int) -> None:
    assert parse_threads_per_core(cpuinfo) == expected
