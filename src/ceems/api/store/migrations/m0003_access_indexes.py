"""Indexes for the API's per-user reads: units by owner and end, memberships by user.

`/units` for one user and `/usage/current` scanned whole tables without them (SQLite's
query plans showed it once a store held a million units).
"""

from __future__ import annotations

import sqlalchemy as sa

_metadata = sa.MetaData()
_units = sa.Table(
    "units",
    _metadata,
    sa.Column("username", sa.String(256)),
    sa.Column("ended_at_ts", sa.BigInteger),
    sa.Column("last_updated_at_ts", sa.BigInteger),
)
_memberships = sa.Table(
    "memberships",
    _metadata,
    sa.Column("username", sa.String(256)),
    sa.Column("cluster_id", sa.String(128)),
    sa.Column("project", sa.String(256)),
)
INDEXES = (
    sa.Index("ix_units_user_ended", _units.c.username, _units.c.ended_at_ts),
    sa.Index("ix_units_last_updated", _units.c.last_updated_at_ts),
    sa.Index(
        "ix_memberships_user",
        _memberships.c.username,
        _memberships.c.cluster_id,
        _memberships.c.project,
    ),
)


def upgrade(conn: sa.Connection) -> None:
    """Create the indexes."""
    for index in INDEXES:
        index.create(conn)


def downgrade(conn: sa.Connection) -> None:
    """Drop the indexes."""
    for index in INDEXES:
        index.drop(conn)
