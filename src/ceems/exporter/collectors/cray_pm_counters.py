"""HPE Cray EX node power, energy and temperature from /sys/cray/pm_counters."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily

from ceems.exporter.collector import NoDataError, NodeContext

LABELS = ["hostname", "domain"]
# Counter kind (file suffix) -> (family name, HELP, unit the file must carry). See HPE's
# "User access to compute node power data" for the file list.
KINDS = {
    "energy": ("ceems_cray_pm_counters_energy_joules", "Current energy value in joules", "J"),
    "power": ("ceems_cray_pm_counters_power_watts", "Current power value in watts", "W"),
    "temp": ("ceems_cray_pm_counters_temp_celsius", "Current temperature value in celsius", "C"),
    "power_cap": (
        "ceems_cray_pm_counters_power_limit_watts",
        "Current power limit value in watts",
        "W",
    ),
}
# `energy`, `cpu_power`, `accel0_power_cap`, `cpu0_temp`; the domains are CEEMS' (cpu,
# memory, accelN), so `freshness`, `generation`, `raw_scan_hz`, ... never match.
_COUNTER_FILE = re.compile(
    r"^(?:(?P<domain>(?:cpu|memory|accel)[0-9]*)_)?(?P<kind>energy|power|temp|power_cap)$"
)


def parse_counter_filename(filename: str) -> tuple[str, str] | None:
    """`accel0_power_cap` -> (`accel0`, `power_cap`); unprefixed files are domain `node`."""
    match = _COUNTER_FILE.match(filename)
    if match is None:
        return None
    return match["domain"] or "node", match["kind"]


def parse_counter(text: str, unit: str, source: Path) -> float:
    """The value of a `<value> <unit> [<timestamp> us]` line, checking its unit."""
    fields = text.split()
    if len(fields) < 2 or fields[1] != unit:
        raise ValueError(f"{source}: expected '<value> {unit} ...', got {text.strip()!r}")
    try:
        return float(int(fields[0]))
    except ValueError as err:
        raise ValueError(f"{source}: non-integer value {fields[0]!r}") from err


@dataclass(frozen=True, slots=True)
class CrayPmCountersCollector:
    """Emits ceems_cray_pm_counters_{energy_joules,power_watts,temp_celsius,power_limit_watts}."""

    sysfs: Path
    hostname: str

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Read every counter file once per scrape; any unreadable or garbled file fails it."""
        root = self.sysfs / "cray" / "pm_counters"
        if not root.is_dir():
            raise NoDataError(f"no Cray pm_counters directory at {root}")
        families = {
            kind: GaugeMetricFamily(name, help_text, labels=LABELS)
            for kind, (name, help_text, _) in KINDS.items()
        }
        found = 0
        for entry in sorted(root.iterdir()):
            parsed = parse_counter_filename(entry.name)
            if parsed is None:
                continue
            domain, kind = parsed
            value = parse_counter(entry.read_text(), KINDS[kind][2], entry)
            found += 1
            if kind == "power_cap" and value == 0:
                continue  # "0 W" means no cap is set, not a cap of zero
            families[kind].add_metric([self.hostname, domain], value)
        if not found:
            raise NoDataError(f"no energy, power or temperature counters in {root}")
        yield from (family for family in families.values() if family.samples)


@dataclass(frozen=True, slots=True)
class CrayPmCountersCollectorFactory:
    """Builds the cray_pm_counters collector (no options)."""

    name: str = "cray_pm_counters"
    enabled_by_default: bool = False
    description: str = "HPE Cray EX power, energy and temperature from /sys/cray/pm_counters."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """The cray_pm_counters collector has no options."""

    def build(self, node: NodeContext, options: argparse.Namespace) -> CrayPmCountersCollector:
        """A collector reading `<sysfs>/cray/pm_counters/*`."""
        return CrayPmCountersCollector(node.sysfs, node.hostname)


FACTORY = CrayPmCountersCollectorFactory()
