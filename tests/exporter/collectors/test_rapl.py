"""The rapl collector: zone discovery, CEEMS names, wrap handling, ground truth."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ceems.exporter.collector import NoDataError
from ceems.exporter.collectors.rapl import RaplAccumulator, RaplCollector, discover_zones
from ceems.sim.node import NodeSpec, SimulatedNode
from tests.conftest import FIXTURES

SYSFS = FIXTURES / "rapl" / "two_sockets"
POWERCAP = SYSFS / "class" / "powercap"


def collector(sysfs: Path, zone_label: bool = False, interval: float = 10.0) -> RaplCollector:
    c = RaplCollector(sysfs, "n1", zone_label, interval)
    c.start()
    return c


def test_zones_are_named_and_indexed_like_ceems() -> None:
    zones = [(z.name, z.index, z.path.name) for z in discover_zones(SYSFS)]
    assert zones == [
        ("package", 0, "intel-rapl:0"),
        ("dram", 0, "intel-rapl:0:0"),
        ("package", 1, "intel-rapl:1"),
        ("dram", 1, "intel-rapl:1:0"),
    ]


def test_per_zone_metric_names() -> None:
    c = collector(SYSFS)
    registry = CollectorRegistry()
    registry.register(c)
    labels = {"hostname": "n1", "index": "1", "path": str(POWERCAP / "intel-rapl:1")}
    assert registry.get_sample_value("ceems_rapl_package_joules_total", labels) == 98765.432101
    assert registry.get_sample_value("ceems_rapl_package_power_limit_watts_total", labels) == 165
    dram = {"hostname": "n1", "index": "0", "path": str(POWERCAP / "intel-rapl:0:0")}
    assert registry.get_sample_value("ceems_rapl_dram_joules_total", dram) == 1234.56789
    c.close()


def test_zone_label_mode() -> None:
    c = collector(SYSFS, zone_label=True)
    registry = CollectorRegistry()
    registry.register(c)
    labels = {
        "hostname": "n1",
        "index": "0",
        "path": str(POWERCAP / "intel-rapl:0:0"),
        "rapl_zone": "dram",
    }
    assert registry.get_sample_value("ceems_rapl_joules_total", labels) == 1234.56789
    assert registry.get_sample_value("ceems_rapl_dram_joules_total", labels) is None
    c.close()


def test_wrap_is_folded_into_a_monotonic_total(tmp_path: Path) -> None:
    shutil.copytree(SYSFS, tmp_path / "sys")
    zone_file = tmp_path / "sys/class/powercap/intel-rapl:0:0/energy_uj"
    zone_file.write_text("65712000000\n")  # 999_613 uJ below the dram zone's range
    accumulator = RaplAccumulator(discover_zones(tmp_path / "sys"))
    path = zone_file.parent
    first = accumulator.advance()[path]
    zone_file.write_text("500000\n")  # wrapped: +999613 uJ to the top, then +500000
    second = accumulator.advance()[path]
    assert second - first == pytest.approx(1.499613)


def test_value_outside_range_is_refused(tmp_path: Path) -> None:
    shutil.copytree(SYSFS, tmp_path / "sys")
    (tmp_path / "sys/class/powercap/intel-rapl:0/energy_uj").write_text("999999999999999\n")
    with pytest.raises(ValueError, match="outside"):
        RaplAccumulator(discover_zones(tmp_path / "sys")).advance()


@pytest.mark.parametrize("content", ["", "12ab\n", "-5\n"])
def test_garbage_counter_raises(tmp_path: Path, content: str) -> None:
    shutil.copytree(SYSFS, tmp_path / "sys")
    (tmp_path / "sys/class/powercap/intel-rapl:1/energy_uj").write_text(content)
    with pytest.raises(ValueError):
        RaplAccumulator(discover_zones(tmp_path / "sys")).advance()


def test_unreadable_counter_raises(tmp_path: Path) -> None:
    shutil.copytree(SYSFS, tmp_path / "sys")
    counter = tmp_path / "sys/class/powercap/intel-rapl:1/energy_uj"
    counter.unlink()
    counter.mkdir()  # reading a directory fails like an unreadable file does, even as root
    with pytest.raises(IsADirectoryError):
        RaplAccumulator(discover_zones(tmp_path / "sys")).advance()


def test_no_powercap_is_no_data(tmp_path: Path) -> None:
    with pytest.raises(NoDataError):
        list(RaplCollector(tmp_path, "n", False, 1.0).collect())


def test_total_matches_ground_truth_across_many_wraps(tmp_path: Path) -> None:
    """Counters wrap about every 2 s; scrapes stop for 7 s while the sampler keeps going."""
    spec = NodeSpec(sockets=1, package_idle_w=80, package_max_w=120, rapl_range_uj=200_000_000)
    node = SimulatedNode(tmp_path / "node", spec, seed=7)
    c = RaplCollector(node.sysfs, "n", False, sample_interval_s=0.05)
    c.start()
    registry = CollectorRegistry()
    registry.register(c)
    package = {
        "hostname": "n",
        "index": "0",
        "path": str(node.sysfs / "class/powercap/intel-rapl:0"),
    }
    start_exported = registry.get_sample_value("ceems_rapl_package_joules_total", package)
    start_truth = node.ground_truth()["package-0_joules"]
    stop = threading.Event()
    runner = threading.Thread(target=node.run, args=(stop, 0.01))
    runner.start()
    time.sleep(7.0)  # no scrape at all: only the background sampler sees the counter
    stop.set()
    runner.join()
    time.sleep(0.2)  # let the sampler take a final look at the stopped node
    end_exported = registry.get_sample_value("ceems_rapl_package_joules_total", package)
    truth = node.ground_truth()["package-0_joules"] - start_truth
    c.close()
    assert start_exported is not None and end_exported is not None
    assert truth > 3 * spec.rapl_range_uj / 1e6  # the counter really wrapped several times
    assert end_exported - start_exported == pytest.approx(truth, rel=1e-3)
