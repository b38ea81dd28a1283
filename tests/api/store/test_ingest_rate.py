"""Ingest at scale: a window of 10,000 units commits new and then updated, on both engines.

The figures of record come from `benchmarks/api_server.py` and `python -m
tests.api.store.ingest_rate`; no test asserts on time. What made ingest collapse before was a
lookup that stopped using its index, so the lookups' SQLite plans are checked instead.
"""

from __future__ import annotations

import sqlalchemy as sa

from ceems.api.config import DataConfig
from ceems.api.store import schema
from ceems.api.store.bulk import one_of
from ceems.api.store.engine import create_store_engine
from tests.api.store.factory import count
from tests.api.store.ingest_rate import CLUSTER, measure

UNITS = 10_000


def test_ten_thousand_units_commit_new_then_updated(data: DataConfig) -> None:
    engine = "postgresql" if data.url else "sqlite"
    new, updated = measure(data, UNITS, commits=2)
    print(f"{engine}: {new:,.0f} new units/s, {updated:,.0f} updated units/s (not asserted)")
    store = create_store_engine(data)
    try:
        assert count(store, schema.units) == UNITS
        with store.connect() as conn:
            updates = conn.execute(sa.select(sa.func.min(schema.units.c.num_updates))).scalar()
            usage = conn.execute(sa.select(sa.func.sum(schema.usage.c.num_units))).scalar()
        assert updates == 2  # every unit of the second window found its row
        assert usage == UNITS
    finally:
        store.dispose()


def _plan(conn: sa.Connection, statement: sa.Select[tuple[object, ...]]) -> str:
    compiled = statement.compile(conn, compile_kwargs={"literal_binds": True})
    found = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").fetchall()
    return " | ".join(str(row[-1]) for row in found)


def test_the_writers_lookups_use_indexes(data: DataConfig) -> None:
    if data.url:
        return  # PostgreSQL's planner scans small tables; ANALYZE keeps it on the index at scale
    measure(data, 100, commits=1)
    store = create_store_engine(data)
    units, usage = schema.units, schema.usage
    try:
        with store.connect() as conn:
            # the conditions the writer builds (one_of) for its two lookups
            [uuids] = one_of(conn, units.c.uuid, {"1000001", "1000002"})
            [users] = one_of(conn, usage.c.username, {"user1"})
            lookups = {
                "units": sa.select(units.c.num_updates).where(units.c.cluster_id == CLUSTER, uuids),
                "usage": sa.select(usage.c.num_units).where(usage.c.cluster_id == CLUSTER, users),
            }
            for table, statement in lookups.items():
                plan = _plan(conn, statement)
                assert f"SEARCH {table} USING" in plan, plan
                assert "INDEX" in plan, plan
    finally:
        store.dispose()
