"""Node memory from /proc/meminfo, as ceems_meminfo_<Field>_bytes gauges."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily

from ceems.exporter.collector import NodeContext

DEFAULT_FIELDS = ("MemTotal", "MemFree", "MemAvailable")
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def parse_meminfo(text: str) -> dict[str, tuple[float, bool]]:
    """Map each /proc/meminfo field to (value, is_bytes); kB values are converted to bytes."""
    values: dict[str, tuple[float, bool]] = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or not fields:  # some kernels emit blank lines
            continue
        try:
            value = float(fields[0])
        except ValueError as err:
            raise ValueError(f"meminfo: non-numeric value in line {line!r}") from err
        in_kb = fields[1:] == ["kB"]
        values[name.strip()] = (value * 1024 if in_kb else value, in_kb)
    return values


def metric_name(field: str, is_bytes: bool) -> str:
    """`Active(anon)` -> `ceems_meminfo_Active_anon_bytes`; counts (HugePages_Total) get no unit."""
    safe = _UNSAFE.sub("_", field).strip("_")
    return f"ceems_meminfo_{safe}_bytes" if is_bytes else f"ceems_meminfo_{safe}"


@dataclass(frozen=True, slots=True)
class MeminfoCollector:
    """Emits the selected /proc/meminfo fields, or all of them."""

    procfs: Path
    hostname: str
    all_stats: bool = False

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield one gauge per field; a missing default field is an error, as it means garbage."""
        values = parse_meminfo((self.procfs / "meminfo").read_text())
        fields = sorted(values) if self.all_stats else DEFAULT_FIELDS
        for field in fields:
            if field not in values:
                raise ValueError(f"meminfo: field {field} missing")
            value, is_bytes = values[field]
            name = metric_name(field, is_bytes)
            suffix = "_bytes" if is_bytes else ""
            family = GaugeMetricFamily(
                name, f"Memory information field {field}{suffix}.", labels=["hostname"]
            )
            family.add_metric([self.hostname], value)
            yield family


@dataclass(frozen=True, slots=True)
class MeminfoCollectorFactory:
    """Builds the meminfo collector."""

    name: str = "meminfo"
    enabled_by_default: bool = True
    description: str = "Node memory statistics from /proc/meminfo."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """`--collector.meminfo.all-stats` exports every field instead of the three defaults."""
        group.add_argument(
            "--collector.meminfo.all-stats",
            dest="meminfo_all_stats",
            action="store_true",
            help="Export every /proc/meminfo field, not only MemTotal, MemFree and MemAvailable.",
        )

    def build(self, node: NodeContext, options: argparse.Namespace) -> MeminfoCollector:
        """A collector reading `<procfs>/meminfo`."""
        return MeminfoCollector(node.procfs, node.hostname, options.meminfo_all_stats)


FACTORY = MeminfoCollectorFactory()
