"""The hwmon collector against small /sys/class/hwmon trees."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ceems.exporter.collector import NoDataError, NodeContext
from ceems.exporter.collectors.hwmon import FACTORY, chip_id, clean_name, parse_sensor_filename

FIXTURES = Path(__file__).parents[2] / "fixtures" / "hwmon"
HOST = "node-a"
ACPI = "devices/LNXSYSTM:00/LNXSYBUS:00/ACPI000D:00"


def build_sysfs(tmp_path: Path, fixture: str = "sys") -> Path:
    """Copy a fixture tree and add the class and device symlinks sysfs has."""
    sysfs = tmp_path / "sys"
    shutil.copytree(FIXTURES / fixture, sysfs)
    if fixture == "sys":
        hwmon = sysfs / "class" / "hwmon"
        (hwmon / "hwmon0").symlink_to("../../devices/platform/coretemp.0/hwmon/hwmon0")
        (hwmon / "hwmon1").symlink_to(f"../../{ACPI}/hwmon/hwmon1")
        coretemp = sysfs / "devices/platform/coretemp.0/hwmon/hwmon0/device"
        coretemp.symlink_to("../../../coretemp.0")
        (sysfs / ACPI / "hwmon/hwmon1/device").symlink_to("../../../ACPI000D:00")
    return sysfs


def registry_for(sysfs: Path) -> CollectorRegistry:
    """A fresh registry holding one hwmon collector built through the factory."""
    collector = FACTORY.build(NodeContext(sysfs=sysfs, hostname=HOST), argparse.Namespace())
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def labels(sensor: str, chip: str, chip_name: str) -> dict[str, str]:
    return {"hostname": HOST, "sensor": sensor, "chip": chip, "chip_name": chip_name}


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("power1_input", ("power1", ("power", "input"))),
        ("power2_average", ("power2", ("power", "average"))),
        ("power1_input_lowest", ("power1", ("power", "input_lowest"))),
        ("power1_input_highest", ("power1", ("power", "input_highest"))),
        ("energy12_input", ("energy12", ("energy", "input"))),
        ("power1_cap", None),
        ("power1_average_interval", None),
        ("temp1_input", None),
        ("name", None),
        ("device", None),
    ],
)
def test_parse_sensor_filename_keeps_only_exported_kinds(
    filename: str, expected: tuple[str, tuple[str, str]] | None
) -> None:
    assert parse_sensor_filename(filename) == expected


def test_clean_name_follows_node_exporter() -> None:
    assert clean_name("Socket 0 \n") == "socket_0"
    assert clean_name("LNXSYBUS:00") == "lnxsybus:00"


def test_chip_id_prefers_device_link_then_name(tmp_path: Path) -> None:
    sysfs = build_sysfs(tmp_path)
    assert chip_id(sysfs / "class/hwmon/hwmon0") == "platform_coretemp_0"
    assert chip_id(sysfs / "class/hwmon/hwmon1") == "lnxsybus:00_acpi000d:00"
    assert chip_id(sysfs / "class/hwmon/hwmon2") == "socket_0"


def test_power_sensors_in_watts(tmp_path: Path) -> None:
    registry = registry_for(build_sysfs(tmp_path))
    socket = labels("power1", "socket_0", "socket_0")
    assert registry.get_sample_value("ceems_hwmon_power_current_watts", socket) == 182.25
    assert registry.get_sample_value("ceems_hwmon_power_avg_watts", socket) == 150.0
    assert registry.get_sample_value("ceems_hwmon_power_min_watts", socket) == 40.0
    assert registry.get_sample_value("ceems_hwmon_power_max_watts", socket) == 250.5
    power2 = labels("power2", "socket_0", "socket_0")
    assert registry.get_sample_value("ceems_hwmon_power_current_watts", power2) == 95.0


def test_energy_sensors_in_joules(tmp_path: Path) -> None:
    registry = registry_for(build_sysfs(tmp_path))
    energy1 = labels("energy1", "socket_0", "socket_0")
    energy2 = labels("energy2", "socket_0", "socket_0")
    assert registry.get_sample_value("ceems_hwmon_energy_current_joules", energy1) == 4.5e6
    assert registry.get_sample_value("ceems_hwmon_energy_current_joules", energy2) == 1234.56789


def test_symlinked_chip_uses_device_path_id_and_device_dir_sensors(tmp_path: Path) -> None:
    registry = registry_for(build_sysfs(tmp_path))
    meter = labels("power1", "lnxsybus:00_acpi000d:00", "power_meter")
    # power1_average exists in both places: the hwmon directory's value wins.
    assert registry.get_sample_value("ceems_hwmon_power_avg_watts", meter) == 312.5
    assert registry.get_sample_value("ceems_hwmon_power_current_watts", meter) == 305.0


def test_chips_without_power_sensors_are_skipped(tmp_path: Path) -> None:
    output = generate_latest(registry_for(build_sysfs(tmp_path))).decode()
    assert "coretemp" not in output
    assert "temp1" not in output


def test_exposition_has_ceems_help_and_type(tmp_path: Path) -> None:
    output = generate_latest(registry_for(build_sysfs(tmp_path))).decode()
    assert "# HELP ceems_hwmon_power_current_watts Current Power consumption in watts" in output
    assert "# TYPE ceems_hwmon_energy_current_joules gauge" in output


def test_hostname_is_the_first_label(tmp_path: Path) -> None:
    collector = FACTORY.build(
        NodeContext(sysfs=build_sysfs(tmp_path), hostname=HOST), argparse.Namespace()
    )
    samples = [sample for family in collector.collect() for sample in family.samples]
    assert len(samples) == 9
    assert {tuple(sample.labels) for sample in samples} == {
        ("hostname", "sensor", "chip", "chip_name")
    }


def test_missing_hwmon_directory_is_no_data(tmp_path: Path) -> None:
    with pytest.raises(NoDataError, match="no hwmon directory"):
        list(FACTORY.build(NodeContext(sysfs=tmp_path), argparse.Namespace()).collect())


def test_no_power_or_energy_sensor_is_no_data() -> None:
    collector = FACTORY.build(NodeContext(sysfs=FIXTURES / "sys-no-power"), argparse.Namespace())
    with pytest.raises(NoDataError, match="no hwmon power or energy sensors"):
        list(collector.collect())


@pytest.mark.parametrize("fixture", ["sys-garbage", "sys-truncated"])
def test_non_numeric_power_value_names_the_file(fixture: str) -> None:
    collector = FACTORY.build(NodeContext(sysfs=FIXTURES / fixture), argparse.Namespace())
    with pytest.raises(ValueError, match=r"hwmon0/power1_input"):
        list(collector.collect())


def test_one_unreadable_sensor_is_skipped_when_others_work(tmp_path: Path) -> None:
    sysfs = build_sysfs(tmp_path)
    # Root reads through chmod 000, so a directory stands in for an unreadable file.
    broken = sysfs / "class/hwmon/hwmon2/power2_input"
    broken.unlink()
    broken.mkdir()
    registry = registry_for(sysfs)
    assert (
        registry.get_sample_value(
            "ceems_hwmon_power_current_watts", labels("power2", "socket_0", "socket_0")
        )
        is None
    )
    assert (
        registry.get_sample_value(
            "ceems_hwmon_power_current_watts", labels("power1", "socket_0", "socket_0")
        )
        == 182.25
    )


def test_all_sensors_unreadable_fails(tmp_path: Path) -> None:
    sysfs = build_sysfs(tmp_path, "sys-garbage")
    only = sysfs / "class/hwmon/hwmon0/power1_input"
    only.unlink()
    only.mkdir()
    collector = FACTORY.build(NodeContext(sysfs=sysfs), argparse.Namespace())
    with pytest.raises(IsADirectoryError):
        list(collector.collect())


def test_factory_metadata_and_flags() -> None:
    parser = argparse.ArgumentParser()
    FACTORY.add_flags(parser.add_argument_group("hwmon"))
    options = parser.parse_args([])
    assert FACTORY.name == "hwmon"
    assert FACTORY.enabled_by_default is False
    assert FACTORY.build(NodeContext(hostname=HOST), options).hostname == HOST
