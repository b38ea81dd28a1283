"""StoreWriter.backup: an online copy that opens and holds the same rows; the newest N kept."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from ceems.api.config import DataConfig
from ceems.api.store import schema
from ceems.api.store.backup import libpq_url
from ceems.api.store.engine import create_store_engine
from ceems.api.store.errors import StoreError
from ceems.api.store.writes import StoreWriter
from tests.api.conftest import reset_postgresql
from tests.api.store.factory import CLUSTER, T0, rows, window

NOW = datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)


@contextmanager
def writing_meanwhile(data: DataConfig) -> Iterator[list[int]]:
    """Another connection commits admin rows bg000000, bg000001, ... until the block ends."""
    engine = create_store_engine(data)
    written = [0]
    stop = threading.Event()
    started = threading.Event()

    def write() -> None:
        while not stop.is_set():
            with engine.begin() as conn:
                name = f"bg{written[0]:06d}"
                conn.execute(schema.admin_users.insert().values(name=name, source="bg"))
            written[0] += 1
            started.set()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert started.wait(10)
        yield written
    finally:
        stop.set()
        thread.join()
        engine.dispose()


@contextmanager
def opened(backup: Path, data: DataConfig) -> Iterator[sa.Engine]:
    """An engine on the backup: the SQLite file itself, or a database pg_restore fills."""
    if not data.url:
        engine = sa.create_engine(f"sqlite:///{backup}")
        yield engine
        engine.dispose()
        return
    url = sa.make_url(data.url)
    name = f"restore_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    restored = url.set(database=name)
    try:
        subprocess.run(
            ["pg_restore", "--no-owner", "--exit-on-error", "-d", libpq_url(restored), str(backup)],
            env={**os.environ, "PGPASSWORD": str(url.password)},
            check=True,
            capture_output=True,
        )
        engine = sa.create_engine(restored)
        yield engine
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        admin.dispose()


def test_backup_is_a_consistent_copy_made_while_another_connection_writes(
    data: DataConfig, writer: StoreWriter, engine: sa.Engine, tmp_path: Path
) -> None:
    units = [window(str(i), 10, 50, 0.1) for i in range(5_000)]
    writer.commit_update(CLUSTER, T0, units, None, None, T0)

    with writing_meanwhile(data) as written:
        before = written[0]
        backup = writer.backup(tmp_path / "backups", NOW)
        assert written[0] >= before
    assert backup.name == ("ceems-20260301T123015Z" + (".pgdump" if data.url else ".db"))
    assert [p.name for p in backup.parent.iterdir()] == [backup.name]  # no temporary left

    with opened(backup, data) as copy:
        assert rows(copy, schema.units, "id") == rows(engine, schema.units, "id")
        assert rows(copy, schema.updates) == rows(engine, schema.updates)
        names = [r["name"] for r in rows(copy, schema.admin_users, "name")]
    # every row the other connection had committed at the snapshot, and none half-written
    assert names == [f"bg{i:06d}" for i in range(len(names))]
    assert before <= len(names) <= written[0]


def test_only_the_newest_backups_are_kept(
    data: DataConfig, writer: StoreWriter, tmp_path: Path
) -> None:
    writer.commit_update(CLUSTER, T0, [window("1", 1, 1, 1)], None, None, T0)
    made = [writer.backup(tmp_path / "b", NOW + timedelta(hours=h), keep=3) for h in range(5)]
    assert sorted((tmp_path / "b").iterdir()) == made[2:]


def test_backup_needs_an_aware_time(writer: StoreWriter, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="has no time zone"):
        writer.backup(tmp_path / "b", datetime(2026, 1, 1))
    assert not (tmp_path / "b").exists()


def test_backup_to_an_unusable_directory_is_a_store_error(
    writer: StoreWriter, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot create the backup directory"):
        writer.backup(tmp_path / "file" / "backups", NOW)


def test_postgresql_backup_without_pg_dump_is_a_store_error(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reset_postgresql(postgres_url)
    engine = create_store_engine(DataConfig(url=postgres_url))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    try:
        with (
            StoreWriter(engine) as writer,
            pytest.raises(StoreError, match="pg_dump is not installed"),
        ):
            writer.backup(tmp_path, NOW)
    finally:
        engine.dispose()
