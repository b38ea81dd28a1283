"""How one window's figures add to the stored ones: per unit and per user and project."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ceems.api.models import (
    AVERAGE_METRICS,
    METRIC_FIELDS,
    MetricMap,
    Unit,
    accumulate_maps,
    add_times,
)
from ceems.api.store.engine import loads_json

DAY_MS = 86_400_000


@dataclass(slots=True)
class Figures:
    """Allocated times and metric maps: totals add up, averages are time-weighted."""

    times: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, MetricMap] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: sa.RowMapping | Mapping[str, Any]) -> Figures:
        """The figures a units, usage or daily_usage row holds."""
        metrics = {name: row[name] for name in METRIC_FIELDS if row[name]}
        return cls(dict(row["total_time_seconds"]), metrics)

    @classmethod
    def from_json(cls, values: Sequence[str | bytes | dict[str, Any]]) -> Figures:
        """The figures of total_time_seconds and the METRIC_FIELDS columns, in that order.

        SQLite gives JSON text, psycopg parsed values: both are taken.
        """
        times, *metrics = [v if isinstance(v, dict) else loads_json(v) for v in values]
        named = {name: value for name, value in zip(METRIC_FIELDS, metrics, strict=True) if value}
        return cls(dict(times), named)

    def add(self, times: Mapping[str, float], metrics: Mapping[str, Mapping[str, float]]) -> None:
        """Add one window's (or one group's) figures."""
        if not self.times and not self.metrics:
            # Nothing stored yet (a new unit or row, most of an ingest): the window's
            # figures are the lifetime ones, without the merge's work.
            self.times = {k: float(v) for k, v in times.items()}
            self.metrics = {m: dict(v) for m, v in metrics.items() if v}
            return
        # the averages are weighted by the times before this window's are added
        self.metrics = accumulate_maps(self.metrics, self.times, metrics, times)
        self.times = add_times(self.times, times)

    def columns(self) -> dict[str, Any]:
        """The figures as column values: total_time_seconds and one map per metric."""
        values: dict[str, Any] = {"total_time_seconds": self.times}
        for name in METRIC_FIELDS:
            values[name] = self.metrics.get(name, {})
        return values


@dataclass(slots=True)
class UsageDelta:
    """What one commit adds to a (user, project) row of usage or daily_usage."""

    resource_manager: str
    groupname: str
    num_units: int = 0
    num_updates: int = 0
    times: dict[str, float] = field(default_factory=dict)
    totals: dict[str, dict[str, float]] = field(default_factory=dict)
    # metric -> name -> [sum of value * weight, sum of weight, last value]
    weighted: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, unit: Unit) -> None:
        """Add one unit's window figures."""
        times, own = unit.total_time_seconds, self.times
        for key, value in times.items():
            own[key] = own.get(key, 0.0) + value
        for metric, values in unit.metrics.items():
            weight_key = AVERAGE_METRICS.get(metric)
            if weight_key is None:
                sums = self.totals.setdefault(metric, {})
                for name, value in values.items():
                    sums[name] = sums.get(name, 0.0) + value
                continue
            weight = times.get(weight_key, 0.0)
            averages = self.weighted.setdefault(metric, {})
            for name, value in values.items():
                sums_of = averages.get(name)
                if sums_of is None:
                    averages[name] = [value * weight, weight, value]
                else:
                    sums_of[0] += value * weight
                    sums_of[1] += weight
                    sums_of[2] = value

    def figures(self) -> Figures:
        """The window's figures of the group: totals summed, averages weighted by their time."""
        metrics: dict[str, MetricMap] = {m: dict(v) for m, v in self.totals.items() if v}
        for metric, averages in self.weighted.items():
            if averages:
                # with no allocated time to weigh by, the last unit's value stands
                metrics[metric] = {
                    name: total / weight if weight > 0 else last
                    for name, (total, weight, last) in averages.items()
                }
        return Figures(add_times({}, self.times), metrics)


def usage_deltas(units: list[tuple[Unit, bool]]) -> dict[tuple[str, str], UsageDelta]:
    """Window increments per (username, project); a unit counts once, when it is first stored.

    `units` pairs each unit with whether the store has not seen it before. Within a window
    the units of a group are combined at once, each average weighted by the unit's own
    allocated time; the result is then added to the stored row with accumulate_maps.
    """
    deltas: dict[tuple[str, str], UsageDelta] = {}
    for unit, new in units:
        key = (unit.username, unit.project)
        delta = deltas.get(key)
        if delta is None:
            delta = deltas[key] = UsageDelta(unit.resource_manager, unit.groupname)
        else:  # the latest unit names the manager and group, as on units rows
            delta.resource_manager, delta.groupname = unit.resource_manager, unit.groupname
        delta.num_units += new
        delta.num_updates += 1
        delta.add(unit)
    return deltas


def utc_day_ms(window_end_ms: int) -> int:
    """The UTC midnight (epoch ms) of the day holding a window's last millisecond."""
    # A window [start, end) ending at 00:00 lies wholly in the day before.
    return (window_end_ms - 1) // DAY_MS * DAY_MS
