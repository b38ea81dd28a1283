"""The store a test runs on: SQLite, and a real PostgreSQL (tests/api/store and the writer)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from ceems.api.config import DataConfig

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
