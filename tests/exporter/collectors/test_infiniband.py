"""The infiniband collector against small /sys/class/infiniband trees."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ceems.exporter.collector import NoDataError, NodeContext
from ceems.exporter.collectors.infiniband import (
    FACTORY,
    InfinibandCollector,
    parse_counter,
    parse_rate,
    parse_state,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "infiniband"
HOST = "node-a"


def build(sysfs: Path = FIXTURES / "sys") -> InfinibandCollector:
    return FACTORY.build(NodeContext(sysfs=sysfs, hostname=HOST), argparse.Namespace())


def registry_for(sysfs: Path = FIXTURES / "sys") -> CollectorRegistry:
    """A fresh registry holding one collector built through the factory."""
    registry = CollectorRegistry()
    registry.register(build(sysfs))
    return registry


def port(device: str, number: str) -> dict[str, str]:
    return {"hostname": HOST, "device": device, "port": number}


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float | None:
    return registry.get_sample_value(f"ceems_infiniband_{name}", labels)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4: ACTIVE\n", 4), ("1: DOWN", 1), ("5: LinkUp\n", 5), ("3: Disabled", 3)],
)
def test_parse_state(text: str, expected: int) -> None:
    assert parse_state(text, Path("state")) == expected


@pytest.mark.parametrize("text", ["", "ACTIVE", "four: ACTIVE", "4 ACTIVE"])
def test_parse_state_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="ports/1/state"):
        parse_state(text, Path("ports/1/state"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100 Gb/sec (4X EDR)\n", 1.25e10),
        ("25 Gb/sec (1X EDR)", 3.125e9),
        ("2.5 Gb/sec (1X SDR)", 3.125e8),
        ("200 Gb/sec (4X HDR)", 2.5e10),
    ],
)
def test_parse_rate_converts_gbit_to_bytes(text: str, expected: float) -> None:
    assert parse_rate(text, Path("rate")) == expected


@pytest.mark.parametrize("text", ["", "100", "100 Mb/sec", "fast Gb/sec"])
def test_parse_rate_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="ports/1/rate"):
        parse_rate(text, Path("ports/1/rate"))


def test_parse_counter_skips_ports_without_pma() -> None:
    assert parse_counter("N/A (no PMA)\n", Path("c")) is None
    assert parse_counter("42\n", Path("c")) == 42


def test_info_per_device() -> None:
    registry = registry_for()
    mlx5 = {
        "hostname": HOST,
        "device": "mlx5_0",
        "board_id": "MT_0000000222",
        "firmware_version": "20.31.1014",
        "hca_type": "MT4123",
    }
    hfi1 = {
        "hostname": HOST,
        "device": "hfi1_0",
        "board_id": "Intel Omni-Path HFI Silicon 100 Series",
        "firmware_version": "1.27.0",
        "hca_type": "",  # hfi1 has no hca_type file
    }
    assert registry.get_sample_value("ceems_infiniband_info", mlx5) == 1
    assert registry.get_sample_value("ceems_infiniband_info", hfi1) == 1


def test_port_state_and_rate() -> None:
    registry = registry_for()
    assert registry.get_sample_value("ceems_infiniband_state_id", port("mlx5_0", "1")) == 4
    assert registry.get_sample_value("ceems_infiniband_state_id", port("mlx5_0", "2")) == 1
    assert registry.get_sample_value("ceems_infiniband_physical_state_id", port("mlx5_0", "2")) == 3
    rate = "ceems_infiniband_rate_bytes_per_second"
    assert registry.get_sample_value(rate, port("mlx5_0", "1")) == 2.5e10
    assert registry.get_sample_value(rate, port("mlx5_0", "2")) == 1.25e9
    assert registry.get_sample_value(rate, port("hfi1_0", "1")) == 7e9


def test_data_counters_are_words_times_four() -> None:
    registry = registry_for()
    mlx5 = port("mlx5_0", "1")
    assert sample(registry, "port_data_received_bytes_total", mlx5) == 4e9
    assert sample(registry, "port_data_transmitted_bytes_total", mlx5) == 1e10


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("port_packets_received_total", 7000000),
        ("port_packets_transmitted_total", 9000000),
        ("unicast_packets_received_total", 6900000),
        ("unicast_packets_transmitted_total", 8950000),
        ("multicast_packets_received_total", 100000),
        ("multicast_packets_transmitted_total", 50000),
        ("link_downed_total", 2),
        ("link_error_recovery_total", 1),
        ("symbol_error_total", 7),
        ("vl15_dropped_total", 0),
        ("port_transmit_wait_total", 1234),
        ("port_errors_received_total", 3),
        ("port_discards_transmitted_total", 5),
        ("excessive_buffer_overrun_errors_total", 0),
        ("local_link_integrity_errors_total", 0),
        ("port_constraint_errors_received_total", 0),
        ("port_constraint_errors_transmitted_total", 0),
        ("port_receive_remote_physical_errors_total", 0),
        ("port_receive_switch_relay_errors_total", 0),
    ],
)
def test_port_counters(name: str, expected: float) -> None:
    assert sample(registry_for(), name, port("mlx5_0", "1")) == expected


def test_missing_and_no_pma_counters_are_skipped() -> None:
    registry = registry_for()
    hfi1 = port("hfi1_0", "1")
    assert sample(registry, "port_data_received_bytes_total", hfi1) == 12345 * 4
    # port_xmit_data reads "N/A (no PMA)"; symbol_error does not exist on this port.
    assert sample(registry, "port_data_transmitted_bytes_total", hfi1) is None
    assert sample(registry, "symbol_error_total", hfi1) is None
    # A port without a counters directory still reports its state (test_port_state_and_rate).
    assert sample(registry, "link_downed_total", port("mlx5_0", "2")) is None


def test_legacy_extended_counters() -> None:
    registry = registry_for()
    hfi1 = port("hfi1_0", "1")
    assert sample(registry, "legacy_data_received_bytes_total", hfi1) == 99 * 4
    assert sample(registry, "legacy_unicast_packets_received_total", hfi1) == 5


def test_hw_counters_are_not_exported() -> None:
    assert "out_of_buffer" not in generate_latest(registry_for()).decode()


def test_exposition_types_and_help() -> None:
    output = generate_latest(registry_for()).decode()
    assert "# TYPE ceems_infiniband_link_downed_total counter" in output
    assert "# TYPE ceems_infiniband_state_id gauge" in output
    assert "# HELP ceems_infiniband_rate_bytes_per_second Maximum signal transfer rate" in output


def test_hostname_is_the_first_label() -> None:
    families = {family.name: family for family in build().collect()}
    assert [tuple(s.labels) for s in families["ceems_infiniband_info"].samples] == [
        ("hostname", "device", "board_id", "firmware_version", "hca_type")
    ] * 2
    assert {tuple(s.labels) for s in families["ceems_infiniband_link_downed"].samples} == {
        ("hostname", "device", "port")
    }


def test_missing_class_directory_is_no_data(tmp_path: Path) -> None:
    with pytest.raises(NoDataError, match="no InfiniBand devices"):
        list(build(tmp_path).collect())


def test_empty_class_directory_is_no_data(tmp_path: Path) -> None:
    (tmp_path / "class" / "infiniband").mkdir(parents=True)
    with pytest.raises(NoDataError, match="no InfiniBand devices"):
        list(build(tmp_path).collect())


@pytest.mark.parametrize(
    ("fixture", "file"),
    [
        ("sys-garbage", "counters/port_rcv_data"),
        ("sys-truncated-state", "state"),
        ("sys-truncated-rate", "rate"),
    ],
)
def test_garbled_port_file_fails_naming_it(fixture: str, file: str) -> None:
    with pytest.raises(ValueError, match=f"mlx5_0/ports/1/{file}:"):
        list(build(FIXTURES / fixture).collect())


def test_unreadable_counter_fails(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "sys", tmp_path / "sys")
    # Root reads through chmod 000, so a directory stands in for an unreadable file.
    broken = tmp_path / "sys/class/infiniband/mlx5_0/ports/1/counters/symbol_error"
    broken.unlink()
    broken.mkdir()
    with pytest.raises(IsADirectoryError):
        list(build(tmp_path / "sys").collect())


def test_non_numeric_port_directory_fails(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "sys", tmp_path / "sys")
    (tmp_path / "sys/class/infiniband/hfi1_0/ports/one").mkdir()
    with pytest.raises(ValueError, match="port directory name is not a number"):
        list(build(tmp_path / "sys").collect())


def test_factory_metadata_and_flags() -> None:
    parser = argparse.ArgumentParser()
    FACTORY.add_flags(parser.add_argument_group("infiniband"))
    options = parser.parse_args([])
    assert FACTORY.name == "infiniband"
    assert FACTORY.enabled_by_default is False
    assert FACTORY.build(NodeContext(hostname=HOST), options).hostname == HOST
