"""The writer's fast paths: fresh-unit rows, column order, the connection worker, the collector."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import pytest
import sqlalchemy as sa

from ceems.api.config import DataConfig
from ceems.api.models import METRIC_FIELDS, Unit, merge_provenance
from ceems.api.store import bulk, schema, writes
from ceems.api.store.accumulate import Figures
from ceems.api.store.bulk import WRITE_CHUNK, Prepared, upsert_statement
from ceems.api.store.engine import WAL_AUTOCHECKPOINT_PAGES, sqlite_path
from ceems.api.store.errors import StoreError, StoreInputError
from ceems.api.store.rows import UNIT_COLUMNS, fresh_unit_params, unit_params
from ceems.api.store.worker import ConnectionWorker
from ceems.api.store.writes import StoreWriter
from tests.api.store.factory import CLUSTER, T0, make_unit, rows, window

HOUR_MS = 3_600_000

FRESH_UNITS = [
    window("floats", 100.0, 50.0, 0.25, provenance={"cpu_power": "rapl"}),
    # integer times are stored as floats, as accumulated ones are
    make_unit("ints", total_time_seconds={"walltime": 60, "alloc_cputime": 240}),
    make_unit("empty"),
    make_unit(
        "every-metric",
        total_time_seconds={"alloc_cputime": 10.0, "alloc_gputime": 5.0},
        metrics={name: {"a": 1.5, "b": 2} for name in METRIC_FIELDS},
        tags={"nested": {"list": [1, "two", None]}, "unicode": "é<&>"},
        provenance={"cpu_power": "rapl", "gpu_power": ""},
    ),
    make_unit("proxy", metrics={"avg_cpu_usage": MappingProxyType({"global": 3.0})}),
    make_unit("sparse", metrics={"avg_cpu_usage": {}, "total_io_read_stats": {"bytes": 1e12}}),
]


@pytest.mark.parametrize("unit", FRESH_UNITS, ids=lambda u: u.uuid)
def test_a_fresh_unit_row_is_the_accumulated_row_of_one_window(unit: Unit) -> None:
    figures = Figures()
    figures.add(unit.total_time_seconds, unit.metrics)
    merged = Unit(**{**_fields(unit), "provenance": merge_provenance({}, unit.provenance)})
    assert fresh_unit_params(unit, T0) == unit_params(merged, figures.columns(), 1, T0)


def _fields(unit: Unit) -> dict[str, Any]:
    return {name: getattr(unit, name) for name in Unit.__slots__}


def test_rows_are_built_in_the_order_of_the_statements_parameters(engine: sa.Engine) -> None:
    assert tuple(c.name for c in schema.units.c if c.name != "id") == UNIT_COLUMNS
    with engine.connect() as conn:
        units = upsert_statement(conn, schema.units, writes.UNIT_KEY, UNIT_COLUMNS)
        for table, day in ((schema.usage, None), (schema.daily_usage, T0)):
            names, key = writes._usage_layout(day)
            assert upsert_statement(conn, table, key, names).order is None, table.name
    assert units.order is None  # no row is rearranged before executemany


def test_a_unit_listed_twice_far_apart_accumulates_once_per_listing(
    writer: StoreWriter, engine: sa.Engine
) -> None:
    # the two listings land in different batches of the worker's inserts
    units = [window(str(i), 10.0, 20.0, 0.5) for i in range(WRITE_CHUNK + 20)]
    units.append(window("7", 30.0, 60.0, 1.5, provenance={"cpu_power": "cray"}))
    writer.commit_update(CLUSTER, T0 + HOUR_MS, units, None, None, T0 + HOUR_MS)

    [row] = [r for r in rows(engine, schema.units) if r["uuid"] == "7"]
    assert row["num_updates"] == 2
    assert row["total_time_seconds"] == {"alloc_cputime": 40.0, "walltime": 10.0}
    assert row["avg_cpu_usage"] == {"global": pytest.approx(50.0)}  # weighted by CPU time
    assert row["total_cpu_energy_usage_kwh"] == {"total": 2.0}
    assert row["provenance"] == {"cpu_power": "cray"}
    [usage] = rows(engine, schema.usage)
    assert usage["num_units"] == WRITE_CHUNK + 20  # a unit counts once
    assert usage["num_updates"] == WRITE_CHUNK + 21


def test_a_failed_insert_in_a_later_batch_stores_nothing_and_skips_the_rest(
    writer: StoreWriter, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer.commit_update(CLUSTER, T0 + HOUR_MS, [window("0", 1, 1, 1)], None, None, T0)
    before = {t.name: rows(engine, t) for t in (schema.units, schema.usage, schema.updates)}
    batches: list[int] = []
    real_execute = Prepared.execute

    def failing_second(self: Prepared, conn: sa.Connection, params: Sequence[Any]) -> None:
        batches.append(len(params))
        if len(batches) == 2:
            conn.exec_driver_sql("SELECT * FROM no_such_table")
        real_execute(self, conn, params)

    monkeypatch.setattr(Prepared, "execute", failing_second)
    units = [window(str(i), 1, 1, 1) for i in range(3 * WRITE_CHUNK)]
    with pytest.raises(StoreError, match=r"nothing was stored: .*no_such_table"):
        writer.commit_update(CLUSTER, T0 + 2 * HOUR_MS, units, None, None, T0)
    assert batches == [WRITE_CHUNK, WRITE_CHUNK]  # the third batch and usage were skipped
    assert {t.name: rows(engine, t) for t in (schema.units, schema.usage, schema.updates)} == before
    monkeypatch.undo()
    writer.commit_update(CLUSTER, T0 + 2 * HOUR_MS, units, None, None, T0)
    assert len(rows(engine, schema.units)) == 3 * WRITE_CHUNK


def test_the_collector_runs_again_after_a_commit_whatever_its_outcome(
    writer: StoreWriter,
) -> None:
    assert gc.isenabled()
    writer.commit_update(CLUSTER, T0 + HOUR_MS, [window("0", 1, 1, 1)], None, None, T0)
    assert gc.isenabled()
    bad = window("bad", 1, 1, 1, tags={"handle": object()})
    with pytest.raises(StoreError):
        writer.commit_update(CLUSTER, T0 + 2 * HOUR_MS, [bad], None, None, T0)
    assert gc.isenabled()
    gc.disable()  # a process that runs without the collector keeps it off
    try:
        writer.commit_update(CLUSTER, T0 + 3 * HOUR_MS, [window("1", 1, 1, 1)], None, None, T0)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_worker_runs_work_in_order_on_its_own_thread(writer: StoreWriter) -> None:
    executor = writer._executor()
    names: list[str] = []

    def record(conn: sa.Connection) -> int:
        names.append(threading.current_thread().name)
        return 1

    with writer._transaction("test") as conn, ConnectionWorker(conn, executor) as worker:
        first = worker.call(record)
        second = worker.call(lambda c: c.exec_driver_sql("SELECT 2").scalar_one())
        assert (worker.result(first), worker.result(second)) == (1, 2)
    assert names[0].startswith("ceems-store-writer")


def test_after_a_failure_the_worker_skips_the_rest_and_reports_the_first_error(
    writer: StoreWriter,
) -> None:
    ran: list[int] = []
    with (
        pytest.raises(ZeroDivisionError),
        writer._transaction("test") as conn,
        ConnectionWorker(conn, writer._executor()) as worker,
    ):
        worker.call(lambda c: 1 // 0)
        later = worker.call(lambda c: ran.append(1))
        with pytest.raises(ZeroDivisionError):
            worker.result(later)  # the skipped work reports the failure that skipped it
    assert ran == []


def test_the_callers_own_error_wins_over_the_workers(writer: StoreWriter) -> None:
    with (
        pytest.raises(KeyError),
        writer._transaction("test") as conn,
        ConnectionWorker(conn, writer._executor()) as worker,
    ):
        worker.call(lambda c: 1 // 0)
        raise KeyError("caller")


def test_execute_many_reorders_values_when_the_columns_come_in_another_order(
    engine: sa.Engine, writer: StoreWriter
) -> None:
    entries = [{"source": "config", "name": "root", "last_updated_at_ts": 5}]
    with engine.begin() as conn:
        bulk.execute_many(conn, schema.admin_users, schema.admin_users.insert(), entries)
    assert rows(engine, schema.admin_users) == [
        {"name": "root", "source": "config", "last_updated_at_ts": 5}
    ]


def test_commits_are_checkpointed_into_the_database_file_after_they_return(
    writer: StoreWriter, engine: sa.Engine, data: DataConfig
) -> None:
    if data.url:
        pytest.skip("PostgreSQL has no WAL file to copy back")
    database = sqlite_path(data)
    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
    assert pages == WAL_AUTOCHECKPOINT_PAGES  # a commit no longer checkpoints itself
    before = database.stat().st_size
    units = [window(str(i), 10.0, 20.0, 0.5) for i in range(3_000)]
    writer.commit_update(CLUSTER, T0 + HOUR_MS, units, None, None, T0 + HOUR_MS)
    checkpointer = writer._checkpointer
    assert checkpointer is not None
    deadline = time.monotonic() + 30
    while checkpointer.completed < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpointer.completed >= 1
    assert database.stat().st_size > before + 1_000_000  # the units reached the file itself
    writer.close()  # stops the thread; the writer works again afterwards
    writer.commit_update(CLUSTER, T0 + 2 * HOUR_MS, units[:1], None, None, T0 + 2 * HOUR_MS)
    assert len(rows(engine, schema.units)) == 3_000


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"uuid": None}, "uuid must be a string, not NoneType"),
        ({"username": ["alice"]}, "username must be a string, not list"),
        ({"provenance": {"cpu_power": 3}}, "provenance 'cpu_power': 3 is not text to text"),
    ],
)
def test_a_unit_the_worker_cannot_read_is_refused_for_what_it_is(
    writer: StoreWriter, engine: sa.Engine, fields: dict[str, Any], message: str
) -> None:
    # the worker's reads meet the units before they are checked; the check's error wins
    writer.commit_update(CLUSTER, T0 + HOUR_MS, [window("ok", 1, 1, 1)], None, None, T0)
    overrides = dict(fields)  # parametrize shares the dict between engines
    bad = make_unit(overrides.pop("uuid", "bad"), **overrides)
    with pytest.raises(StoreInputError, match=message):
        units = [window("ok", 1, 1, 1), bad]
        writer.commit_update(CLUSTER, T0 + 2 * HOUR_MS, units, None, None, T0)
    assert len(rows(engine, schema.units)) == 1
