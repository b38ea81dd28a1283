"""Run every benchmark and print one table of figures: figure, target, measured, ratio, met.

Each benchmark runs as its own process (`benchmarks/<name>.py ... --json FILE`), its own output
shown as it goes; their figures are then printed as one Markdown table, with the command used,
ready for docs/performance.md. `--write-docs` puts it there itself, between the markers
`<!-- run_all:begin -->` and `<!-- run_all:end -->`. `--quick` runs smaller sizes (a few
minutes in all); the default sizes are those the figures in docs/performance.md were
measured with. Nothing fails on timing: a target not met is reported, not an error; the exit
status is non-zero only when a benchmark itself failed.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only NAME,...] [--json FILE]
        [--write-docs [PATH]] [--from-json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _records import Figure, command_line, read_json, with_unit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS = ROOT / "docs" / "performance.md"
BEGIN = "<!-- run_all:begin -->"
END = "<!-- run_all:end -->"
LB_JSON = "LB_JSON"  # stands for lb_overhead's --json file in stack_figures' arguments


@dataclass(frozen=True)
class Benchmark:
    """A benchmark script and its arguments in each mode."""

    name: str
    quick: tuple[str, ...]
    full: tuple[str, ...] = ()

    @property
    def script(self) -> Path:
        """benchmarks/<name>.py."""
        return HERE / f"{self.name}.py"


# In run order: stack_figures reuses lb_overhead's figures rather than measuring the LB again.
BENCHMARKS = (
    Benchmark("exporter_scrape", ("--units", "0,100,1000", "--scrapes", "100")),
    Benchmark("api_server", ("--units", "100000", "--requests", "100")),
    Benchmark("lb_overhead", ("--rounds", "50")),
    Benchmark("lb_hop", ("--rounds", "300")),
    Benchmark(
        "stack_figures",
        ("--scrapes", "100", "--cycles", "2", "--lb-json", LB_JSON),
        ("--lb-json", LB_JSON),
    ),
)


@dataclass
class Run:
    """What one benchmark produced."""

    benchmark: str
    command: str
    seconds: float
    returncode: int
    figures: list[Figure] = field(default_factory=list)
    load: float | None = None  # 1-minute load average when it ended


# ---- the table ----------------------------------------------------------------------------------


def format_ratio(figure: Figure) -> str:
    """measured / bound as `0.23`, or empty without a target."""
    ratio = figure.ratio
    return "" if ratio is None else f"{ratio:.2f}"


def format_met(figure: Figure) -> str:
    """`yes`, `**no**` (bold, to stand out in the table), or empty without a target."""
    met = figure.met
    if met is None:
        return ""
    return "yes" if met else "**no**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(figures: Sequence[Figure]) -> str:
    """The figures as a Markdown table: figure | target | measured | ratio | met."""
    lines = ["| figure | target | measured | ratio | met |", "|---|---|---|---|---|"]
    for figure in figures:
        cells = (
            figure.name,
            figure.target,
            with_unit(figure.value, figure.unit),
            format_ratio(figure),
            format_met(figure),
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def details(figures: Sequence[Figure]) -> str:
    """How each figure was measured, one bullet each (for those that say)."""
    return "".join(f"- {f.name}: {f.detail}\n" for f in figures if f.detail)


def report(runs: Sequence[Run], header: dict[str, Any]) -> str:
    """The Markdown that --write-docs puts between the markers (and main prints)."""
    figures = [figure for run in runs for figure in run.figures]
    mode = "quick mode" if header.get("quick") else "full sizes"
    loadavg = header.get("load", [])
    load_text = (
        f", load average {loadavg[0]:.2f} at the start and {loadavg[1]:.2f} at the end"
        if loadavg
        else ""
    )
    lines = [
        f"Generated {header['date']} by `{header['command']}` ({mode}) on "
        f"{header['cpus']} CPUs, Python {header['python']}{load_text}.",
        "",
        markdown_table(figures),
    ]
    failed = [run for run in runs if run.returncode != 0]
    if failed:
        names = ", ".join(f"{run.benchmark} (exit {run.returncode})" for run in failed)
        lines += [f"**Failed**, no figures: {names}.", ""]
    notes = details(figures)
    if notes:
        lines += ["How each was measured:", "", notes]
    lines += ["Commands (run times):", ""]
    for run in runs:
        load = f", load {run.load:.2f} at the end" if run.load is not None else ""
        lines.append(f"- `{run.command}` ({run.seconds:.0f} s{load})")
    if any(LB_JSON in run.command for run in runs):
        lines += ["", f"{LB_JSON}: the file `lb_overhead.py --json` wrote in the same run."]
    return "\n".join(lines).rstrip("\n") + "\n"


def replace_section(text: str, section: str) -> str:
    """`text` with what lies between BEGIN and END replaced by `section`."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"markers {BEGIN} ... {END} not found")
    return pattern.sub(lambda _: f"{BEGIN}\n{section.rstrip()}\n{END}", text, count=1)


