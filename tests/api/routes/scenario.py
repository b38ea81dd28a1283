"""A small store for the HTTP tests: two clusters, alice (p1, p2), bob (p2), carol (p3), admins.

Rows are inserted with SQLAlchemy Core into the real schema; `Scenario` keeps what was
inserted so that tests can say who may see what without repeating the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ceems.api.store import schema

T0 = 1_700_000_000  # the tests' "now", Unix seconds (2023-11-14T22:13:20Z)
DAY_MS = 86_400_000
USERS = ("alice", "bob", "carol")
ADMINS = {"root": "config", "ops": "grafana"}
CLUSTERS = {"slurm-0": "slurm", "os-0": "openstack"}
# (cluster, user, project). alice is in p2 only on slurm-0, so bob's p2 on os-0 is not hers.
MEMBERSHIPS = frozenset(
    {
        ("slurm-0", "alice", "p1"),
        ("slurm-0", "alice", "p2"),
        ("slurm-0", "bob", "p2"),
        ("slurm-0", "carol", "p3"),
        ("os-0", "alice", "p1"),
        ("os-0", "bob", "p2"),
        ("os-0", "carol", "p3"),
    }
)


def ms(seconds: float) -> int:
    """Seconds before/after T0 to epoch milliseconds."""
    return int((T0 + seconds) * 1000)


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """One unit of the scenario; times are seconds relative to T0 (ended 0: running)."""

    cluster_id: str
    uuid: str
    username: str
    project: str
    started: int
    ended: int | None = None  # None: still running
    updated: int = -60
    ignore: bool = False
    scale: float = 1.0  # multiplies every metric, so that units differ


UNITS = (
    UnitSpec("slurm-0", "1001", "alice", "p1", started=-3600, ended=-600, updated=-300),
    UnitSpec("slurm-0", "1002", "alice", "p2", started=-1800, scale=2.0),
    UnitSpec("slurm-0", "1003", "bob", "p2", started=-5400, ended=-1200, updated=-1100),
    UnitSpec("slurm-0", "1004", "carol", "p3", started=-7200, ended=-900, updated=-800),
    UnitSpec("slurm-0", "1005", "alice", "p1", started=-11 * 86400, ended=-10 * 86400,
             updated=-10 * 86400 + 60),
    UnitSpec("slurm-0", "1006", "bob", "p2", started=-800, ended=-700, updated=-650, ignore=True),
    UnitSpec("os-0", "vm-a", "alice", "p1", started=-2 * 86400 - 3661, scale=0.5),
    UnitSpec("os-0", "vm-b", "bob", "p2", started=-3000, ended=-800, updated=-700, scale=3.0),
    UnitSpec("os-0", "vm-c", "carol", "p3", started=-2000, ended=-400, updated=-300),
)  # fmt: skip


def unit_metrics(spec: UnitSpec) -> dict[str, Any]:
    """Metric maps shaped like CEEMS' (two emission providers, IO bytes and requests)."""
    s = spec.scale
    walltime = ((spec.ended or 0) - spec.started) if spec.ended else 1800
    return {
        "total_time_seconds": {
            "walltime": walltime,
            "alloc_cputime": walltime * 8,
            "alloc_cpumemtime": walltime * 8 * 4096,
            "alloc_gputime": walltime * 2,
            "alloc_gpumemtime": walltime * 2,
        },
        "avg_cpu_usage": {"global": 50.25 * s},
        "avg_cpu_mem_usage": {"global": 20.0 * s},
        "avg_gpu_usage": {"global": 75.123456789 * s},
        "avg_gpu_mem_usage": {"global": 0},
        "total_cpu_energy_usage_kwh": {"total": 1.5 * s},
        "total_cpu_emissions_gms": {"rte_total": 30.0 * s, "emaps_total": 42.25 * s},
        "total_gpu_energy_usage_kwh": {"total": 2.0 * s},
        "total_gpu_emissions_gms": {"rte_total": 40.0 * s, "emaps_total": 56.5 * s},
        "total_io_write_stats": {"bytes": 2972084252 * s, "requests": 29720842520},
        "total_io_read_stats": {"bytes": 1000 * s, "requests": 10},
        "total_ingress_stats": {"bytes": 0, "packets": 0},
        "total_egress_stats": {"bytes": 100, "packets": 1},
    }


