"""Migrations: from empty they build exactly schema.py; they upgrade data, go down, refuse."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from ceems.api.store import schema
from ceems.api.store.errors import MigrationError
from ceems.api.store.migrate import (
    Migration,
    current_version,
    latest_version,
    load_migrations,
    migrate,
    schema_migrations,
)
from tests.api.store.factory import CLUSTER, T0

LATEST = 3  # the newest migration, m0003_access_indexes


def describe(engine: sa.Engine) -> dict[str, Any]:
    """Tables, columns, keys and indexes as the database reports them (not schema_migrations)."""
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        tables = sorted(set(inspector.get_table_names()) - {schema_migrations.name})
        return {
            table: {
                "columns": {
                    c["name"]: (str(c["type"]), c["nullable"], c.get("default"))
                    for c in inspector.get_columns(table)
                },
                "primary_key": sorted(inspector.get_pk_constraint(table)["constrained_columns"]),
                "unique": sorted(
                    (u["name"], tuple(u["column_names"]))
                    for u in inspector.get_unique_constraints(table)
                ),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(table)
                ),
                "foreign_keys": inspector.get_foreign_keys(table),
            }
            for table in tables
        }


def drop_everything(engine: sa.Engine) -> None:
    """Drop every table, whoever created it."""
    reflected = sa.MetaData()
    with engine.begin() as conn:
        reflected.reflect(conn)
        reflected.drop_all(conn)


def test_migrating_an_empty_database_yields_schema_py(engine: sa.Engine) -> None:
    assert migrate(engine) == latest_version() == LATEST
    migrated = describe(engine)
    drop_everything(engine)
    schema.metadata.create_all(engine)
    expected = describe(engine)
    assert set(migrated) == set(schema.metadata.tables)
    assert migrated == expected


def test_migrate_twice_changes_nothing(engine: sa.Engine) -> None:
    migrate(engine)
    before = describe(engine)
    assert migrate(engine) == LATEST
    assert describe(engine) == before
    with engine.connect() as conn:
        versions = conn.execute(sa.select(schema_migrations.c.version)).scalars().all()
    assert sorted(versions) == list(range(1, LATEST + 1))


def test_upgrade_from_0001_keeps_units(engine: sa.Engine) -> None:
    assert migrate(engine, target=1) == 1
    old_units = sa.Table("units", sa.MetaData(), autoload_with=engine)
    assert "provenance" not in old_units.c
    stored: dict[str, Any] = {
        "cluster_id": CLUSTER,
        "resource_manager": "slurm",
        "uuid": "1001",
        "name": "old job",
        "project": "research",
        "groupname": "users",
        "username": "alice",
        "created_at_ts": T0,
        "started_at_ts": T0 + 1,
        "ended_at_ts": T0 + 2,
        "state": "COMPLETED",
        "allocation": {"cpus": 2},
        "tags": {"qos": "normal"},
        "total_time_seconds": {"alloc_cputime": 20.0},
        "avg_cpu_usage": {"global": 50.0},
        "avg_cpu_mem_usage": {},
        "avg_gpu_usage": {},
        "avg_gpu_mem_usage": {},
        "total_cpu_energy_usage_kwh": {"total": 0.5},
        "total_cpu_emissions_gms": {},
        "total_gpu_energy_usage_kwh": {},
        "total_gpu_emissions_gms": {},
        "total_io_write_stats": {},
        "total_io_read_stats": {},
        "total_ingress_stats": {},
        "total_egress_stats": {},
        "ignore": False,
        "num_updates": 3,
        "last_updated_at_ts": T0 + 3,
    }
    with engine.begin() as conn:
        conn.execute(old_units.insert(), [stored])

    assert migrate(engine) == LATEST
    with engine.connect() as conn:
        row = dict(conn.execute(sa.select(schema.units)).mappings().one())
    assert row.pop("id") == 1
    assert row.pop("provenance") == {}
    assert row == stored


def test_downgrade_to_each_version_and_back(engine: sa.Engine) -> None:
    migrate(engine)
    assert migrate(engine, target=2) == 2
    assert "ix_units_user_ended" not in {i["name"] for i in sa.inspect(engine).get_indexes("units")}
    assert migrate(engine, target=1) == 1
    assert current_version(engine) == 1
    assert "provenance" not in {c["name"] for c in sa.inspect(engine).get_columns("units")}
    assert migrate(engine, target=0) == 0
    assert set(sa.inspect(engine).get_table_names()) == {schema_migrations.name}
    assert migrate(engine) == LATEST
    assert "provenance" in {c["name"] for c in sa.inspect(engine).get_columns("units")}


def test_a_newer_database_is_refused(engine: sa.Engine) -> None:
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(schema_migrations.insert().values(version=7, applied_at=T0))
    with pytest.raises(MigrationError, match=rf"version 7, newer .* \(version {LATEST}\)"):
        migrate(engine)
    with pytest.raises(MigrationError, match="version 7"):
        migrate(engine, target=1)
    assert current_version(engine) == 7


def test_tables_not_made_by_migrate_are_refused(engine: sa.Engine) -> None:
    schema.metadata.create_all(engine)
    with pytest.raises(MigrationError, match="not created by migrate"):
        migrate(engine)


def test_unknown_target_is_refused(engine: sa.Engine) -> None:
    with pytest.raises(MigrationError, match=f"no schema version {LATEST + 1}"):
        migrate(engine, target=LATEST + 1)
    assert current_version(engine) == 0


def test_a_failing_migration_leaves_the_version_before_it(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(conn: sa.Connection) -> None:
        sa.Table("half_done", sa.MetaData(), sa.Column("x", sa.Integer)).create(conn)
        conn.exec_driver_sql("SELECT no_such_column FROM units")

    first = load_migrations()[0]
    steps = [first, Migration(2, "broken", broken, broken)]
    monkeypatch.setattr("ceems.api.store.migrate.load_migrations", lambda: steps)
    with pytest.raises(MigrationError, match=r"migration 0002 .broken. up failed"):
        migrate(engine)
    assert current_version(engine) == 1
    assert "half_done" not in sa.inspect(engine).get_table_names()
