"""The cray_pm_counters collector against small /sys/cray/pm_counters trees."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ceems.exporter.collector import NoDataError, NodeContext
from ceems.exporter.collectors.cray_pm_counters import (
    FACTORY,
    parse_counter,
    parse_counter_filename,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "cray_pm_counters"
HOST = "nid001234"


def registry_for(sysfs: Path) -> CollectorRegistry:
    """A fresh registry holding one collector built through the factory."""
    collector = FACTORY.build(NodeContext(sysfs=sysfs, hostname=HOST), argparse.Namespace())
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def value(registry: CollectorRegistry, name: str, domain: str) -> float | None:
    return registry.get_sample_value(name, {"hostname": HOST, "domain": domain})


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("energy", ("node", "energy")),
        ("power", ("node", "power")),
        ("power_cap", ("node", "power_cap")),
        ("cpu_energy", ("cpu", "energy")),
        ("memory_power", ("memory", "power")),
        ("accel3_power_cap", ("accel3", "power_cap")),
        ("cpu0_temp", ("cpu0", "temp")),
        ("freshness", None),
        ("generation", None),
        ("raw_scan_hz", None),
        ("startup", None),
        ("version", None),
        ("nic_energy", None),
    ],
)
def test_parse_counter_filename(filename: str, expected: tuple[str, str] | None) -> None:
    assert parse_counter_filename(filename) == expected


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("2468013579 J 1700000000123456 us\n", "J", 2468013579.0),
        ("612 W 1700000000123456 us", "W", 612.0),
        ("0 W\n", "W", 0.0),
        ("52 C 1700000000126000 us", "C", 52.0),
    ],
)
def test_parse_counter(text: str, unit: str, expected: float) -> None:
    assert parse_counter(text, unit, Path("f")) == expected


@pytest.mark.parametrize(
    ("text", "unit"),
    [("", "W"), ("612", "W"), ("612 J 1 us", "W"), ("six W", "W"), ("6.5 W", "W")],
)
def test_parse_counter_rejects_garbage(text: str, unit: str) -> None:
    with pytest.raises(ValueError, match="pm_counters/power"):
        parse_counter(text, unit, Path("pm_counters/power"))


def test_energy_per_domain() -> None:
    registry = registry_for(FIXTURES / "sys")
    name = "ceems_cray_pm_counters_energy_joules"
    assert value(registry, name, "node") == 2468013579
    assert value(registry, name, "cpu") == 345678901
    assert value(registry, name, "memory") == 98765432
    assert value(registry, name, "accel0") == 512340000
    assert value(registry, name, "accel1") == 498760000


def test_power_per_domain() -> None:
    registry = registry_for(FIXTURES / "sys")
    name = "ceems_cray_pm_counters_power_watts"
    assert value(registry, name, "node") == 612
    assert value(registry, name, "cpu") == 141
    assert value(registry, name, "memory") == 37
    assert value(registry, name, "accel0") == 188
    assert value(registry, name, "accel1") == 201


def test_temperature_per_cpu() -> None:
    registry = registry_for(FIXTURES / "sys")
    assert value(registry, "ceems_cray_pm_counters_temp_celsius", "cpu0") == 52
    assert value(registry, "ceems_cray_pm_counters_temp_celsius", "cpu1") == 49


def test_power_limit_only_where_a_cap_is_set() -> None:
    registry = registry_for(FIXTURES / "sys")
    name = "ceems_cray_pm_counters_power_limit_watts"
    assert value(registry, name, "accel0") == 560
    assert value(registry, name, "accel1") is None
    assert value(registry, name, "node") is None


def test_metadata_files_are_not_metrics() -> None:
    output = generate_latest(registry_for(FIXTURES / "sys")).decode()
    for word in ("freshness", "generation", "raw_scan_hz", "startup", "version"):
        assert word not in output
    assert "# HELP ceems_cray_pm_counters_power_watts Current power value in watts" in output


def test_hostname_is_the_first_label() -> None:
    collector = FACTORY.build(
        NodeContext(sysfs=FIXTURES / "sys", hostname=HOST), argparse.Namespace()
    )
    samples = [sample for family in collector.collect() for sample in family.samples]
    assert len(samples) == 13
    assert {tuple(sample.labels) for sample in samples} == {("hostname", "domain")}


def test_missing_directory_is_no_data(tmp_path: Path) -> None:
    collector = FACTORY.build(NodeContext(sysfs=tmp_path), argparse.Namespace())
    with pytest.raises(NoDataError, match="no Cray pm_counters directory"):
        list(collector.collect())


def test_directory_without_counters_is_no_data() -> None:
    collector = FACTORY.build(NodeContext(sysfs=FIXTURES / "sys-no-counters"), argparse.Namespace())
    with pytest.raises(NoDataError, match="no energy, power or temperature counters"):
        list(collector.collect())


@pytest.mark.parametrize(
    ("fixture", "file"),
    [("sys-garbage", "power"), ("sys-wrong-unit", "power"), ("sys-truncated", "energy")],
)
def test_garbled_counter_fails_naming_the_file(fixture: str, file: str) -> None:
    collector = FACTORY.build(NodeContext(sysfs=FIXTURES / fixture), argparse.Namespace())
    with pytest.raises(ValueError, match=f"pm_counters/{file}:"):
        list(collector.collect())


def test_unreadable_counter_fails(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    shutil.copytree(FIXTURES / "sys", sysfs)
    # Root reads through chmod 000, so a directory stands in for an unreadable file.
    broken = sysfs / "cray/pm_counters/cpu_power"
    broken.unlink()
    broken.mkdir()
    collector = FACTORY.build(NodeContext(sysfs=sysfs), argparse.Namespace())
    with pytest.raises(IsADirectoryError):
        list(collector.collect())


def test_factory_metadata_and_flags() -> None:
    parser = argparse.ArgumentParser()
    FACTORY.add_flags(parser.add_argument_group("cray_pm_counters"))
    options = parser.parse_args([])
    assert FACTORY.name == "cray_pm_counters"
    assert FACTORY.enabled_by_default is False
    assert FACTORY.build(NodeContext(hostname=HOST), options).hostname == HOST
