"""Store fixtures: every test runs on SQLite and on a real PostgreSQL (`data`, tests/api)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from ceems.api.config import DataConfig
from ceems.api.store.engine import create_store_engine
from ceems.api.store.migrate import migrate
from ceems.api.store.writes import StoreWriter


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
