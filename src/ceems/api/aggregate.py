"""Usage rows summed per cluster, user and project: totals added, averages time-weighted."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ceems.api.models import AVERAGE_METRICS, METRIC_FIELDS, TOTAL_METRICS, MetricMap

GroupKey = tuple[str, str, str]  # (cluster_id, username, project)
StoreRow = Mapping[Any, Any]  # a row by column name, as SQLAlchemy's RowMapping


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Usage of one user in one project of one cluster, as the API reports it."""

    cluster_id: str
    resource_manager: str
    project: str
    username: str
    groupname: str = ""
    num_units: int = 0
    total_time_seconds: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, MetricMap] = field(default_factory=dict)  # keyed by METRIC_FIELDS


@dataclass(slots=True)
class _Average:
    weighted: float = 0.0
    weight: float = 0.0
    plain: float = 0.0
    count: int = 0

    def add(self, value: float, weight: float) -> None:
        self.weighted += value * weight
        self.weight += weight
        self.plain += value
        self.count += 1

    def value(self) -> float:
        # CEEMS divides by a zero weight and reports 0; a plain mean is the honest answer.
        if self.weight > 0:
            return self.weighted / self.weight
        return self.plain / self.count


@dataclass(slots=True)
class _Group:
    resource_manager: str = ""
    groupname: str = ""
    num_units: int = 0
    times: dict[str, float] = field(default_factory=dict)
    totals: dict[str, dict[str, float]] = field(default_factory=dict)
    averages: dict[str, dict[str, _Average]] = field(default_factory=dict)


def _numbers(value: object) -> dict[str, float]:
    """A stored metric map with non-numeric entries dropped (NULL or JSON null: empty)."""
    if not isinstance(value, Mapping):
        return {}
    return {
        str(k): float(v)
        for k, v in value.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def aggregate_usage(rows: Iterable[StoreRow]) -> list[UsageRow]:
    """Fold unit (or daily usage) rows into one UsageRow per cluster, user and project.

    Each row carries cluster_id, resource_manager, username, project, groupname,
    total_time_seconds, the METRIC_FIELDS maps and, for pre-aggregated rows, num_units
    (a unit row counts as one). Averages are weighted by the matching allocated time, as
    CEEMS' `SUM(avg * time) / SUM(time)`; results are ordered by cluster, user, project.
    """
    groups: dict[GroupKey, _Group] = {}
    for row in rows:
        key = (str(row["cluster_id"]), str(row["username"]), str(row["project"]))
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group()
        group.resource_manager = group.resource_manager or str(row["resource_manager"])
        group.groupname = max(group.groupname, str(row["groupname"]))
        group.num_units += int(row.get("num_units", 1))
        times = _numbers(row["total_time_seconds"])
        for name, value in times.items():
            group.times[name] = group.times.get(name, 0.0) + value
        for metric in TOTAL_METRICS:
            sums = group.totals.setdefault(metric, {})
            for name, value in _numbers(row[metric]).items():
                sums[name] = sums.get(name, 0.0) + value
        for metric, weight_key in AVERAGE_METRICS.items():
            averages = group.averages.setdefault(metric, {})
            weight = times.get(weight_key, 0.0)
            for name, value in _numbers(row[metric]).items():
                averages.setdefault(name, _Average()).add(value, weight)
    result = []
    for (cluster_id, username, project), group in sorted(groups.items()):
        metrics: dict[str, MetricMap] = {}
        for metric in METRIC_FIELDS:
            if metric in AVERAGE_METRICS:
                values = {k: a.value() for k, a in group.averages[metric].items()}
            else:
                values = dict(group.totals[metric])
            if values:
                metrics[metric] = values
        result.append(
            UsageRow(
                cluster_id=cluster_id,
                resource_manager=group.resource_manager,
                project=project,
                username=username,
                groupname=group.groupname,
                num_units=group.num_units,
                total_time_seconds=group.times,
                metrics=metrics,
            )
        )
    return result


def usage_row(row: StoreRow) -> UsageRow:
    """One stored `usage` row as it is (it is already one per cluster, user and project)."""
    metrics = {m: _numbers(row[m]) for m in METRIC_FIELDS}
    return UsageRow(
        cluster_id=str(row["cluster_id"]),
        resource_manager=str(row["resource_manager"]),
        project=str(row["project"]),
        username=str(row["username"]),
        groupname=str(row["groupname"]),
        num_units=int(row["num_units"]),
        total_time_seconds=_numbers(row["total_time_seconds"]),
        metrics={m: v for m, v in metrics.items() if v},
    )
