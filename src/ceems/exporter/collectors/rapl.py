"""RAPL energy counters from powercap sysfs as monotonic ceems_rapl_* joule totals.

The kernel's `energy_uj` wraps at `max_energy_range_uj` (about 262 kJ on many CPUs, i.e. a
few minutes at full package power). A background sampler reads every zone at least every
`--collector.rapl.sample-interval` so that no wrap is ever missed, even while nobody scrapes,
and the exported value is a total that only grows.
"""

from __future__ import annotations

import argparse
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily

from ceems.exporter.collector import CollectorError, NoDataError, NodeContext
from ceems.exporter.sampler import BackgroundSampler

log = logging.getLogger(__name__)

_INDEXED_NAME = re.compile(r"^(?P<zone>[a-z_]+)-(?P<index>\d+)$")
MAX_SAMPLE_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class RaplZone:
    """One powercap zone: `package` index 0 at /sys/class/powercap/intel-rapl:0, ..."""

    name: str
    index: int
    path: Path
    max_energy_range_uj: int


def discover_zones(sysfs: Path) -> list[RaplZone]:
    """Zones under `<sysfs>/class/powercap`, named and indexed as the procfs Go library does.

    `package-1` becomes zone `package`, index 1; a name without a suffix (`dram`, `core`)
    gets an index counting its previous uses in the sorted directory listing.
    """
    root = sysfs / "class" / "powercap"
    if not root.is_dir():
        raise NoDataError(f"no powercap directory at {root}")
    uses: dict[str, int] = {}
    zones = []
    for entry in sorted(root.iterdir()):
        name_file = entry / "name"
        if not (entry / "energy_uj").exists() or not name_file.exists():
            continue  # the control-type directory itself (`intel-rapl`) has no counter
        raw_name = name_file.read_text().strip()
        if match := _INDEXED_NAME.match(raw_name):
            name, index = match["zone"], int(match["index"])
        else:
            name, index = raw_name, uses.get(raw_name, 0)
            uses[raw_name] = index + 1
        max_range = int((entry / "max_energy_range_uj").read_text())
        zones.append(RaplZone(name, index, entry, max_range))
    if not zones:
        raise NoDataError(f"no RAPL zones under {root}")
    return zones


def read_power_limit_watts(zone: RaplZone) -> float:
    """Long-term power limit (constraint 0) in watts, 0 if the zone has none."""
    limit_file = zone.path / "constraint_0_power_limit_uw"
    try:
        return int(limit_file.read_text()) / 1e6
    except FileNotFoundError:
        return 0.0


@dataclass(slots=True)
class _Counter:
    """Accumulates a wrapping microjoule counter into a monotonic total."""

    last_raw_uj: int
    total_uj: int

    def advance(self, raw_uj: int, max_range_uj: int) -> None:
        delta = raw_uj - self.last_raw_uj
        if delta < 0:
            # The counter wrapped once (sampling faster than a wrap period guarantees at
            # most one): it ran from last_raw up to max_range, then from 0 up to raw.
            delta += max_range_uj
        self.total_uj += delta
        self.last_raw_uj = raw_uj


@dataclass(slots=True)
class RaplAccumulator:
    """Monotonic energy totals for a set of zones, safe to advance from several threads."""

    zones: Sequence[RaplZone]
    _counters: dict[Path, _Counter] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def advance(self) -> dict[Path, float]:
        """Read every zone now, fold the readings into the totals and return joules per zone."""
        # Read under the lock: two threads applying readings out of order would see a
        # decrease and count it as a wrap.
        with self._lock:
            for zone in self.zones:
                raw = int((zone.path / "energy_uj").read_text())
                if raw < 0 or raw > zone.max_energy_range_uj:
                    raise ValueError(
                        f"{zone.path}/energy_uj: {raw} outside [0, {zone.max_energy_range_uj}]"
                    )
                counter = self._counters.get(zone.path)
                if counter is None:
                    # Start from the raw reading so the first exported value equals the
                    # kernel's counter, as CEEMS exports it.
                    self._counters[zone.path] = _Counter(raw, raw)
                else:
                    counter.advance(raw, zone.max_energy_range_uj)
            return {path: c.total_uj / 1e6 for path, c in self._counters.items()}