# ---- running ------------------------------------------------------------------------------------


def without_json(argv: Sequence[str]) -> list[str]:
    """The arguments less `--json FILE` (where the figures went is no part of the command)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif not arg.startswith("--json="):
            out.append(arg)
    return out


def run_benchmark(bench: Benchmark, quick: bool, work: Path, lb_json: Path | None) -> Run:
    """Run one benchmark script, its output going to ours; its figures from its --json."""
    args = list(bench.quick if quick else bench.full)
    if LB_JSON in args:
        at = args.index(LB_JSON)
        if lb_json is not None and lb_json.exists():
            args[at] = str(lb_json)
        else:  # no lb_overhead figures to reuse: stack_figures measures the LB itself
            del args[at - 1 : at + 1]
            if quick:
                args += ["--lb-rounds", "50"]
    out = work / f"{bench.name}.json"
    display = [LB_JSON if lb_json is not None and a == str(lb_json) else a for a in args]
    shown = shlex.join([".venv/bin/python", f"benchmarks/{bench.script.name}", *display])
    print(f"\n== {bench.name}: {shown}", flush=True)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(bench.script), *args, "--json", str(out)], cwd=ROOT, check=False
    )
    seconds = time.monotonic() - started
    figures = read_json(out)[1] if result.returncode == 0 and out.exists() else []
    print(f"== {bench.name}: {seconds:.0f} s, exit {result.returncode}", flush=True)
    return Run(bench.name, shown, seconds, result.returncode, figures, os.getloadavg()[0])


def save_runs(path: Path, runs: Sequence[Run], header: dict[str, Any]) -> None:
    """Every run's figures in one JSON document (what --from-json reads)."""
    document = {
        **header,
        "runs": [
            {
                "benchmark": run.benchmark,
                "command": run.command,
                "seconds": run.seconds,
                "returncode": run.returncode,
                "load": run.load,
                "figures": [figure.to_json() for figure in run.figures],
            }
            for run in runs
        ],
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


def load_runs(path: Path) -> tuple[list[Run], dict[str, Any]]:
    """The runs and header of a document written by `save`."""
    document = json.loads(path.read_text())
    runs = [
        Run(
            r["benchmark"],
            r["command"],
            float(r["seconds"]),
            int(r["returncode"]),
            [Figure.from_json(f) for f in r["figures"]],
            r.get("load"),
        )
        for r in document.pop("runs")
    ]
    return runs, document


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    names = [b.name for b in BENCHMARKS]
    parser.add_argument("--only", help=f"comma-separated, some of {','.join(names)}")
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write every figure to FILE as JSON"
    )
    parser.add_argument(
        "--write-docs",
        nargs="?",
        const=DOCS,
        type=Path,
        metavar="PATH",
        help=f"replace the run_all section of PATH (default {DOCS.relative_to(ROOT)})",
    )
    parser.add_argument(
        "--from-json", type=Path, metavar="FILE", help="run nothing: report a --json FILE"
    )
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(given)
    chosen = names if not args.only else [n for n in args.only.split(",") if n]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}")
    if args.from_json is not None:
        runs, header = load_runs(args.from_json)
    else:
        header = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command_line([__file__, *without_json(given)]),
            "quick": args.quick,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }
        load_start = os.getloadavg()[0]
        runs = []
        with tempfile.TemporaryDirectory(prefix="ceems-run-all-") as tmp:
            work = Path(tmp)
            for bench in BENCHMARKS:
                if bench.name in chosen:
                    runs.append(run_benchmark(bench, args.quick, work, work / "lb_overhead.json"))
        header["load"] = [load_start, os.getloadavg()[0]]
        if args.json is not None:
            save_runs(args.json, runs, header)
    section = report(runs, header)
    print()
    print(section, end="")
    if args.write_docs is not None:
        path: Path = args.write_docs
        path.write_text(replace_section(path.read_text(), section))
        print(f"\nwrote the table into {path}")
    return 0 if all(run.returncode == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
