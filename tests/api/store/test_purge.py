"""StoreWriter.purge: what is older than the retention period goes, the rest stays."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from ceems.api.store import schema
from ceems.api.store.errors import StoreInputError
from ceems.api.store.writes import PurgeCounts, StoreWriter
from tests.api.store.factory import CLUSTER, DAY_MS, T0, project, rows, user, window

HOUR_MS = 3_600_000


def test_purge_deletes_what_is_older_than_retention(writer: StoreWriter, engine: sa.Engine) -> None:
    old_names = ([user("ann", "p", cluster_id="gone")], None)
    writer.commit_update("gone", T0 + HOUR_MS, [], *old_names, T0 + HOUR_MS)
    commits = [
        (T0 + HOUR_MS, [window("ended-long-ago", 1, 1, 1, ended_at_ts=T0 + HOUR_MS)]),
        (T0 + 9 * DAY_MS + HOUR_MS, [window("running", 1, 1, 1, started_at_ts=T0)]),
        (T0 + 10 * DAY_MS + HOUR_MS, [window("running", 1, 1, 1, started_at_ts=T0)]),
        (T0 + 20 * DAY_MS, [window("ended-lately", 1, 1, 1, ended_at_ts=T0 + 20 * DAY_MS)]),
    ]
    for end, units in commits:
        writer.commit_update(CLUSTER, end, units, None, None, end)
    now = T0 + 40 * DAY_MS
    writer.commit_update(
        CLUSTER, now, [], [user("bob", "physics")], [project("physics", "bob")], now
    )

    # retention 30 days: the cutoff is day 10
    counts = writer.purge(timedelta(days=30), now)

    assert counts == PurgeCounts(units=1, daily_usage=2, users=1, projects=0, memberships=1)
    assert [r["uuid"] for r in rows(engine, schema.units, "uuid")] == ["ended-lately", "running"]
    days = sorted({r["day_ts"] for r in rows(engine, schema.daily_usage)})
    assert days == [T0 + 10 * DAY_MS, T0 + 19 * DAY_MS]
    assert [(r["cluster_id"], r["name"]) for r in rows(engine, schema.users)] == [(CLUSTER, "bob")]
    assert [r["username"] for r in rows(engine, schema.memberships)] == ["bob"]
    # cumulative usage and checkpoints are kept
    assert len(rows(engine, schema.usage)) == 1
    assert writer.last_update("gone") == T0 + HOUR_MS
    assert writer.purge(timedelta(days=30), now) == PurgeCounts(0, 0, 0, 0, 0)


def test_purge_refuses_a_retention_that_is_not_positive(writer: StoreWriter) -> None:
    with pytest.raises(StoreInputError, match="retention must be positive"):
        writer.purge(timedelta(0), T0)
