"""StoreWriter.commit_update: units and usage accumulate, all or nothing, each window once."""

from __future__ import annotations

import math
from typing import Any

import pytest
import sqlalchemy as sa

from ceems.api.models import Unit
from ceems.api.store import bulk, schema, writes
from ceems.api.store.bulk import WRITE_CHUNK
from ceems.api.store.errors import CheckpointError, StoreError, StoreInputError
from ceems.api.store.writes import StoreWriter
from tests.api.store.factory import (
    CLUSTER,
    DAY_MS,
    T0,
    count,
    make_unit,
    project,
    rows,
    user,
    window,
)

HOUR_MS = 3_600_000


def snapshot(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every store table, in a stable order."""
    return {
        name: sorted(rows(engine, table), key=repr)
        for name, table in schema.metadata.tables.items()
    }


def unit_rows(engine: sa.Engine) -> list[dict[str, Any]]:
    return rows(engine, schema.units, "uuid", "created_at_ts")


def test_first_commit_stores_units_and_checkpoint(writer: StoreWriter, engine: sa.Engine) -> None:
    assert writer.last_update(CLUSTER) is None
    unit = window("1", 100.0, 50.0, 0.25, provenance={"cpu_power": "rapl"})
    writer.commit_update(CLUSTER, T0 + HOUR_MS, [unit], None, None, now_ms=T0 + HOUR_MS + 5)

    assert writer.last_update(CLUSTER) == T0 + HOUR_MS
    assert writer.last_update("other") is None
    [row] = unit_rows(engine)
    assert row["uuid"] == "1"
    assert row["name"] == "job-1"
    assert row["username"] == "alice"
    assert row["allocation"] == {"cpus": 4, "mem": 8_000_000_000}
    assert row["tags"] == {"partition": "batch"}
    assert row["provenance"] == {"cpu_power": "rapl"}
    assert row["total_time_seconds"] == {"alloc_cputime": 100.0, "walltime": 25.0}
    assert row["avg_cpu_usage"] == {"global": 50.0}
    assert row["total_cpu_energy_usage_kwh"] == {"total": 0.25}
    assert row["avg_gpu_usage"] == {}
    assert row["ignore"] is False
    assert row["num_updates"] == 1
    assert row["last_updated_at_ts"] == T0 + HOUR_MS + 5
    [checkpoint] = rows(engine, schema.updates)
    assert checkpoint == {"cluster_id": CLUSTER, "last_update_ts": T0 + HOUR_MS, "num_units": 1}


def test_units_accumulate_across_commits(writer: StoreWriter, engine: sa.Engine) -> None:
    # (alloc cpu time, average CPU usage, energy) in three windows
    windows = [(100.0, 50.0, 0.1), (300.0, 90.0, 0.2), (200.0, 10.0, 0.3)]
    for i, (cputime, usage, energy) in enumerate(windows, start=1):
        last = i == len(windows)
        unit = window(
            "7",
            cputime,
            usage,
            energy,
            state="COMPLETED" if last else "RUNNING",
            ended_at_ts=T0 + i * HOUR_MS if last else 0,
            name=f"renamed-{i}",
        )
        writer.commit_update(CLUSTER, T0 + i * HOUR_MS, [unit], None, None, T0 + i * HOUR_MS)

    [row] = unit_rows(engine)
    assert row["total_time_seconds"] == {"alloc_cputime": 600.0, "walltime": 150.0}
    weighted = (100 * 50 + 300 * 90 + 200 * 10) / 600
    assert row["avg_cpu_usage"]["global"] == pytest.approx(weighted)
    assert row["total_cpu_energy_usage_kwh"]["total"] == pytest.approx(0.6)
    assert row["num_updates"] == 3
    assert row["last_updated_at_ts"] == T0 + 3 * HOUR_MS
    assert (row["state"], row["ended_at_ts"], row["name"]) == (
        "COMPLETED",
        T0 + 3 * HOUR_MS,
        "renamed-3",
    )


def test_usage_and_daily_usage_accumulate_per_user_and_project(
    writer: StoreWriter, engine: sa.Engine
) -> None:
    bob = {"username": "bob", "project": "physics"}
    commits: list[tuple[int, list[Unit]]] = [
        # day 1: alice runs two units, bob one
        (T0 + HOUR_MS, [window("a1", 100, 20, 1.0), window("b1", 50, 80, 0.5, **bob)]),
        (T0 + 2 * HOUR_MS, [window("a1", 300, 60, 2.0), window("a2", 100, 100, 4.0)]),
        # day 2, in a window ending exactly at midnight (all of it in day 2), then day 3
        (T0 + 2 * DAY_MS, [window("a2", 200, 40, 3.0)]),
        (T0 + 2 * DAY_MS + HOUR_MS, [window("b2", 150, 0, 1.5, **bob)]),
    ]
    for end, units in commits:
        writer.commit_update(CLUSTER, end, units, None, None, end)

    usage = {(r["username"], r["project"]): r for r in rows(engine, schema.usage)}
    assert set(usage) == {("alice", "research"), ("bob", "physics")}
    alice = usage[("alice", "research")]
    assert alice["num_units"] == 2
    assert alice["num_updates"] == 4
    assert alice["total_time_seconds"]["alloc_cputime"] == pytest.approx(700)
    expected = (100 * 20 + 300 * 60 + 100 * 100 + 200 * 40) / 700
    assert alice["avg_cpu_usage"]["global"] == pytest.approx(expected)
    assert alice["total_cpu_energy_usage_kwh"]["total"] == pytest.approx(10.0)
    bob_usage = usage[("bob", "physics")]
    assert bob_usage["num_units"] == 2
    assert bob_usage["avg_cpu_usage"]["global"] == pytest.approx((50 * 80 + 150 * 0) / 200)
    assert bob_usage["total_cpu_energy_usage_kwh"]["total"] == pytest.approx(2.0)

    daily = {(r["day_ts"], r["username"]): r for r in rows(engine, schema.daily_usage, "day_ts")}
    assert set(daily) == {
        (T0, "alice"),
        (T0, "bob"),
        (T0 + DAY_MS, "alice"),
        (T0 + 2 * DAY_MS, "bob"),
    }
    day1 = daily[(T0, "alice")]
    assert day1["num_units"] == 2
    assert day1["total_time_seconds"]["alloc_cputime"] == pytest.approx(500)
    expected_day1 = (100 * 20 + 300 * 60 + 100 * 100) / 500
    assert day1["avg_cpu_usage"]["global"] == pytest.approx(expected_day1)
    day2 = daily[(T0 + DAY_MS, "alice")]
    assert day2["num_units"] == 0  # a2 was first seen, and counted, on day 1
    assert day2["avg_cpu_usage"]["global"] == pytest.approx(40)
    assert day2["total_cpu_energy_usage_kwh"]["total"] == pytest.approx(3.0)
    assert daily[(T0 + 2 * DAY_MS, "bob")]["num_units"] == 1


def test_a_requeued_job_is_a_new_row(writer: StoreWriter, engine: sa.Engine) -> None:
    writer.commit_update(CLUSTER, T0 + HOUR_MS, [window("9", 100, 50, 1)], None, None, T0)
    requeued = window("9", 40, 10, 1, created_at_ts=T0 + HOUR_MS + 1)
    writer.commit_update(CLUSTER, T0 + 2 * HOUR_MS, [requeued], None, None, T0)

    first, second = unit_rows(engine)
    assert (first["created_at_ts"], second["created_at_ts"]) == (T0, T0 + HOUR_MS + 1)
    assert first["total_time_seconds"]["alloc_cputime"] == 100
    assert second["total_time_seconds"]["alloc_cputime"] == 40
    assert first["num_updates"] == second["num_updates"] == 1
    [usage] = rows(engine, schema.usage)
    assert usage["num_units"] == 2


def test_a_window_not_after_the_checkpoint_is_refused(
    writer: StoreWriter, engine: sa.Engine
) -> None:
    end = T0 + HOUR_MS
    writer.commit_update(CLUSTER, end, [window("1", 100, 50, 1)], None, None, end)
    before = snapshot(engine)
    for again in (end, end - 1):
        with pytest.raises(CheckpointError, match=f"{again} is not after the stored checkpoint"):
            writer.commit_update(CLUSTER, again, [window("1", 100, 50, 1)], None, None, end)
    assert snapshot(engine) == before
    # other clusters have checkpoints of their own
    other = window("1", 1, 1, 1, cluster_id="other")
    writer.commit_update("other", end, [other], None, None, end)
    assert writer.last_update("other") == end


def test_a_failure_halfway_through_the_units_stores_nothing(
    writer: StoreWriter, engine: sa.Engine
) -> None:
    writer.commit_update(CLUSTER, T0 + HOUR_MS, [window("0", 100, 50, 1)], None, None, T0)
    before = snapshot(engine)
    units = [window(str(i), 10, 10, 0.1) for i in range(WRITE_CHUNK + 500)]
    # the first chunk of rows is written before the bad unit's chunk fails to serialise
    units[-1] = window("bad", 10, 10, 0.1, tags={"handle": object()})
    with pytest.raises(StoreInputError, match=r"unit 'bad': tags: .*not JSON serializable"):
        writer.commit_update(CLUSTER, T0 + 2 * HOUR_MS, units, None, None, T0)
    assert snapshot(engine) == before
    assert writer.last_update(CLUSTER) == T0 + HOUR_MS


def test_a_failure_after_units_and_usage_stores_nothing(
    writer: StoreWriter, engine: sa.Engine
) -> None:
    writer.commit_update(CLUSTER, T0 + HOUR_MS, [window("0", 100, 50, 1)], None, None, T0)
    before = snapshot(engine)
    # users are written after units and usage: the transaction is half done when this fails
    users = [user("alice", "research", tags={"bad": float("nan")})]
    with pytest.raises(StoreInputError, match=r"user 'alice': tags: .*JSON compliant"):
        writer.commit_update(
            CLUSTER, T0 + 2 * HOUR_MS, [window("0", 5, 5, 5), window("n", 1, 1, 1)], users, None, T0
        )
    assert snapshot(engine) == before


def test_a_database_error_mid_commit_stores_nothing(
    writer: StoreWriter, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer.commit_update(CLUSTER, T0 + HOUR_MS, [window("0", 100, 50, 1)], None, None, T0)
    before = snapshot(engine)
    real_replace = bulk.replace_rows

    def failing_replace(conn: sa.Connection, table: sa.Table, *args: Any) -> None:
        real_replace(conn, table, *args)
        conn.exec_driver_sql("SELECT * FROM no_such_table")

    monkeypatch.setattr(writes, "replace_rows", failing_replace)
    with pytest.raises(StoreError, match=r"nothing was stored: .*no_such_table"):
        writer.commit_update(
            CLUSTER, T0 + 2 * HOUR_MS, [window("0", 5, 5, 5)], [user("alice")], None, T0
        )
    assert snapshot(engine) == before
    monkeypatch.undo()
    # the writer's connection is usable again after the rollback
    writer.commit_update(CLUSTER, T0 + 2 * HOUR_MS, [window("0", 5, 5, 5)], None, None, T0)
    assert unit_rows(engine)[0]["num_updates"] == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"uuid": "x" * 257}, "uuid is 257 characters long, the store keeps at most 256"),
        ({"uuid": ""}, "uuid is empty"),
        ({"created_at_ts": 10**20}, "created_at_ts = 100000000000000000000 is not epoch"),
        ({"ended_at_ts": -1}, "ended_at_ts = -1 is not epoch milliseconds"),
        ({"started_at_ts": 1.5}, "started_at_ts = 1.5 is not epoch milliseconds"),
        ({"username": "al\x00ice"}, "username contains a NUL character"),
        ({"cluster_id": "elsewhere"}, "belongs to cluster 'elsewhere'"),
        ({"total_time_seconds": {"walltime": math.inf}}, r"\['walltime'\] = inf is not a finite"),
        ({"total_time_seconds": {"walltime": 10**400}}, "is not a finite number"),
        ({"metrics": {"avg_cpu_usage": {"global": math.nan}}}, "= nan is not a finite number"),
        ({"metrics": {"avg_cpu_usage": {"global": "high"}}}, "'high' is not a finite number"),
        ({"metrics": {"watts": {"global": 1.0}}}, r"unknown metric\(s\) watts"),
        ({"allocation": {"cpus": math.inf}}, "allocation: Out of range float values"),
        ({"tags": {"note": "a\x00b"}}, "tags: NUL characters are not stored"),
    ],
)
def test_bad_input_is_refused_and_loses_nothing(
    writer: StoreWriter, engine: sa.Engine, fields: dict[str, Any], message: str
) -> None:
    writer.commit_update(CLUSTER, T0 + HOUR_MS, [window("ok", 100, 50, 1)], None, None, T0)
    before = snapshot(engine)
    overrides = dict(fields)  # parametrize shares the dict between engines
    bad = make_unit(overrides.pop("uuid", "bad"), **overrides)
    with pytest.raises(StoreInputError, match=message):
        writer.commit_update(
            CLUSTER, T0 + 2 * HOUR_MS, [window("ok", 1, 1, 1), bad], None, None, T0
        )
    assert snapshot(engine) == before
    writer.commit_update(CLUSTER, T0 + 2 * HOUR_MS, [window("ok", 1, 1, 1)], None, None, T0)
    assert count(engine, schema.units) == 1


def test_users_projects_and_memberships_are_replaced_when_given(
    writer: StoreWriter, engine: sa.Engine
) -> None:
    users = [user("alice", "research"), user("bob", "research", "physics")]
    projects = [project("research", "alice", "bob"), project("physics", "carol")]
    writer.commit_update(CLUSTER, T0 + HOUR_MS, [], users, projects, T0 + 1)

    names = [(r["name"], r["last_updated_at_ts"]) for r in rows(engine, schema.users, "name")]
    assert names == [("alice", T0 + 1), ("bob", T0 + 1)]
    assert [r["name"] for r in rows(engine, schema.projects, "name")] == ["physics", "research"]
    members = [(r["username"], r["project"]) for r in rows(engine, schema.memberships, "username")]
    assert sorted(members) == [
        ("alice", "research"),
        ("bob", "physics"),
        ("bob", "research"),
        ("carol", "physics"),
    ]

    # None leaves everything as it is
    writer.commit_update(CLUSTER, T0 + 2 * HOUR_MS, [], None, None, T0 + 2)
    assert count(engine, schema.users) == 2
    assert count(engine, schema.memberships) == 4

    # a new list replaces the old one, of this cluster only
    other = user("zoe", "x", cluster_id="other")
    writer.commit_update("other", T0 + HOUR_MS, [], [other], None, T0 + 3)
    writer.commit_update(CLUSTER, T0 + 3 * HOUR_MS, [], [user("bob", "physics")], [], T0 + 4)
    assert [(r["cluster_id"], r["name"]) for r in rows(engine, schema.users, "name")] == [
        (CLUSTER, "bob"),
        ("other", "zoe"),
    ]
    assert count(engine, schema.projects) == 0
    replaced = [
        (r["cluster_id"], r["username"], r["project"])
        for r in rows(engine, schema.memberships, "username")
    ]
    assert replaced == [(CLUSTER, "bob", "physics"), ("other", "zoe", "x")]


@pytest.mark.parametrize(
    ("cluster_id", "end", "message"),
    [
        ("c" * 129, T0, "cluster_id is 129 characters long"),
        (CLUSTER, -5, "window_end_ms = -5 is not epoch milliseconds"),
        (CLUSTER, float(T0), "window_end_ms = .* is not epoch milliseconds"),
    ],
)
def test_a_bad_cluster_or_window_is_refused(
    writer: StoreWriter, engine: sa.Engine, cluster_id: str, end: int, message: str
) -> None:
    with pytest.raises(StoreInputError, match=message):
        writer.commit_update(cluster_id, end, [], None, None, T0)
    assert count(engine, schema.updates) == 0


def test_a_user_listed_twice_is_refused(writer: StoreWriter, engine: sa.Engine) -> None:
    with pytest.raises(StoreInputError, match="user 'bob' of cluster 'slurm-0': listed twice"):
        writer.commit_update(CLUSTER, T0, [], [user("bob"), user("bob")], None, T0)
    assert writer.last_update(CLUSTER) is None


def test_sync_admins_replaces_the_admins_of_one_source(
    writer: StoreWriter, engine: sa.Engine
) -> None:
    writer.sync_admins("config", ["root", "admin"], now_ms=T0)
    writer.sync_admins("grafana", ["alice", "alice", "bob"], now_ms=T0)
    writer.sync_admins("grafana", ["carol"], now_ms=T0 + 1)
    admins = [(r["source"], r["name"]) for r in rows(engine, schema.admin_users, "source", "name")]
    assert admins == [("config", "admin"), ("config", "root"), ("grafana", "carol")]
    writer.sync_admins("grafana", [])
    assert count(engine, schema.admin_users) == 2
    with pytest.raises(StoreInputError, match="name is 300 characters long"):
        writer.sync_admins("config", ["x" * 300])
    assert count(engine, schema.admin_users) == 2
