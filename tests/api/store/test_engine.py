"""Engines: SQLite in WAL mode under data.path, PostgreSQL at data.url, read-only readers."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from ceems.api.config import DataConfig
from ceems.api.store import schema
from ceems.api.store.engine import create_store_engine, read_only_engine
from ceems.api.store.errors import StoreError
from ceems.api.store.migrate import migrate
from ceems.api.store.writes import StoreWriter
from tests.api.store.factory import CLUSTER, T0, window
from tests.conftest import free_port


def test_sqlite_store_is_wal_with_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    data = DataConfig(path=str(tmp_path / "new" / "dir"))
    engine = create_store_engine(data)
    try:
        with engine.connect() as conn:
            pragma = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        engine.dispose()
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 1,
        "foreign_keys": 1,
        "busy_timeout": 5000,
    }
    assert (tmp_path / "new" / "dir" / "ceems.db").is_file()


def test_read_only_engine_cannot_write(data: DataConfig, engine: sa.Engine) -> None:
    migrate(engine)
    reader = read_only_engine(data)
    try:
        with reader.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(schema.units)).scalar() == 0
            with pytest.raises(sa.exc.DBAPIError, match=r"read-?only"):
                conn.execute(schema.admin_users.insert().values(name="x", source="y"))
    finally:
        reader.dispose()


def test_a_reader_in_a_transaction_does_not_block_the_writer(
    data: DataConfig, writer: StoreWriter
) -> None:
    reader = read_only_engine(data)
    try:
        with reader.connect() as conn, conn.begin():
            assert conn.execute(sa.select(schema.units)).all() == []
            writer.commit_update(CLUSTER, T0, [window("1", 1, 1, 1)], None, None, T0)
            # the reader keeps its snapshot ...
            assert conn.execute(sa.select(schema.units)).all() == []
        # ... and sees the commit in its next transaction
        with reader.connect() as conn:
            assert len(conn.execute(sa.select(schema.units)).all()) == 1
    finally:
        reader.dispose()


@pytest.mark.parametrize("path", ["/proc/ceems-store", "{tmp}/a-file/data"])
def test_an_unusable_data_directory_is_a_store_error(tmp_path: Path, path: str) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(StoreError, match="cannot create the data directory"):
        create_store_engine(DataConfig(path=path.format(tmp=tmp_path)))


def test_reading_a_store_that_does_not_exist_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no store at .*ceems.db"):
        read_only_engine(DataConfig(path=str(tmp_path)))


def test_unreachable_postgresql_is_a_store_error_without_the_password() -> None:
    url = f"postgresql+psycopg://ceems:s3cret@127.0.0.1:{free_port()}/ceems"
    with pytest.raises(StoreError, match=r"cannot open PostgreSQL at .*127.0.0.1") as caught:
        create_store_engine(DataConfig(url=url))
    assert "s3cret" not in str(caught.value)
    with pytest.raises(StoreError, match="cannot open PostgreSQL"):
        read_only_engine(DataConfig(url=url))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:p@localhost/db", "only PostgreSQL is supported, not 'mysql'"),
        ("postgresql+asyncpg://u:p@localhost/db", "driver 'asyncpg' is not installed"),
        ("not a url", "data.url is not a database URL"),
    ],
)
def test_urls_other_than_postgresql_are_refused(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        create_store_engine(DataConfig(url=url))


@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://"])
def test_a_plain_postgresql_url_uses_psycopg(postgres_url: str, scheme: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", scheme)
    engine = create_store_engine(DataConfig(url=plain))
    try:
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()
