"""`ceems_tool` entry point: the `tsdb`, `config` and `check` command groups.

Each subcommand lives in its own module, which adds its parser to a group with
`register(group)` and sets `func(args) -> int` as the parser's default.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ceems.cli.tool import health, relabel, rules, updater_queries, webconfig


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    parser = argparse.ArgumentParser(
        prog="ceems_tool",
        description="Operator helpers for CEEMS: recording rules, updater queries, web config, "
        "health checks.",
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="{tsdb,config,check}")
    tsdb = groups.add_parser("tsdb", help="Generate Prometheus rules and configs from live series.")
    tsdb_cmds = tsdb.add_subparsers(dest="command", required=True)
    rules.register(tsdb_cmds)
    updater_queries.register(tsdb_cmds)
    relabel.register(tsdb_cmds)
    config = groups.add_parser("config", help="Create configuration files.")
    webconfig.register(config.add_subparsers(dest="command", required=True))
    check = groups.add_parser("check", help="Check CEEMS components and files.")
    health.register(check.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; its exit code is ours."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
