"""`ceems`: the umbrella command; `ceems demo` runs a simulated cluster with the real stack."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ceems import __version__
from ceems.cli.demo import add_demo_arguments, run_demo


def build_parser() -> argparse.ArgumentParser:
    """`ceems` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="ceems", description="Compute Energy & Emissions Monitoring Stack."
    )
    parser.add_argument("--version", action="version", version=f"ceems {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="Run simulated nodes monitored by the real exporter and Prometheus.",
        description="Run simulated nodes monitored by the real exporter and Prometheus.",
    )
    add_demo_arguments(demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the subcommand."""
    options = build_parser().parse_args(argv)
    if options.command == "demo":
        return run_demo(options)
    return 2  # argparse already refused unknown commands


if __name__ == "__main__":
    sys.exit(main())
