"""The store's one writer: each fetch window's units, usage and checkpoint in one transaction."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa

from ceems.api.models import METRIC_FIELDS, Project, Unit, User, merge_provenance
from ceems.api.store import schema
from ceems.api.store.accumulate import DAY_MS, Figures, UsageDelta, usage_deltas, utc_day_ms
from ceems.api.store.backup import BACKUP_KEEP, backup_postgresql, backup_sqlite
from ceems.api.store.bulk import WRITE_CHUNK, chunks, delete_rows, replace_rows, upsert
from ceems.api.store.engine import loads_json
from ceems.api.store.errors import CheckpointError, StoreError, StoreInputError
from ceems.api.store.rows import (
    MAX_TS,
    check_names,
    check_text,
    check_unit,
    describe_unencodable,
    name_row,
    unit_row,
)

log = logging.getLogger(__name__)

# Values per `IN (...)` list: far below SQLite's limit of 32766 bound variables.
IN_CHUNK = 500
# New units in one commit from which PostgreSQL's statistics of units are refreshed.
ANALYZE_AFTER_NEW_UNITS = 1_000
UNIT_KEY = ("cluster_id", "uuid", "created_at_ts")
_FIGURE_COLUMNS = ("total_time_seconds", *METRIC_FIELDS)
USAGE_KEY = ("cluster_id", "username", "project")
_MAX_CLUSTER_ID = 128
_MAX_ADMIN_NAME = 256
_MAX_ADMIN_SOURCE = 32


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """Rows purge deleted, per table."""

    units: int
    daily_usage: int
    users: int
    projects: int
    memberships: int


class StoreWriter:
    """Owns the store's only write connection (DESIGN §5); calls from any thread take turns."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._conn: sa.Connection | None = None

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Give the write connection back; a later call opens a new one."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def last_update(self, cluster_id: str) -> int | None:
        """The end (epoch ms) of the last window stored for the cluster; None before the first."""
        with self._transaction(f"reading the checkpoint of cluster {cluster_id!r}") as conn:
            return _checkpoint(conn, cluster_id)

    def commit_update(
        self,
        cluster_id: str,
        window_end_ms: int,
        units: Sequence[Unit],
        users: Sequence[User] | None,
        projects: Sequence[Project] | None,
        now_ms: int,
    ) -> None:
        """Store one fetch window of a cluster, all or nothing.

        Units are upserted by (cluster_id, uuid, created_at_ts): metadata replaced, times and
        metric maps accumulated. The same increments go to usage and to the daily_usage row
        of the window's UTC day. Users and projects are replaced when given (None leaves
        them); the cluster's memberships then become the pairs the given lists name. The
        checkpoint moves to window_end_ms, which must be later than the stored one: a window
        stored twice would be counted twice.
        """
        started = time.monotonic()
        what = f"update of cluster {cluster_id!r} to {window_end_ms}"
        check_text(what, "cluster_id", cluster_id, _MAX_CLUSTER_ID)
        for name, value in (("window_end_ms", window_end_ms), ("now_ms", now_ms)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TS:
                raise StoreInputError(f"{what}: {name} = {value!r} is not epoch milliseconds")
        for unit in units:
            check_unit(cluster_id, unit)
        pairs: set[tuple[str, str]] | None = None
        if users is not None or projects is not None:
            pairs = set()
            pairs.update(check_names(cluster_id, "user", users or ()))
            pairs.update(check_names(cluster_id, "project", projects or ()))

        def diagnose() -> str | None:
            return describe_unencodable(units, users or (), projects or ())

        with self._transaction(what, diagnose) as conn:
            stored = _checkpoint(conn, cluster_id)
            if stored is not None and window_end_ms <= stored:
                raise CheckpointError(
                    f"cluster {cluster_id!r}: the window ending at {window_end_ms} is not after"
                    f" the stored checkpoint {stored}; storing it would count it twice"
                )
            rows, seen = _merge_units(conn, cluster_id, units, now_ms)
            upsert(conn, schema.units, UNIT_KEY, rows)
            _refresh_statistics(conn, sum(new for _, new in seen))
            deltas = usage_deltas(seen)
            _add_usage(conn, schema.usage, cluster_id, deltas, now_ms, None)
            _add_usage(
                conn, schema.daily_usage, cluster_id, deltas, now_ms, utc_day_ms(window_end_ms)
            )
            if users is not None:
                named = [name_row(u, now_ms) for u in users]
                replace_rows(conn, schema.users, cluster_id, named)
            if projects is not None:
                replace_rows(
                    conn, schema.projects, cluster_id, [name_row(p, now_ms) for p in projects]
                )
            if pairs is not None:
                members = [
                    {
                        "cluster_id": cluster_id,
                        "username": user,
                        "project": project,
                        "last_updated_at_ts": now_ms,
                    }
                    for user, project in sorted(pairs)
                ]
                replace_rows(conn, schema.memberships, cluster_id, members)
            checkpoint = {
                "cluster_id": cluster_id,
                "last_update_ts": window_end_ms,
                "num_units": len(units),
            }
            upsert(conn, schema.updates, ("cluster_id",), [checkpoint])
        log.info(
            "update committed",
            extra={
                "cluster_id": cluster_id,
                "window_end_ms": window_end_ms,
                "units": len(rows),
                "new_units": sum(new for _, new in seen),
                "duration_ms": round((time.monotonic() - started) * 1000),
            },
        )

    def sync_admins(self, source: str, names: Iterable[str], now_ms: int | None = None) -> None:
        """Make `names` the admins from `source` ("config", "grafana"), replacing its old list."""
        wanted = sorted(set(names))
        check_text("admin source", "source", source, _MAX_ADMIN_SOURCE)
        for name in wanted:
            check_text(f"admin from {source!r}", "name", name, _MAX_ADMIN_NAME)
        stamp = int(time.time() * 1000) if now_ms is None else now_ms
        table = schema.admin_users
        with self._transaction(f"sync of admins from {source!r}") as conn:
            conn.execute(table.delete().where(table.c.source == source))
            rows = [{"name": n, "source": source, "last_updated_at_ts": stamp} for n in wanted]
            for batch in chunks(rows, WRITE_CHUNK):
                conn.execute(table.insert(), batch)

    def purge(self, retention: timedelta, now_ms: int) -> PurgeCounts:
        """Delete what is older than `retention`: ended units, days of usage, stale names."""
        if retention <= timedelta(0):
            raise StoreInputError(f"retention must be positive, got {retention}")
        cutoff = now_ms - int(retention.total_seconds() * 1000)
        with self._transaction("purge") as conn:
            units = schema.units.c
            ended = sa.and_(units.ended_at_ts > 0, units.ended_at_ts < cutoff)
            counts = PurgeCounts(
                units=delete_rows(conn, schema.units, ended),
                # a day goes once all of it is older than the cutoff
                daily_usage=delete_rows(
                    conn, schema.daily_usage, schema.daily_usage.c.day_ts <= cutoff - DAY_MS
                ),
                users=delete_rows(conn, schema.users, schema.users.c.last_updated_at_ts < cutoff),
                projects=delete_rows(
                    conn, schema.projects, schema.projects.c.last_updated_at_ts < cutoff
                ),
                memberships=delete_rows(
                    conn, schema.memberships, schema.memberships.c.last_updated_at_ts < cutoff
                ),
            )
        log.info("store purged", extra={"cutoff_ms": cutoff, **asdict(counts)})
        return counts

    def backup(self, dest_dir: Path, now: datetime, keep: int = BACKUP_KEEP) -> Path:
        """An online, consistent copy in dest_dir, keeping the newest `keep`; returns its path."""
        started = time.monotonic()
        if self._engine.dialect.name == "postgresql":
            path = backup_postgresql(self._engine.url, dest_dir, now, keep)
        else:
            # a connection of its own: a WAL reader, so the writer is not held up meanwhile
            with self._engine.connect() as conn:
                raw = conn.connection.driver_connection
                if not isinstance(raw, sqlite3.Connection):
                    raise StoreError(f"cannot back up a {self._engine.dialect.name} store")
                path = backup_sqlite(raw, dest_dir, now, keep)
        log.info(
            "store backed up",
            extra={"path": str(path), "duration_ms": round((time.monotonic() - started) * 1000)},
        )
        return path

    @contextmanager
    def _transaction(
        self, what: str, diagnose: Callable[[], str | None] | None = None
    ) -> Iterator[sa.Connection]:
        with self._lock:
            if self._conn is None:
                try:
                    self._conn = self._engine.connect()
                except sa.exc.DBAPIError as err:
                    raise StoreError(f"{what}: cannot connect: {_reason(err)}") from err
            try:
                with self._conn.begin():
                    yield self._conn
            except StoreError:
                raise
            except (sa.exc.SQLAlchemyError, TypeError, ValueError, OverflowError) as err:
                # the transaction is rolled back: say which input broke it, if one did
                problem = diagnose() if diagnose is not None else None
                if problem is not None:
                    raise StoreInputError(f"{what}: {problem}; nothing was stored") from err
                if isinstance(err, sa.exc.SQLAlchemyError):
                    raise StoreError(f"{what} failed, nothing was stored: {_reason(err)}") from err
                raise


def _checkpoint(conn: sa.Connection, cluster_id: str) -> int | None:
    table = schema.updates
    query = sa.select(table.c.last_update_ts).where(table.c.cluster_id == cluster_id)
    value = conn.execute(query).scalar_one_or_none()
    return None if value is None else int(value)


def _merge_units(
    conn: sa.Connection, cluster_id: str, units: Sequence[Unit], now_ms: int
) -> tuple[list[dict[str, Any]], list[tuple[Unit, bool]]]:
    """Rows to upsert, and each unit paired with whether it is new to the store."""
    table = schema.units
    # JSON read as it comes from the driver and decoded here: SQLAlchemy's result processing
    # would add two calls per value, and an update reads thirteen per unit
    columns = [
        table.c.uuid,
        table.c.created_at_ts,
        table.c.num_updates,
        sa.type_coerce(table.c.provenance, sa.Text),
        *(sa.type_coerce(table.c[name], sa.Text) for name in _FIGURE_COLUMNS),
    ]
    known: dict[tuple[str, int], tuple[Figures, int, dict[str, str]]] = {}
    for chunk in chunks(sorted({u.uuid for u in units}), IN_CHUNK):
        query = sa.select(*columns).where(table.c.cluster_id == cluster_id, table.c.uuid.in_(chunk))
        for uuid, created_at_ts, num_updates, provenance, *stored in conn.execute(query):
            origin = provenance if isinstance(provenance, dict) else loads_json(provenance or "{}")
            known[(uuid, created_at_ts)] = (Figures.from_json(stored), num_updates, origin)
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    seen: list[tuple[Unit, bool]] = []
    for unit in units:
        key = (unit.uuid, unit.created_at_ts)
        before = known.get(key)
        figures, num_updates, origin = before if before is not None else (Figures(), 0, {})
        figures.add(unit.total_time_seconds, unit.metrics)
        origin = merge_provenance(origin, unit.provenance)
        # a unit listed twice in one window accumulates twice, into one row
        known[key] = (figures, num_updates + 1, origin)
        unit = replace(unit, provenance=origin)
        rows[key] = unit_row(unit, figures.columns(), num_updates + 1, now_ms)
        seen.append((unit, before is None))
    return list(rows.values()), seen


def _refresh_statistics(conn: sa.Connection, new_units: int) -> None:
    """ANALYZE units on PostgreSQL after a large insert, so the next lookups use the index.

    Without statistics, or with ones from before the insert, the planner takes `uuid IN
    (500 values)` to match most rows and scans the whole table for every chunk: the commit
    after a first large one ran at 500 units/s instead of thousands. Autovacuum would analyze
    only a minute or more later. SQLite's planner prefers the index without statistics.
    """
    if conn.dialect.name == "postgresql" and new_units >= ANALYZE_AFTER_NEW_UNITS:
        conn.exec_driver_sql("ANALYZE units")


def _add_usage(
    conn: sa.Connection,
    table: sa.Table,
    cluster_id: str,
    deltas: dict[tuple[str, str], UsageDelta],
    now_ms: int,
    day_ms: int | None,
) -> None:
    where = [table.c.cluster_id == cluster_id]
    if day_ms is not None:
        where.append(table.c.day_ts == day_ms)
    stored: dict[tuple[str, str], sa.RowMapping] = {}
    pair = sa.tuple_(table.c.username, table.c.project)
    for chunk in chunks(list(deltas), IN_CHUNK // 2):
        for found in conn.execute(sa.select(table).where(*where, pair.in_(chunk))).mappings():
            stored[(found["username"], found["project"])] = found
    rows = []
    for (username, project), delta in deltas.items():
        row = stored.get((username, project))
        figures = Figures.from_row(row) if row is not None else Figures()
        window = delta.figures()
        figures.add(window.times, window.metrics)
        values = {
            "cluster_id": cluster_id,
            "resource_manager": delta.resource_manager,
            "project": project,
            "username": username,
            "groupname": delta.groupname,
            "num_units": (row["num_units"] if row is not None else 0) + delta.num_units,
            "num_updates": (row["num_updates"] if row is not None else 0) + delta.num_updates,
            "last_updated_at_ts": now_ms,
            **figures.columns(),
        }
        if day_ms is not None:
            values["day_ts"] = day_ms
        rows.append(values)
    upsert(conn, table, (*USAGE_KEY, "day_ts") if day_ms is not None else USAGE_KEY, rows)


def _reason(err: sa.exc.SQLAlchemyError) -> str:
    # the driver's own message, without SQLAlchemy's echo of the statement and parameters
    orig = getattr(err, "orig", None)
    text = str(orig if orig is not None else err).strip()
    return text.splitlines()[0] if text else type(err).__name__
