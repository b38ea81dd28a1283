"""Tables of the compute-unit store (SQLAlchemy Core), the same on SQLite and PostgreSQL.

This describes the latest schema version; store/migrations/ builds it step by step, and a
test checks that migrating an empty database yields exactly these tables.

Times are UTC epoch milliseconds (BIGINT); time zones are applied when responses are
rendered. Metric maps and tags are JSON (JSONB on PostgreSQL). Memberships of users in
projects are rows, not JSON arrays, so access checks are indexed joins on both engines.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from ceems.api.models import METRIC_FIELDS

metadata = sa.MetaData()

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def _metric_columns() -> list[sa.Column[object]]:
    return [sa.Column(name, Json, nullable=False, default=dict) for name in METRIC_FIELDS]


units = sa.Table(
    "units",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("cluster_id", sa.String(128), nullable=False),
    sa.Column("resource_manager", sa.String(64), nullable=False),
    sa.Column("uuid", sa.String(256), nullable=False),
    sa.Column("name", sa.Text, nullable=False, default=""),
    sa.Column("project", sa.String(256), nullable=False, default=""),
    sa.Column("groupname", sa.String(256), nullable=False, default=""),
    sa.Column("username", sa.String(256), nullable=False, default=""),
    sa.Column("created_at_ts", sa.BigInteger, nullable=False, default=0),
    sa.Column("started_at_ts", sa.BigInteger, nullable=False, default=0),
    sa.Column("ended_at_ts", sa.BigInteger, nullable=False, default=0),
    sa.Column("state", sa.String(64), nullable=False, default=""),
    sa.Column("allocation", Json, nullable=False, default=dict),
    sa.Column("tags", Json, nullable=False, default=dict),
    sa.Column("total_time_seconds", Json, nullable=False, default=dict),
    *_metric_columns(),
    # Added by migration 0002; rows older than it hold an empty map.
    sa.Column("provenance", Json, nullable=False, default=dict, server_default=sa.text("'{}'")),
    sa.Column("ignore", sa.Boolean, nullable=False, default=False),
    sa.Column("num_updates", sa.Integer, nullable=False, default=0),
    sa.Column("last_updated_at_ts", sa.BigInteger, nullable=False, default=0),
    # A SLURM job id is reused when a job is requeued; its submit time tells the runs apart.
    sa.UniqueConstraint(
        "cluster_id", "uuid", "created_at_ts", name="uq_units_cluster_uuid_created"
    ),
    sa.Index("ix_units_cluster_user", "cluster_id", "username", "started_at_ts"),
    sa.Index("ix_units_cluster_project", "cluster_id", "project", "started_at_ts"),
    sa.Index("ix_units_cluster_uuid", "cluster_id", "uuid"),
    sa.Index("ix_units_ended", "ended_at_ts"),
    sa.Index("ix_units_user_ended", "username", "ended_at_ts"),  # migration 0003
    sa.Index("ix_units_last_updated", "last_updated_at_ts"),  # migration 0003
)

_usage_columns = (
    ("cluster_id", sa.String(128)),
    ("resource_manager", sa.String(64)),
    ("project", sa.String(256)),
    ("username", sa.String(256)),
    ("groupname", sa.String(256)),
)


def _usage_table(name: str, *extra: sa.Column[object] | sa.Index | sa.UniqueConstraint) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        *(sa.Column(col, kind, nullable=False, default="") for col, kind in _usage_columns),
        sa.Column("num_units", sa.Integer, nullable=False, default=0),
        sa.Column("total_time_seconds", Json, nullable=False, default=dict),
        *_metric_columns(),
        sa.Column("num_updates", sa.Integer, nullable=False, default=0),
        sa.Column("last_updated_at_ts", sa.BigInteger, nullable=False, default=0),
        *extra,
    )


# Cumulative usage per cluster, user and project since the first unit.
usage = _usage_table(
    "usage",
    sa.UniqueConstraint("cluster_id", "username", "project", name="uq_usage_cluster_user_project"),
)

# The same per UTC day, so usage over a period is a sum over days.
daily_usage = _usage_table(
    "daily_usage",
    sa.Column("day_ts", sa.BigInteger, nullable=False),  # UTC midnight, epoch ms
    sa.UniqueConstraint(
        "cluster_id",
        "username",
        "project",
        "day_ts",
        name="uq_daily_usage_cluster_user_project_day",
    ),
    sa.Index("ix_daily_usage_day", "day_ts"),
)


def _account_table(name: str) -> sa.Table:
    """Users and projects have the same shape: one row per name and cluster."""
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("cluster_id", sa.String(128), nullable=False),
        sa.Column("resource_manager", sa.String(64), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("uid", sa.String(64), nullable=False, default=""),
        sa.Column("tags", Json, nullable=False, default=dict),
        sa.Column("last_updated_at_ts", sa.BigInteger, nullable=False, default=0),
        sa.UniqueConstraint("cluster_id", "name", name=f"uq_{name}_cluster_name"),
    )


users = _account_table("users")
projects = _account_table("projects")

# Who belongs to which project: what every non-admin query is filtered by.
memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("cluster_id", sa.String(128), primary_key=True),
    sa.Column("username", sa.String(256), primary_key=True),
    sa.Column("project", sa.String(256), primary_key=True),
    sa.Column("last_updated_at_ts", sa.BigInteger, nullable=False, default=0),
    sa.Index("ix_memberships_project", "cluster_id", "project"),
    sa.Index("ix_memberships_user", "username", "cluster_id", "project"),  # migration 0003
)

# Admins from the config file (source "config") and from Grafana teams (source "grafana").
admin_users = sa.Table(
    "admin_users",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("source", sa.String(32), primary_key=True),
    sa.Column("last_updated_at_ts", sa.BigInteger, nullable=False, default=0),
)

# The writer's checkpoint: units up to `last_update_ts` are stored, in the same transaction.
updates = sa.Table(
    "updates",
    metadata,
    sa.Column("cluster_id", sa.String(128), primary_key=True),
    sa.Column("last_update_ts", sa.BigInteger, nullable=False),
    sa.Column("num_units", sa.Integer, nullable=False, default=0),
)
