"""The first schema: units, usage, daily usage, users, projects, memberships, admins, updates.

A frozen copy, not an import of schema.py: that module describes the latest version, and this
migration must create the same tables forever.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

_METRICS = (
    "avg_cpu_usage",
    "avg_cpu_mem_usage",
    "avg_gpu_usage",
    "avg_gpu_mem_usage",
    "total_cpu_energy_usage_kwh",
    "total_cpu_emissions_gms",
    "total_gpu_energy_usage_kwh",
    "total_gpu_emissions_gms",
    "total_io_write_stats",
    "total_io_read_stats",
    "total_ingress_stats",
    "total_egress_stats",
)

_metadata = sa.MetaData()
_Json = sa.JSON().with_variant(JSONB(), "postgresql")
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _metric_columns() -> list[sa.Column[object]]:
    return [sa.Column(name, _Json, nullable=False) for name in _METRICS]


sa.Table(
    "units",
    _metadata,
    sa.Column("id", _Id, primary_key=True),
    sa.Column("cluster_id", sa.String(128), nullable=False),
    sa.Column("resource_manager", sa.String(64), nullable=False),
    sa.Column("uuid", sa.String(256), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("project", sa.String(256), nullable=False),
    sa.Column("groupname", sa.String(256), nullable=False),
    sa.Column("username", sa.String(256), nullable=False),
    sa.Column("created_at_ts", sa.BigInteger, nullable=False),
    sa.Column("started_at_ts", sa.BigInteger, nullable=False),
    sa.Column("ended_at_ts", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(64), nullable=False),
    sa.Column("allocation", _Json, nullable=False),
    sa.Column("tags", _Json, nullable=False),
    sa.Column("total_time_seconds", _Json, nullable=False),
    *_metric_columns(),
    sa.Column("ignore", sa.Boolean, nullable=False),
    sa.Column("num_updates", sa.Integer, nullable=False),
    sa.Column("last_updated_at_ts", sa.BigInteger, nullable=False),
    sa.UniqueConstraint(
        "cluster_id", "uuid", "created_at_ts", name="uq_units_cluster_uuid_created"
    ),
    sa.Index("ix_units_cluster_user", "cluster_id", "username", "started_at_ts"),
    sa.Index("ix_units_cluster_project", "cluster_id", "project", "started_at_ts"),
    sa.Index("ix_units_cluster_uuid", "cluster_id", "uuid"),
    sa.Index("ix_units_ended", "ended_at_ts"),
)


def _usage_table(name: str, *extra: sa.Column[object] | sa.Index | sa.UniqueConstraint) -> None:
    sa.Table(
        name,
        _metadata,
        sa.Column("id", _Id, primary_key=True),
        sa.Column("cluster_id", sa.String(128), nullable=False),
        sa.Column("resource_manager", sa.String(64), nullable=False),
        sa.Column("project", sa.String(256), nullable=False),
        sa.Column("username", sa.String(256), nullable=False),
        sa.Column("groupname", sa.String(256), nullable=False),
        sa.Column("num_units", sa.Integer, nullable=False),
        sa.Column("total_time_seconds", _Json, nullable=False),
        *_metric_columns(),
        sa.Column("num_updates", sa.Integer, nullable=False),
        sa.Column("last_updated_at_ts", sa.BigInteger, nullable=False),
        *extra,
    )


_usage_table(
    "usage",
    sa.UniqueConstraint("cluster_id", "username", "project", name="uq_usage_cluster_user_project"),
)
_usage_table(
    "daily_usage",
    sa.Column("day_ts", sa.BigInteger, nullable=False),
    sa.UniqueConstraint(
        "cluster_id",
        "username",
        "project",
        "day_ts",
        name="uq_daily_usage_cluster_user_project_day",
    ),
    sa.Index("ix_daily_usage_day", "day_ts"),
)

for _name in ("users", "projects"):
    sa.Table(
        _name,
        _metadata,
        sa.Column("id", _Id, primary_key=True),
        sa.Column("cluster_id", sa.String(128), nullable=False),
        sa.Column("resource_manager", sa.String(64), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("uid", sa.String(64), nullable=False),
        sa.Column("tags", _Json, nullable=False),
        sa.Column("last_updated_at_ts", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("cluster_id", "name", name=f"uq_{_name}_cluster_name"),
    )

sa.Table(
    "memberships",
    _metadata,
    sa.Column("cluster_id", sa.String(128), primary_key=True),
    sa.Column("username", sa.String(256), primary_key=True),
    sa.Column("project", sa.String(256), primary_key=True),
    sa.Column("last_updated_at_ts", sa.BigInteger, nullable=False),
    sa.Index("ix_memberships_project", "cluster_id", "project"),
)

sa.Table(
    "admin_users",
    _metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("last_updated_at_ts", sa.BigInteger, nullable=False),
)

sa.Table(
    "updates",
    _metadata,
    sa.Column("cluster_id", sa.String(128), primary_key=True),
    sa.Column("last_update_ts", sa.BigInteger, nullable=False),
    sa.Column("num_units", sa.Integer, nullable=False),
)


def upgrade(conn: sa.Connection) -> None:
    """Create every table of version 1."""
    _metadata.create_all(conn, checkfirst=False)


def downgrade(conn: sa.Connection) -> None:
    """Drop every table of version 1."""
    _metadata.drop_all(conn, checkfirst=False)
