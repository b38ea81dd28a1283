"""`ceems_tool tsdb create-recording-rules`: attribution rules for the series Prometheus has."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ceems.attribution.inspect import Choices, inspect
from ceems.attribution.rulefile import describe, render, rule_files
from ceems.attribution.spec import MiscPolicy, PowerSource, SpecError
from ceems.cli.tool.httpclient import add_http_flags, load_client_config
from ceems.cli.tool.window import add_window_flags, window
from ceems.common.config import ConfigError
from ceems.common.durations import parse_duration
from ceems.tsdb.client import TsdbClient
from ceems.tsdb.errors import TsdbError


def _duration(text: str) -> object:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _run(args: argparse.Namespace) -> int:
    if args.country_code and args.emission_factor > 0:
        print(
            "ceems_tool: error: --country-code and --emission-factor exclude each other",
            file=sys.stderr,
        )
        return 2
    choices = Choices(
        pue=args.pue,
        evaluation_interval=args.eval_interval,
        misc_policy=MiscPolicy(args.misc_policy),
        misc_fraction=args.misc_fraction,
        power_source=PowerSource(args.power_source) if args.power_source else None,
        country_code=args.country_code.upper(),
        emission_factor=args.emission_factor,
        jobs=tuple(args.job),
    )
    out: Path = args.output_dir
    try:
        start, end = window(args)
        with TsdbClient(load_client_config(args)) as tsdb:
            spec = inspect(tsdb, start, end, choices)
        files = rule_files(spec)
        existing = [out / f.name for f in files if (out / f.name).exists()]
        if existing and not args.force:
            raise FileExistsError(f"{existing[0]} exists (use --force to replace it)")
        out.mkdir(parents=True, exist_ok=True)
        header = describe(spec)
        for file in files:
            (out / file.name).write_text(render(file, header))
            print(f"wrote {out / file.name}", file=sys.stderr)
    except (ConfigError, SpecError, TsdbError, ValueError, OSError) as err:
        print(f"ceems_tool: error: {err}", file=sys.stderr)
        return 1
    print(header, file=sys.stderr)
    print(
        "add the files to rule_files in prometheus.yml, check them with "
        "`promtool check rules`, then reload Prometheus",
        file=sys.stderr,
    )
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `create-recording-rules` to the `tsdb` group."""
    parser = subparsers.add_parser(
        "create-recording-rules",
        help="Write recording rules that attribute node and GPU power to compute units.",
        description="Find the ceems_exporter and GPU exporter jobs Prometheus scrapes and the "
        "power sensors they expose, and write rule files giving every compute unit its "
        "power (uuid:ceems_host_power_watts:pue, uuid:ceems_gpu_power_watts:pue), usage and "
        "emissions, plus each node's unattributed remainder. docs/attribution.md explains "
        "the formulas.",
    )
    add_http_flags(parser, "http://localhost:9090", "Prometheus server")
    add_window_flags(parser)
    parser.add_argument("--pue", type=float, default=1.0, help="Power Usage Effectiveness.")
    parser.add_argument(
        "--emission-factor",
        type=float,
        default=0.0,
        metavar="G",
        help="Static emission factor in gCO2e/kWh (instead of provider series).",
    )
    parser.add_argument(
        "--country-code",
        default="",
        metavar="CC",
        help="ISO 3166-1 alpha-2 code whose emission factor series to use "
        "(default: the only country present).",
    )
    parser.add_argument(
        "--eval-interval",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="Rule evaluation interval (default: Prometheus' global evaluation_interval).",
    )
    parser.add_argument(
        "--misc-policy",
        choices=[str(p) for p in MiscPolicy],
        default=str(MiscPolicy.ALLOCATED),
        help="Who pays for node power that is neither CPU nor DRAM: units by allocated CPUs "
        "(default), every unit equally, or nobody (the node keeps it).",
    )
    parser.add_argument(
        "--misc-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="Part of a node sensor's reading taken as neither CPU nor DRAM when no RAPL "
        "measures them (default 0.1).",
    )
    parser.add_argument(
        "--power-source",
        choices=[str(s) for s in PowerSource],
        default=None,
        help="Use this sensor for every job (default: the best each job has).",
    )
    parser.add_argument(
        "--job",
        action="append",
        default=[],
        metavar="JOB",
        help="Only this ceems_exporter scrape job (repeatable; default: all).",
    )
    parser.add_argument(
        "--output-dir", type=Path, default=Path("rules"), help="Where to write the rule files."
    )
    parser.add_argument("--force", action="store_true", help="Replace existing rule files.")
    parser.set_defaults(func=_run)