def unit_row(spec: UnitSpec) -> dict[str, Any]:
    """The `units` row of a spec."""
    running = spec.ended is None
    return {
        "cluster_id": spec.cluster_id,
        "resource_manager": CLUSTERS[spec.cluster_id],
        "uuid": spec.uuid,
        "name": f"job-{spec.uuid}",
        "project": spec.project,
        "groupname": f"grp-{spec.username}",
        "username": spec.username,
        "created_at_ts": ms(spec.started - 5),
        "started_at_ts": ms(spec.started),
        "ended_at_ts": 0 if running else ms(spec.ended or 0),
        "state": "RUNNING" if running else "COMPLETED",
        "allocation": {"cpus": 8, "mem": 34359738368, "gpus": 2, "nodes": 1},
        "tags": {"partition": "gpu", "qos": "normal", "uid": 1000, "workdir": "/home/x&<y>"},
        "provenance": {"power": "rapl", "attribution": "cgroup", "pue": "1.0", "factor": "owid"},
        "ignore": spec.ignore,
        "num_updates": 3,
        "last_updated_at_ts": ms(spec.updated),
        **unit_metrics(spec),
    }


@dataclass
class Scenario:
    """The store and what it holds."""

    engine: sa.Engine
    units: dict[tuple[str, str], UnitSpec] = field(default_factory=dict)

    def owner(self, cluster_id: str, uuid: str) -> str:
        """Who owns a unit."""
        return self.units[(cluster_id, uuid)].username

    def visible_projects(self, user: str) -> set[tuple[str, str]]:
        """(cluster, project) pairs `user` is a member of."""
        return {(c, p) for c, u, p in MEMBERSHIPS if u == user}


def _insert(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        conn.execute(table.insert(), rows)


def build_store(path: Path) -> Scenario:
    """Create the SQLite store at `path` and fill it with the scenario."""
    engine = sa.create_engine(f"sqlite:///{path}")
    schema.metadata.create_all(engine)
    scenario = Scenario(engine)
    with engine.begin() as conn:
        _insert(conn, schema.units, [unit_row(u) for u in UNITS])
        scenario.units = {(u.cluster_id, u.uuid): u for u in UNITS}
        users = sorted({(c, u) for c, u, _ in MEMBERSHIPS})
        _insert(conn, schema.users, [
            {"cluster_id": c, "resource_manager": CLUSTERS[c], "name": u, "uid": "", "tags": {}}
            for c, u in users
        ])  # fmt: skip
        projects = sorted({(c, p) for c, _, p in MEMBERSHIPS})
        _insert(conn, schema.projects, [
            {"cluster_id": c, "resource_manager": CLUSTERS[c], "name": p,
             "uid": f"uid-{p}" if c == "os-0" else "", "tags": {}}
            for c, p in projects
        ])  # fmt: skip
        _insert(conn, schema.memberships, [
            {"cluster_id": c, "username": u, "project": p} for c, u, p in sorted(MEMBERSHIPS)
        ])  # fmt: skip
        _insert(conn, schema.admin_users, [
            {"name": n, "source": s, "last_updated_at_ts": ms(0)} for n, s in ADMINS.items()
        ])  # fmt: skip
        # The writer's checkpoints; "old-0" is no longer configured and has no users left.
        _insert(conn, schema.updates, [
            {"cluster_id": c, "last_update_ts": ms(-60), "num_units": 1}
            for c in (*CLUSTERS, "old-0")
        ])  # fmt: skip
        _insert(conn, schema.usage, _usage_rows())
        _insert(conn, schema.daily_usage, _daily_rows())
    return scenario


def _usage_base(spec: UnitSpec) -> dict[str, Any]:
    return {
        "cluster_id": spec.cluster_id,
        "resource_manager": CLUSTERS[spec.cluster_id],
        "project": spec.project,
        "username": spec.username,
        "groupname": f"grp-{spec.username}",
    }


def _usage_rows() -> list[dict[str, Any]]:
    """One cumulative row per (cluster, user, project); num_units counts its units."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for spec in UNITS:
        key = (spec.cluster_id, spec.username, spec.project)
        row = rows.setdefault(key, {**_usage_base(spec), "num_units": 0, **unit_metrics(spec)})
        row["num_units"] += 1
    return list(rows.values())


def _daily_rows() -> list[dict[str, Any]]:
    """One daily row per (cluster, user, project) and UTC day of the units' last update."""
    rows: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for spec in UNITS:
        day = ms(spec.updated) - ms(spec.updated) % DAY_MS
        key = (spec.cluster_id, spec.username, spec.project, day)
        base = {**_usage_base(spec), "num_units": 0, "day_ts": day, **unit_metrics(spec)}
        rows.setdefault(key, base)["num_units"] += 1
    return list(rows.values())
