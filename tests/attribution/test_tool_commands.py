"""`ceems_tool tsdb create-recording-rules` and `create-ceems-tsdb-updater-queries` against the
live simulated node's Prometheus."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from ceems.cli.tool.main import main
from tests.attribution.conftest import Stack
from tests.cli.tool.documented import undocumented_flags


def test_rules_written_for_the_live_node(
    stack: Stack, tmp_path: Path, promtool: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rules"
    args = ["tsdb", "create-recording-rules", "--url", stack.prometheus.url]
    assert main([*args, "--emission-factor", "50", "--pue", "1.2", "--output-dir", str(out)]) == 0
    [path] = out.iterdir()
    assert path.name == "ceems-host-ceems.rules"
    text = path.read_text()
    assert "# job ceems: power from ipmi_dcmi + RAPL split" in text
    records = [r["record"] for r in yaml.safe_load(text)["groups"][0]["rules"]]
    assert "uuid:ceems_host_power_watts:pue" in records
    assert "instance:ceems_host_unattributed_power_watts:pue" in records
    check = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True)
    assert check.returncode == 0, check.stdout
    # An existing file is kept unless --force.
    before = path.read_text()
    assert main([*args, "--pue", "1.5", "--output-dir", str(out)]) == 1
    assert "use --force" in capsys.readouterr().err
    assert path.read_text() == before
    assert main([*args, "--pue", "1.5", "--output-dir", str(out), "--force"]) == 0
    assert "1.5 * sum by (job, instance) (ceems_ipmi_dcmi_current_watts" in path.read_text()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--pue", "0.5"], "PUE must be between 1 and 5"),
        (["--power-source", "redfish"], "job ceems has no ceems_redfish_current_watts"),
        (["--job", "nope"], "no ceems_exporter series for job(s) nope"),
        (["--misc-fraction", "1.5"], "misc fraction"),
    ],
)
def test_bad_choices_write_nothing(
    stack: Stack,
    tmp_path: Path,
    flags: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "rules"
    argv = ["tsdb", "create-recording-rules", "--url", stack.prometheus.url, "--output-dir"]
    assert main([*argv, str(out), *flags]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_country_code_and_factor_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tsdb", "create-recording-rules", "--country-code", "FR", "--emission-factor", "9"]
    assert main(argv) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_updater_queries_for_the_series_that_exist(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tsdb", "create-ceems-tsdb-updater-queries", "--url", stack.prometheus.url]) == 0
    captured = capsys.readouterr()
    queries = yaml.safe_load(captured.out)["queries"]
    # The rules of the live node exist; no GPU and no eBPF series do.
    assert {"avg_cpu_usage", "total_cpu_energy_usage_kwh", "total_cpu_emissions_gms"} <= set(
        queries
    )
    assert not {"avg_gpu_usage", "total_gpu_energy_usage_kwh", "total_io_read_stats"} & set(queries)
    assert "missing: uuid:ceems_gpu_power_watts:pue" in captured.err


def test_updater_queries_refused_when_no_series(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["tsdb", "create-ceems-tsdb-updater-queries", "--url", stack.prometheus.url]
    assert main([*argv, "--start", "1000", "--end", "2000"]) == 1
    assert "none of the recording-rule series exist" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["create-recording-rules", "create-ceems-tsdb-updater-queries"])
def test_flags_are_documented(command: str) -> None:
    assert undocumented_flags("tsdb", command) == []
