"""The netdev collector against small /proc/net/dev fixtures, and its device filter flags."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from ceems.exporter.collector import CollectorError, NodeContext
from ceems.exporter.collectors.netdev import COLUMNS, FACTORY, NetdevCollector, parse_net_dev

FIXTURES = Path(__file__).parents[2] / "fixtures" / "netdev"
HOST = "node-a"


def parse_flags(*args: str) -> argparse.Namespace:
    """Parse sample command-line arguments with only the netdev flags declared."""
    parser = argparse.ArgumentParser()
    FACTORY.add_flags(parser.add_argument_group("netdev"))
    return parser.parse_args(list(args))


def build(*args: str, procfs: Path = FIXTURES / "proc") -> NetdevCollector:
    return FACTORY.build(NodeContext(procfs=procfs, hostname=HOST), parse_flags(*args))


def registry_for(collector: NetdevCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def devices_in(registry: CollectorRegistry) -> set[str]:
    return {
        sample.labels["device"]
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "ceems_netdev_receive_bytes_total"
    }


def test_parse_net_dev_maps_all_sixteen_columns() -> None:
    stats = parse_net_dev((FIXTURES / "proc" / "net" / "dev").read_text())
    assert list(stats) == ["lo", "eno1", "ib0", "br-3f9a1c2d7e04"]
    assert list(stats["eno1"]) == list(COLUMNS)
    assert stats["eno1"]["receive_multicast"] == 4321
    assert stats["eno1"]["transmit_bytes"] == 1234567890
    assert stats["eno1"]["transmit_compressed"] == 9


def test_parse_net_dev_splits_a_name_touching_its_first_value() -> None:
    stats = parse_net_dev((FIXTURES / "proc" / "net" / "dev").read_text())
    assert stats["br-3f9a1c2d7e04"]["receive_bytes"] == 4096


@pytest.mark.parametrize(
    ("fixture", "message"),
    [
        ("proc-truncated", "expected 16 values, got 9"),
        ("proc-garbage", "non-integer value"),
        ("proc-no-header", "missing the two header lines"),
    ],
)
def test_garbled_net_dev_fails(fixture: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        list(build(procfs=FIXTURES / fixture).collect())


def test_counters_per_device() -> None:
    registry = registry_for(build())
    eno1 = {"hostname": HOST, "device": "eno1"}
    expected = {
        "receive_bytes": 9876543210,
        "receive_packets": 7654321,
        "receive_errors": 3,
        "receive_dropped": 17,
        "receive_fifo": 1,
        "receive_frame": 2,
        "receive_compressed": 0,
        "receive_multicast": 4321,
        "transmit_bytes": 1234567890,
        "transmit_packets": 2345678,
        "transmit_errors": 4,
        "transmit_dropped": 5,
        "transmit_fifo": 6,
        "transmit_colls": 7,
        "transmit_carrier": 8,
        "transmit_compressed": 9,
    }
    for column, value in expected.items():
        assert registry.get_sample_value(f"ceems_netdev_{column}_total", eno1) == value


def test_counters_are_typed_counter_with_ceems_help() -> None:
    output = generate_latest(registry_for(build())).decode()
    assert "# TYPE ceems_netdev_receive_bytes_total counter" in output
    assert "# HELP ceems_netdev_receive_bytes_total Total received bytes by the network device" in (
        output
    )


def test_hostname_is_the_first_label() -> None:
    samples = [sample for family in build().collect() for sample in family.samples]
    assert len(samples) == 4 * 16
    assert {tuple(sample.labels) for sample in samples} == {("hostname", "device")}


def test_default_exports_every_device_lo_included() -> None:
    assert devices_in(registry_for(build())) == {"lo", "eno1", "ib0", "br-3f9a1c2d7e04"}


def test_device_include_is_a_full_match() -> None:
    collector = build("--collector.netdev.device-include", "eno1|ib.")
    assert devices_in(registry_for(collector)) == {"eno1", "ib0"}
    # `eno` would match `eno1` as a search; a full match keeps the regex honest.
    assert devices_in(registry_for(build("--collector.netdev.device-include=eno"))) == set()


def test_device_exclude_is_a_full_match() -> None:
    collector = build("--collector.netdev.device-exclude", "lo|br-.*")
    assert devices_in(registry_for(collector)) == {"eno1", "ib0"}


def test_flags_default_to_unset() -> None:
    options = parse_flags()
    assert options.netdev_device_include is None
    assert options.netdev_device_exclude is None


def test_include_and_exclude_together_are_refused() -> None:
    with pytest.raises(CollectorError, match="mutually exclusive"):
        build("--collector.netdev.device-include=eno1", "--collector.netdev.device-exclude=lo")


@pytest.mark.parametrize("flag", ["device-include", "device-exclude"])
def test_invalid_regex_names_flag_and_value(flag: str) -> None:
    with pytest.raises(
        CollectorError, match=rf"--collector\.netdev\.{flag}: invalid regex '\(eth'"
    ):
        build(f"--collector.netdev.{flag}=(eth")


def test_missing_net_dev_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(build(procfs=tmp_path).collect())


def test_unreadable_net_dev_fails(tmp_path: Path) -> None:
    # Root reads through chmod 000, so a directory stands in for an unreadable file.
    (tmp_path / "net" / "dev").mkdir(parents=True)
    with pytest.raises(IsADirectoryError):
        list(build(procfs=tmp_path).collect())


def test_factory_metadata() -> None:
    assert FACTORY.name == "netdev"
    assert FACTORY.enabled_by_default is False


def test_counters_follow_the_file_between_scrapes(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "proc", tmp_path / "proc")
    registry = registry_for(build(procfs=tmp_path / "proc"))
    dev = tmp_path / "proc" / "net" / "dev"
    dev.write_text(dev.read_text().replace("9876543210", "9876549999"))
    eno1 = {"hostname": HOST, "device": "eno1"}
    assert registry.get_sample_value("ceems_netdev_receive_bytes_total", eno1) == 9876549999
