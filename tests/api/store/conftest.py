"""Store fixtures: every test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ceems.api.config import DataConfig
from ceems.api.store.engine import create_store_engine
from ceems.api.store.migrate import migrate
from ceems.api.store.writes import StoreWriter

ENGINES = ["sqlite", "postgresql"]


def reset_postgresql(url: str) -> None:
    """Empty the test database: every test starts from nothing, as on SQLite."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    finally:
        engine.dispose()


@pytest.fixture(params=ENGINES)
def data(request: pytest.FixtureRequest, tmp_path: Path) -> DataConfig:
    """The `data` config of an empty store: SQLite under tmp_path, or the test PostgreSQL."""
    if request.param == "sqlite":
        return DataConfig(path=str(tmp_path / "data"))
    url = request.getfixturevalue("postgres_url")
    reset_postgresql(url)
    return DataConfig(url=url)


@pytest.fixture
def engine(data: DataConfig) -> Iterator[sa.Engine]:
    """The writer's engine on an empty, unmigrated database."""
    engine = create_store_engine(data)
    yield engine
    engine.dispose()


@pytest.fixture
def writer(engine: sa.Engine) -> Iterator[StoreWriter]:
    """A writer on a database migrated to the latest version."""
    migrate(engine)
    with StoreWriter(engine) as writer:
        yield writer