@dataclass(slots=True, eq=False)  # registered in a registry: hashed by identity
class RaplCollector:
    """Emits ceems_rapl_<zone>_joules_total and _power_limit_watts_total per zone."""

    sysfs: Path
    hostname: str
    zone_label: bool
    sample_interval_s: float
    _accumulator: RaplAccumulator | None = None
    _sampler: BackgroundSampler[dict[Path, float]] | None = None

    def _ensure_started(self) -> RaplAccumulator:
        if self._accumulator is None:
            self._accumulator = RaplAccumulator(discover_zones(self.sysfs))
            self._sampler = BackgroundSampler(
                "rapl_counters", self._accumulator.advance, self.sample_interval_s
            )
            self._sampler.sample_now()
            self._sampler.start()
        return self._accumulator

    def start(self) -> None:
        """Discover zones and start sampling before the first scrape, if there are any."""
        try:
            self._ensure_started()
        except NoDataError as err:
            log.info("rapl collector found no zones", extra={"err": str(err)})

    def samplers(self) -> Sequence[BackgroundSampler[Any]]:
        """The counter sampler, once started."""
        return [self._sampler] if self._sampler is not None else []

    def close(self) -> None:
        """Stop the counter sampler."""
        if self._sampler is not None:
            self._sampler.stop()

    def collect(self) -> Iterator[CounterMetricFamily]:
        """Advance the totals with a fresh read so the scrape sees current energy."""
        accumulator = self._ensure_started()
        totals = accumulator.advance()
        families: dict[str, CounterMetricFamily] = {}
        base_labels = ["hostname", "index", "path"]

        def family(name: str, help_text: str) -> CounterMetricFamily:
            if name not in families:
                labels = [*base_labels, "rapl_zone"] if self.zone_label else base_labels
                families[name] = CounterMetricFamily(name, help_text, labels=labels)
            return families[name]

        for zone in accumulator.zones:
            labels = [self.hostname, str(zone.index), str(zone.path)]
            if self.zone_label:
                labels.append(zone.name)
                energy = family("ceems_rapl_joules", "Current RAPL value in joules")
                limit = family("ceems_rapl_power_limit_watts", "Current RAPL power limit in watts")
            else:
                energy = family(
                    f"ceems_rapl_{zone.name}_joules", f"Current RAPL {zone.name} value in joules"
                )
                limit = family(
                    f"ceems_rapl_{zone.name}_power_limit_watts",
                    f"Current RAPL {zone.name} power limit in watts",
                )
            energy.add_metric(labels, totals[zone.path])
            limit.add_metric(labels, read_power_limit_watts(zone))
        yield from families.values()


@dataclass(frozen=True, slots=True)
class RaplCollectorFactory:
    """Builds the rapl collector."""

    name: str = "rapl"
    enabled_by_default: bool = True
    description: str = "RAPL energy counters (Intel and AMD) from /sys/class/powercap."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """Zone label mode and the background sampling interval."""
        group.add_argument(
            "--collector.rapl.enable-zone-label",
            dest="rapl_enable_zone_label",
            action="store_true",
            help="Export one ceems_rapl_joules_total with a rapl_zone label instead of one "
            "metric name per zone.",
        )
        group.add_argument(
            "--collector.rapl.sample-interval",
            dest="rapl_sample_interval",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="Seconds between background reads of the counters, so wraps are never missed "
            f"(at most {MAX_SAMPLE_INTERVAL_S:g}). Default: %(default)s.",
        )

    def build(self, node: NodeContext, options: argparse.Namespace) -> RaplCollector:
        """A collector over `<sysfs>/class/powercap` whose sampler starts immediately."""
        interval = options.rapl_sample_interval
        if not 0 < interval <= MAX_SAMPLE_INTERVAL_S:
            raise CollectorError(
                f"--collector.rapl.sample-interval: {interval} is not in (0, "
                f"{MAX_SAMPLE_INTERVAL_S:g}] seconds"
            )
        collector = RaplCollector(
            node.sysfs, node.hostname, options.rapl_enable_zone_label, interval
        )
        collector.start()
        return collector


FACTORY = RaplCollectorFactory()
