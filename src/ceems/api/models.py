"""Domain values of the API server: compute units, users, projects and usage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A map of one aggregate metric, e.g. {"global": 53.4} or {"rte_total": 12.0, "owid_total": 9.1}.
MetricMap = dict[str, float]

# The aggregate metric maps a unit carries, with how they accumulate across updates: totals
# are summed; averages are weighted by the matching allocated time (CEEMS does the same).
TOTAL_METRICS = (
    "total_cpu_energy_usage_kwh",
    "total_cpu_emissions_gms",
    "total_gpu_energy_usage_kwh",
    "total_gpu_emissions_gms",
    "total_io_write_stats",
    "total_io_read_stats",
    "total_ingress_stats",
    "total_egress_stats",
)
AVERAGE_METRICS = {
    "avg_cpu_usage": "alloc_cputime",
    "avg_cpu_mem_usage": "alloc_cpumemtime",
    "avg_gpu_usage": "alloc_gputime",
    "avg_gpu_mem_usage": "alloc_gpumemtime",
}
METRIC_FIELDS = (*AVERAGE_METRICS, *TOTAL_METRICS)
TIME_KEYS = ("walltime", "alloc_cputime", "alloc_cpumemtime", "alloc_gputime", "alloc_gpumemtime")


@dataclass(frozen=True, slots=True)
class Unit:
    """One compute unit (job, VM, pod, reservation) as a resource manager reports it.

    Times are UTC epoch milliseconds (0: not started / not ended yet). `total_time_seconds`
    and every metric map hold the amounts for the fetch window only: the store accumulates
    them into the unit's lifetime figures.
    """

    cluster_id: str
    resource_manager: str
    uuid: str
    name: str = ""
    project: str = ""
    groupname: str = ""
    username: str = ""
    created_at_ts: int = 0
    started_at_ts: int = 0
    ended_at_ts: int = 0
    state: str = ""
    allocation: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)
    total_time_seconds: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, MetricMap] = field(default_factory=dict)  # keyed by METRIC_FIELDS
    provenance: Mapping[str, str] = field(default_factory=dict)
    ignore: bool = False

    @property
    def running(self) -> bool:
        """Started and not ended."""
        return self.started_at_ts > 0 and self.ended_at_ts == 0


@dataclass(frozen=True, slots=True)
class User:
    """A user of a cluster and the projects (accounts) they belong to."""

    cluster_id: str
    resource_manager: str
    name: str
    uid: str = ""
    projects: tuple[str, ...] = ()
    tags: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Project:
    """A project (SLURM account, OpenStack project, namespace) and its users."""

    cluster_id: str
    resource_manager: str
    name: str
    uid: str = ""
    users: tuple[str, ...] = ()
    tags: Mapping[str, Any] = field(default_factory=dict)


def merge_provenance(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, str]:
    """Key by key union of comma-separated values: a unit that ran on nodes with different
    sensors, or through updates with different rules, names every source it had."""
    merged = dict(before)
    for key, value in after.items():
        parts = {p for p in merged.get(key, "").split(",") if p}
        parts |= {p for p in value.split(",") if p}
        merged[key] = ",".join(sorted(parts))
    return merged


def accumulate_maps(
    old: Mapping[str, Mapping[str, float]],
    old_times: Mapping[str, float],
    new: Mapping[str, Mapping[str, float]],
    new_times: Mapping[str, float],
) -> dict[str, MetricMap]:
    """Lifetime metric maps after adding one window's figures.

    Totals add up; an average is weighted by its allocated time (avg_cpu_usage by
    alloc_cputime, ...), so a unit's average over its life does not depend on how many
    update cycles observed it. Keys present on one side only are kept as they are.
    """
    merged: dict[str, MetricMap] = {}
    for metric in METRIC_FIELDS:
        stored, window = old.get(metric), new.get(metric)
        if not window:  # most maps of most windows: nothing to add
            if stored:
                merged[metric] = dict(stored)
            continue
        before = dict(stored) if stored else {}
        if metric in AVERAGE_METRICS:
            key = AVERAGE_METRICS[metric]
            w_old, w_new = old_times.get(key, 0.0), new_times.get(key, 0.0)
            for name, value in window.items():
                if name in before and w_old + w_new > 0:
                    before[name] = (before[name] * w_old + value * w_new) / (w_old + w_new)
                else:
                    before[name] = value
        else:
            for name, value in window.items():
                before[name] = before.get(name, 0.0) + value
        if before:
            merged[metric] = before
    return merged


def add_times(old: Mapping[str, float], new: Mapping[str, float]) -> dict[str, float]:
    """Lifetime allocated times after adding one window's."""
    keys = set(old) | set(new)
    return {k: old.get(k, 0.0) + new.get(k, 0.0) for k in sorted(keys)}
