"""Bring a store's schema to a version with the numbered migrations, one transaction each."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from ceems.api.store import migrations, schema
from ceems.api.store.errors import MigrationError

log = logging.getLogger(__name__)

# Which migrations a database has had; kept apart from schema.metadata, which the migrations build.
schema_migrations = sa.Table(
    "schema_migrations",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.BigInteger, nullable=False),  # epoch ms
)

# PostgreSQL advisory lock key ("ceems" in ASCII): two servers starting at once take turns.
_LOCK_KEY = 0x6365656D73
_MODULE = re.compile(r"m(\d{4})_(\w+)")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change and its inverse."""

    version: int
    name: str
    upgrade: Callable[[sa.Connection], None]
    downgrade: Callable[[sa.Connection], None]


def load_migrations() -> list[Migration]:
    """The migrations this code ships, in order; a gap in the numbers is a packaging error."""
    found = []
    for info in pkgutil.iter_modules(migrations.__path__):
        match = _MODULE.fullmatch(info.name)
        if match is None:
            continue
        module = importlib.import_module(f"{migrations.__name__}.{info.name}")
        found.append(Migration(int(match[1]), match[2], module.upgrade, module.downgrade))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations must be numbered 1, 2, ... without gaps, got {versions}")
    return found


def latest_version() -> int:
    """The schema version this code writes (schema.py describes it)."""
    return len(load_migrations())


def current_version(engine: sa.Engine) -> int:
    """The version a database is at; 0 when it has never been migrated."""
    with engine.connect() as conn:
        return _version(conn)


def migrate(engine: sa.Engine, target: int | None = None) -> int:
    """Upgrade or downgrade to `target` (default: the latest); returns the version reached.

    Each migration runs in its own transaction together with its schema_migrations row, so a
    failing one leaves the database at the version before it. A database newer than this code
    is refused rather than guessed at.
    """
    steps = load_migrations()
    latest = len(steps)
    goal = latest if target is None else target
    if not 0 <= goal <= latest:
        raise MigrationError(f"no schema version {goal}: this code knows versions 0 to {latest}")
    while True:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
            schema_migrations.create(conn, checkfirst=True)
            current = _version(conn)
            if current > latest:
                raise MigrationError(
                    f"the database schema is at version {current}, newer than this code knows"
                    f" (version {latest}): run a newer ceems, or downgrade the database with it"
                )
            if current == goal:
                return current
            if current == 0:
                _refuse_unmanaged(conn)
            if current < goal:
                step, direction = steps[current], "up"
            else:
                step, direction = steps[current - 1], "down"
            _apply(conn, step, direction)
        log.info(
            "schema migrated",
            extra={"version": step.version, "migration": step.name, "direction": direction},
        )


def _apply(conn: sa.Connection, step: Migration, direction: str) -> None:
    try:
        if direction == "up":
            step.upgrade(conn)
            conn.execute(
                schema_migrations.insert().values(
                    version=step.version, applied_at=int(time.time() * 1000)
                )
            )
        else:
            step.downgrade(conn)
            conn.execute(
                schema_migrations.delete().where(schema_migrations.c.version == step.version)
            )
    except sa.exc.SQLAlchemyError as err:
        raise MigrationError(
            f"migration {step.version:04d} ({step.name}) {direction} failed: {err}"
        ) from err


def _version(conn: sa.Connection) -> int:
    if not sa.inspect(conn).has_table(schema_migrations.name):
        return 0
    return int(
        conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(schema_migrations.c.version), 0))
        ).scalar_one()
    )


def _refuse_unmanaged(conn: sa.Connection) -> None:
    present = set(sa.inspect(conn).get_table_names()) & set(schema.metadata.tables)
    if present:
        raise MigrationError(
            f"the database has store tables ({', '.join(sorted(present))}) but no migration"
            " record: it was not created by migrate(); move it away or use another database"
        )
