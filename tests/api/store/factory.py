"""Units, users and projects for store tests, and reading rows back."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ceems.api.models import Project, Unit, User

CLUSTER = "slurm-0"
DAY_MS = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def make_unit(uuid: str, **fields: Any) -> Unit:
    """A unit of CLUSTER owned by alice in project research, with `fields` overriding."""
    values: dict[str, Any] = {
        "cluster_id": CLUSTER,
        "resource_manager": "slurm",
        "uuid": uuid,
        "name": f"job-{uuid}",
        "project": "research",
        "groupname": "users",
        "username": "alice",
        "created_at_ts": T0,
        "started_at_ts": T0 + 1000,
        "state": "RUNNING",
        "allocation": {"cpus": 4, "mem": 8_000_000_000},
        "tags": {"partition": "batch"},
    }
    values.update(fields)
    return Unit(**values)


def window(
    uuid: str,
    cputime: float,
    cpu_usage: float,
    energy_kwh: float,
    **fields: Any,
) -> Unit:
    """A unit's figures for one window: allocated CPU time, average CPU usage, energy."""
    return make_unit(
        uuid,
        total_time_seconds={"walltime": cputime / 4, "alloc_cputime": cputime},
        metrics={
            "avg_cpu_usage": {"global": cpu_usage},
            "total_cpu_energy_usage_kwh": {"total": energy_kwh},
        },
        **fields,
    )


def user(name: str, *projects: str, cluster_id: str = CLUSTER, **fields: Any) -> User:
    """A user of CLUSTER in `projects`."""
    return User(cluster_id, "slurm", name, uid=str(1000 + len(name)), projects=projects, **fields)


def project(name: str, *users: str) -> Project:
    """A project of CLUSTER with `users`."""
    return Project(CLUSTER, "slurm", name, users=users)


def rows(engine: sa.Engine, table: sa.Table, *order: str) -> list[dict[str, Any]]:
    """Every row of a table as dicts, ordered by `order` columns."""
    query = sa.select(table).order_by(*(table.c[name] for name in order))
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def count(engine: sa.Engine, table: sa.Table) -> int:
    """How many rows a table holds."""
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
