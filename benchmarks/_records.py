"""Machine-readable figures of the benchmarks: one record per figure, written as JSON.

Every benchmark script takes `--json FILE` and, besides what it prints for humans, writes
there the figures it measured. A figure has a name, the measured value and its unit, and may
have a target: a comparison (`<`, `<=`, `>=`, `>`) with a bound in the same unit. Its ratio is
measured / bound (so 0.5 on "< 10 ms" is half the allowed time, 0.33 on ">= 20,000 units/s"
a third of the wanted rate), and it is met when the comparison holds. Nothing here fails on
timing: a target not met is a figure like any other.

Not a benchmark: imported by the scripts next to it (which run with this folder on sys.path).
"""

from __future__ import annotations

import argparse
import json
import operator
import platform
import shlex
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = 1
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
    ">": operator.gt,
}


def format_number(value: float) -> str:
    """A figure at a sensible precision: 135.3, 12.80, 0.161, 6,551."""
    if float(value).is_integer():
        return f"{int(value):,}"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def with_unit(value: float, unit: str) -> str:
    """`135.3 ms`, `1.63x`, `12 series`: the number and its unit as the tables print them."""
    number = format_number(value)
    if unit == "x":
        return f"{number}x"
    return f"{number} {unit}" if unit else number


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure and, when it has one, its target."""

    name: str
    value: float
    unit: str
    op: str = ""  # one of COMPARISONS; empty: no target
    bound: float | None = None  # the target's number, in `unit`
    detail: str = ""  # how it was measured, in a few words

    def __post_init__(self) -> None:
        if (self.op == "") != (self.bound is None):
            raise ValueError(f"{self.name}: a target needs both a comparison and a bound")
        if self.op and self.op not in COMPARISONS:
            raise ValueError(f"{self.name}: unknown comparison {self.op!r}")

    @property
    def target(self) -> str:
        """The target as text (`< 50 ms`), or empty."""
        if self.bound is None:
            return ""
        return f"{self.op} {with_unit(self.bound, self.unit)}"

    @property
    def ratio(self) -> float | None:
        """Measured / bound, where there is a (non-zero) bound."""
        if self.bound is None or self.bound == 0:
            return None
        return self.value / self.bound

    @property
    def met(self) -> bool | None:
        """Whether the target holds; None without one."""
        if self.bound is None:
            return None
        return COMPARISONS[self.op](self.value, self.bound)

    def to_json(self) -> dict[str, Any]:
        """The record: name, target text, value and unit, ratio, met (and what makes them)."""
        return {
            "name": self.name,
            "target": self.target,
            "value": self.value,
            "unit": self.unit,
            "ratio": self.ratio,
            "met": self.met,
            "op": self.op,
            "bound": self.bound,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Figure:
        """The figure of a record written by `to_json`."""
        return cls(
            name=str(record["name"]),
            value=float(record["value"]),
            unit=str(record.get("unit", "")),
            op=str(record.get("op") or ""),
            bound=None if record.get("bound") is None else float(record["bound"]),
            detail=str(record.get("detail", "")),
        )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """`--json FILE`: also write the figures there, machine-readable."""
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="also write the measured figures to FILE as JSON records "
        "(name, target, value, unit, ratio, met)",
    )


def command_line(argv: Sequence[str] | None = None) -> str:
    """How this script was run, as a shell line relative to the repository root."""
    args = list(sys.argv if argv is None else argv)
    script = Path(args[0])
    try:
        shown = str(script.resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        shown = str(script)
    return shlex.join([".venv/bin/python", shown, *args[1:]])


def write_json(path: Path | None, benchmark: str, figures: Iterable[Figure]) -> None:
    """Write the benchmark's figures to `path` (nothing when None)."""
    if path is None:
        return
    document = {
        "schema": SCHEMA,
        "benchmark": benchmark,
        "command": command_line(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "figures": [figure.to_json() for figure in figures],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")


def read_json(path: Path) -> tuple[dict[str, Any], list[Figure]]:
    """The document's header fields and its figures."""
    document = json.loads(path.read_text())
    figures = [Figure.from_json(record) for record in document.get("figures", [])]
    header = {k: v for k, v in document.items() if k != "figures"}
    return header, figures
