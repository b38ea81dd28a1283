"""The benchmarks' machinery, without running a benchmark: records, the table, --json options.

No timing is asserted anywhere: benchmarks print figures, they never fail on them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT

BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture
def run_all(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """benchmarks/run_all.py as a module (the scripts import their siblings by name)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import run_all

    yield run_all


def fake_figures(run_all: ModuleType) -> list[object]:
    figure = run_all.Figure
    return [
        figure("scrape p50, 0 units", 2.5, "ms", "<", 10.0, "61 series, 200 scrapes"),
        figure("ingest", 6551.4, "units/s", ">=", 20_000),
        figure("/units p99", 145.25, "ms", "<", 50),
        figure("series per unit", 12, "", "<=", 12),
        figure("LB / direct p50 | mix", 1.634, "x", "<=", 1.15),
        figure("usage p50", 0.1612, "ms"),
    ]


def test_table_has_one_row_per_figure_with_target_ratio_and_met(run_all: ModuleType) -> None:
    table = run_all.markdown_table(fake_figures(run_all))
    lines = table.splitlines()
    assert lines[0] == "| figure | target | measured | ratio | met |"
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2:] == [
        "| scrape p50, 0 units | < 10 ms | 2.50 ms | 0.25 | yes |",
        "| ingest | >= 20,000 units/s | 6,551 units/s | 0.33 | **no** |",
        "| /units p99 | < 50 ms | 145.2 ms | 2.90 | **no** |",
        "| series per unit | <= 12 | 12 | 1.00 | yes |",
        "| LB / direct p50 \\| mix | <= 1.15x | 1.63x | 1.42 | **no** |",
        "| usage p50 |  | 0.161 ms |  |  |",
    ]
    for line in lines:  # five cells in every row, an escaped | inside a cell not counting
        assert len(re.split(r"(?<!\\)\|", line)) == 5 + 2


def test_records_round_trip_through_json(run_all: ModuleType, tmp_path: Path) -> None:
    figures = fake_figures(run_all)
    records = [f.to_json() for f in figures]
    assert records[0] == {
        "name": "scrape p50, 0 units", "target": "< 10 ms", "value": 2.5, "unit": "ms",
        "ratio": 0.25, "met": True, "op": "<", "bound": 10.0,
        "detail": "61 series, 200 scrapes",
    }  # fmt: skip
    assert records[-1]["target"] == "" and records[-1]["ratio"] is None
    assert records[-1]["met"] is None
    assert [run_all.Figure.from_json(json.loads(json.dumps(r))) for r in records] == figures


def test_a_target_needs_a_known_comparison_and_a_bound(run_all: ModuleType) -> None:
    with pytest.raises(ValueError, match="both"):
        run_all.Figure("x", 1.0, "ms", "<")
    with pytest.raises(ValueError, match="comparison"):
        run_all.Figure("x", 1.0, "ms", "~", 2.0)


def test_report_and_docs_section(run_all: ModuleType, tmp_path: Path) -> None:
    runs = [
        run_all.Run("exporter_scrape", "cmd a", 41.2, 0, fake_figures(run_all)[:2]),
        run_all.Run("api_server", "cmd b", 3.0, 1, []),
    ]
    header = {
        "date": "2026-11-23 05:00 UTC", "command": ".venv/bin/python benchmarks/run_all.py",
        "quick": True, "cpus": 2, "python": "3.11.7", "load": [1.5, 2.25],
    }  # fmt: skip
    saved = tmp_path / "all.json"
    run_all.save_runs(saved, runs, header)
    loaded_runs, loaded_header = run_all.load_runs(saved)
    section = run_all.report(loaded_runs, loaded_header)
    assert section == run_all.report(runs, header)
    assert "(quick mode) on 2 CPUs, Python 3.11.7, load average 1.50" in section
    assert "| ingest | >= 20,000 units/s | 6,551 units/s | 0.33 | **no** |" in section
    assert "**Failed**, no figures: api_server (exit 1)." in section
    assert "- `cmd a` (41 s)" in section
    assert "- scrape p50, 0 units: 61 series, 200 scrapes" in section

    doc = "# Perf\n\nintro\n\n<!-- run_all:begin -->\nold table\n<!-- run_all:end -->\n\nrest\n"
    updated = run_all.replace_section(doc, section)
    assert "old table" not in updated
    assert updated.startswith("# Perf\n\nintro\n\n<!-- run_all:begin -->\nGenerated 2026-11-23")
    assert updated.endswith("<!-- run_all:end -->\n\nrest\n")
    assert run_all.replace_section(updated, section) == updated  # idempotent
    with pytest.raises(ValueError, match="markers"):
        run_all.replace_section("no markers", section)


def test_the_performance_doc_has_the_markers(run_all: ModuleType) -> None:
    text = (ROOT / "docs" / "performance.md").read_text()
    assert text.count(run_all.BEGIN) == 1 and text.count(run_all.END) == 1
    assert text.index(run_all.BEGIN) < text.index(run_all.END)


def test_run_all_runs_every_benchmark_script(run_all: ModuleType) -> None:
    listed = {b.name for b in run_all.BENCHMARKS}
    assert listed == {p.stem for p in SCRIPTS} - {"run_all"}
    assert all(b.script.exists() for b in run_all.BENCHMARKS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_has_a_machine_readable_option(script: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script), "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--json FILE" in result.stdout


def test_from_json_writes_the_docs_without_running_anything(
    run_all: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [run_all.Run("lb_overhead", "cmd", 12.0, 0, fake_figures(run_all), 0.5)]
    header = {
        "date": "2026-11-23 05:00 UTC", "command": "run_all.py --quick", "quick": True,
        "cpus": 2, "python": "3.11.7", "load": [0.25, 0.5],
    }  # fmt: skip
    saved = tmp_path / "all.json"
    run_all.save_runs(saved, runs, header)
    doc = tmp_path / "performance.md"
    doc.write_text("# P\n\n<!-- run_all:begin -->\n<!-- run_all:end -->\n")
    assert run_all.main(["--from-json", str(saved), "--write-docs", str(doc)]) == 0
    assert "| usage p50 |  | 0.161 ms |  |  |" in capsys.readouterr().out
    assert "- `cmd` (12 s, load 0.50 at the end)" in doc.read_text()
    assert run_all.without_json(["--quick", "--json", "x.json", "--json=y", "--only", "a"]) == [
        "--quick", "--only", "a",
    ]  # fmt: skip
