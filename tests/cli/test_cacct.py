"""cacct against a real ceems_api_server process (and a real Prometheus for --ts)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ceems.cli.cacct import CacctError, build_parser, parse_time, render, run
from tests.api.test_server import NOW, Server, wait_caught_up, write_config
from tests.conftest import PrometheusService
from tests.tsdb.backfill import Series, start_loaded

CACCT = str(Path(sys.executable).parent / "cacct")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("cacct")
    server = Server(write_config(tmp, tmp / "data", NOW - timedelta(days=11), "1d"))
    wait_caught_up(tmp / "data")
    yield server
    server.stop()


def cacct_config(tmp_path: Path, api: Server, tsdb_url: str = "") -> Path:
    config = tmp_path / "cacct.yml"
    text = f"api:\n  url: {api.url}\ncluster_id: sim\n"
    if tsdb_url:
        text += f"tsdb:\n  url: {tsdb_url}\n"
    config.write_text(text)
    return config


def cacct(config: Path, *args: str, user: str = "alice") -> str:
    options = build_parser().parse_args(["--config", str(config), *args])
    return run(options, now=NOW.astimezone(UTC), user=user)


def test_table_lists_own_and_project_jobs_with_a_summary(api: Server, tmp_path: Path) -> None:
    text = cacct(cacct_config(tmp_path, api), "--starttime", "now-12d")
    assert "JobID" in text and "CPU kWh" in text
    assert "5000" in text and "5001" in text  # alice's and bob's (research)
    assert "5002" not in text  # carol's (physics)
    assert "Account" in text and "research" in text  # the per-account summary


def test_csv_markdown_html(api: Server, tmp_path: Path) -> None:
    config = cacct_config(tmp_path, api)
    rows = list(csv.reader(io.StringIO(cacct(config, "-S", "now-12d", "--csv", user="carol"))))
    assert rows[0][:4] == ["JobID", "Cluster", "Account", "User"]
    assert {r[3] for r in rows[1:]} == {"carol"} and len(rows) == 11
    markdown = cacct(config, "-S", "now-12d", "--markdown", user="carol")
    assert markdown.splitlines()[1].startswith("|---|")
    html = cacct(config, "-S", "now-12d", "--html", "-j", "5002", user="carol")
    assert html.startswith("<table>") and "<td>5002</td>" in html and "5005" not in html


def test_long_adds_nodes_partition_provenance(api: Server, tmp_path: Path) -> None:
    text = cacct(cacct_config(tmp_path, api), "-S", "now-12d", "--long", "--csv")
    assert "Provenance" in text.splitlines()[0] and "batch" in text


def test_someone_elses_jobs_are_refused(api: Server, tmp_path: Path) -> None:
    with pytest.raises(CacctError, match="permission denied: alice may list only their own"):
        cacct(cacct_config(tmp_path, api), "-S", "now-12d", "--user", "carol")


def test_admin_may_list_another_user(api: Server, tmp_path: Path) -> None:
    text = cacct(cacct_config(tmp_path, api), "-S", "now-12d", "-u", "carol", "--csv", user="admin")
    assert {r[3] for r in list(csv.reader(io.StringIO(text)))[1:]} == {"carol"}


def test_command_line_errors(api: Server, tmp_path: Path) -> None:
    config = cacct_config(tmp_path, api)
    result = subprocess.run(
        [CACCT, "--config", str(config), "--starttime", "yesterday-ish"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and "bad time 'yesterday-ish'" in result.stderr
    result = subprocess.run(
        [CACCT, "--config", str(tmp_path / "missing.yml")],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 1 and "no config file found" in result.stderr
    with pytest.raises(CacctError, match="is not before"):
        cacct(config, "-S", "now", "-E", "now-1d")


def test_unreachable_server_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "cacct.yml"
    config.write_text("api:\n  url: http://127.0.0.1:9\n")
    options = build_parser().parse_args(["--config", str(config)])
    with pytest.raises(CacctError, match="cannot reach the CEEMS API server"):
        run(options, user="alice")


def test_time_series_as_csv(
    api: Server,
    tmp_path: Path,
    prometheus_service: PrometheusService,
    promtool: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # job 5000 ran from NOW-10d+1h for 2 h; give it a power series there
    start = (NOW - timedelta(days=10) + timedelta(hours=1)).timestamp()
    points = [(start + 60 * i, 100.0 + i) for i in range(120)]
    series = [Series("uuid:ceems_host_power_watts:pue", {"uuid": "5000"}, points)]
    loaded = start_loaded(prometheus_service, promtool, series, monkeypatch)
    out = tmp_path / "ts"
    text = cacct(cacct_config(tmp_path, api, loaded.url), "-S", "now-12d", "-j", "5000",
                 "--ts", str(out))  # fmt: skip
    assert "wrote 1 time-series file(s)" in text
    rows = list(csv.reader((out / "5000.csv").open()))
    assert rows[0] == ["timestamp", "series", "value"]
    values = [float(r[2]) for r in rows[1:] if r[1] == "uuid:ceems_host_power_watts:pue"]
    assert values and min(values) >= 100.0 and max(values) <= 219.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
     ("2026-11-01T08:30", datetime(2026, 11, 1, 8, 30, tzinfo=UTC))],
)  # fmt: skip
def test_parse_time(text: str, expected: datetime) -> None:
    from zoneinfo import ZoneInfo

    assert parse_time(text, ZoneInfo("UTC"), NOW) == expected


def test_render_escapes() -> None:
    assert "&lt;b&gt;" in render(["h"], [["<b>"]], "html")
    assert "a\\|b" in render(["h"], [["a|b"]], "markdown")
