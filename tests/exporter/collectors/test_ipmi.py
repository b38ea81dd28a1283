"""The ipmi_dcmi collector: every tool's output format, background sampling, failures."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ceems.exporter.collector import CollectorError, NoDataError, NodeContext
from ceems.exporter.collectors.ipmi import (
    FACTORY,
    PowerCommand,
    PowerReading,
    PowerReadingError,
    parse_power_output,
    resolve_command,
    tool_name,
)
from tests.conftest import FIXTURES

IPMI = FIXTURES / "ipmi"


@pytest.mark.parametrize(
    ("tool", "fixture", "expected"),
    [
        ("ipmi-dcmi", "ipmi-dcmi.txt", PowerReading(412, 71, 633, 398)),
        ("ipmitool", "ipmitool.txt", PowerReading(318, 92, 520, 301)),
        ("ipmiutil", "ipmiutil.txt", PowerReading(215, 12, 389, 207)),
        ("capmc", "capmc.json", PowerReading(6120, 5802, 6544, 6120)),
    ],
)
def test_parse_each_tool(tool: str, fixture: str, expected: PowerReading) -> None:
    assert parse_power_output(tool, (IPMI / fixture).read_text()) == expected


@pytest.mark.parametrize(
    ("tool", "fixture", "match"),
    [
        ("ipmi-dcmi", "ipmi-dcmi-inactive.txt", "not active"),
        ("ipmi-dcmi", "ipmi-dcmi-garbage.txt", "no number"),
        ("capmc", "capmc-error.json", "capmc error 52"),
        ("capmc", "ipmitool.txt", "not JSON"),
        ("ipmitool", "capmc.json", "no current power"),
    ],
)
def test_bad_outputs_are_refused(tool: str, fixture: str, match: str) -> None:
    with pytest.raises(PowerReadingError, match=match):
        parse_power_output(tool, (IPMI / fixture).read_text())


def test_tool_name_sees_through_sudo() -> None:
    assert tool_name(["sudo", "-n", "/usr/sbin/ipmi-dcmi", "--get-system-power-statistics"]) == (
        "ipmi-dcmi"
    )


def fake_tool(tmp_path: Path, name: str, body: str) -> Path:
    script = tmp_path / name
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return script


def test_command_found_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tool(tmp_path, "ipmitool", "true")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert resolve_command("") == [str(tmp_path / "ipmitool"), "dcmi", "power", "reading"]


def test_no_tool_is_a_clear_build_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CollectorError, match="none of ipmi-dcmi"):
        resolve_command("")


def test_hung_command_times_out(tmp_path: Path) -> None:
    script = fake_tool(tmp_path, "ipmi-dcmi", "sleep 5")
    started = time.monotonic()
    with pytest.raises(PowerReadingError, match="timed out"):
        PowerCommand((str(script),), 0.3)()
    assert time.monotonic() - started < 3


def test_failing_command_reports_exit_status(tmp_path: Path) -> None:
    script = fake_tool(tmp_path, "ipmi-dcmi", "echo 'could not find inband device' >&2; exit 1")
    with pytest.raises(PowerReadingError, match="exited 1: could not find inband device"):
        PowerCommand((str(script),), 2)()


def options(cmd: str, interval: float = 0.1, timeout: float = 1.0) -> argparse.Namespace:
    return argparse.Namespace(
        ipmi_dcmi_cmd=cmd, ipmi_dcmi_timeout=timeout, ipmi_dcmi_interval=interval
    )


def wait_for(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_collector_serves_sampled_reading(tmp_path: Path) -> None:
    script = fake_tool(tmp_path, "ipmi-dcmi", f"cat {IPMI / 'ipmi-dcmi.txt'}")
    collector = FACTORY.build(NodeContext(hostname="n1"), options(str(script)))
    try:
        wait_for(lambda: collector.sampler.age_s() is not None)
        registry = CollectorRegistry()
        registry.register(collector)
        assert registry.get_sample_value("ceems_ipmi_dcmi_current_watts", {"hostname": "n1"}) == 412
        assert registry.get_sample_value("ceems_ipmi_dcmi_avg_watts", {"hostname": "n1"}) == 398
    finally:
        collector.close()


def test_last_good_reading_is_served_then_expires(tmp_path: Path) -> None:
    state = tmp_path / "out.txt"
    state.write_text((IPMI / "ipmi-dcmi.txt").read_text())
    script = fake_tool(tmp_path, "ipmi-dcmi", f"cat {state} || exit 1")
    collector = FACTORY.build(NodeContext(hostname="n1"), options(str(script), interval=0.1))
    try:
        wait_for(lambda: collector.sampler.age_s() is not None)
        state.unlink()  # the BMC stops answering
        time.sleep(0.15)
        assert next(iter(collector.collect())).samples[0].value == 398  # last good, still fresh
        wait_for(lambda: (collector.sampler.age_s() or 0) > 0.3 + 1.0 + 0.05)
        with pytest.raises(NoDataError, match="old"):
            list(collector.collect())
    finally:
        collector.close()
