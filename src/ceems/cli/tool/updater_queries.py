"""`ceems_tool tsdb create-ceems-tsdb-updater-queries`: updater queries for existing series."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

import yaml

from ceems.api.updaters.queries import DEFAULT_QUERIES, PLACEHOLDERS
from ceems.api.updaters.tsdb import Batch, placeholder_values
from ceems.cli.tool.httpclient import add_http_flags, load_client_config
from ceems.cli.tool.window import add_window_flags, window
from ceems.common.config import ConfigError
from ceems.tsdb.client import TsdbClient
from ceems.tsdb.errors import TsdbError
from ceems.tsdb.promql_ast import metric_names
from ceems.tsdb.settings import TsdbSettings
from ceems.tsdb.templates import compile_template

# Values that make the templates plain PromQL, so the parser can name their series.
_SAMPLE = placeholder_values(Batch(range_ms=3_600_000, uuids=("1", "2")), TsdbSettings())


def series_of(template: str) -> set[str]:
    """The metric names one default query template reads."""
    promql = compile_template(template, PLACEHOLDERS).render(_SAMPLE)
    return metric_names(promql)


def queries_for(present: set[str]) -> dict[str, dict[str, str]]:
    """The default queries whose every series exists, metric by metric."""
    chosen: dict[str, dict[str, str]] = {}
    for metric, keys in DEFAULT_QUERIES.items():
        kept = {k: q for k, q in keys.items() if series_of(q) <= present}
        if kept:
            chosen[metric] = kept
    return chosen


def render(queries: Mapping[str, Mapping[str, str]]) -> str:
    """The `queries:` block of a tsdb updater's extra_config."""
    text: str = yaml.safe_dump({"queries": dict(queries)}, sort_keys=False, width=1_000_000)
    return text


def _run(args: argparse.Namespace) -> int:
    wanted = sorted(
        {s for keys in DEFAULT_QUERIES.values() for q in keys.values() for s in series_of(q)}
    )
    try:
        start, end = window(args)
        with TsdbClient(load_client_config(args)) as tsdb:
            names = set(tsdb.label_values("__name__", [], start, end))
    except (ConfigError, TsdbError, ValueError, OSError) as err:
        print(f"ceems_tool: error: {err}", file=sys.stderr)
        return 1
    present = names & set(wanted)
    for name in wanted:
        state = "found" if name in present else "missing"
        print(f"{state}: {name}", file=sys.stderr)
    queries = queries_for(present)
    if not queries:
        print(
            "ceems_tool: error: none of the recording-rule series exist; "
            "run `ceems_tool tsdb create-recording-rules` first",
            file=sys.stderr,
        )
        return 1
    print(
        "put this under the tsdb updater's extra_config in the API server config", file=sys.stderr
    )
    sys.stdout.write(render(queries))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `create-ceems-tsdb-updater-queries` to the `tsdb` group."""
    parser = subparsers.add_parser(
        "create-ceems-tsdb-updater-queries",
        help="Print tsdb updater queries for the recording-rule series that exist.",
        description="Check which series the API server's tsdb updater reads exist in "
        "Prometheus and print, as YAML, the updater's `queries` limited to those.",
    )
    add_http_flags(parser, "http://localhost:9090", "Prometheus server")
    add_window_flags(parser)
    parser.set_defaults(func=_run)
