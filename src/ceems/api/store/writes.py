"""The store's one writer: each fetch window's units, usage and checkpoint in one transaction."""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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
from ceems.api.store.bulk import (
    WRITE_CHUNK,
    chunks,
    delete_rows,
    fetch_rows,
    one_of,
    replace_rows,
    upsert,
    upsert_statement,
)
from ceems.api.store.checkpoint import Checkpointer
from ceems.api.store.engine import dumps_json, loads_json
from ceems.api.store.errors import CheckpointError, StoreError, StoreInputError
from ceems.api.store.rows import (
    MAX_TS,
    UNIT_COLUMNS,
    check_names,
    check_text,
    check_unit,
    describe_unencodable,
    fresh_unit_params,
    name_row,
    unit_params,
)
from ceems.api.store.worker import ConnectionWorker

log = logging.getLogger(__name__)

# New units in one commit from which PostgreSQL's statistics of units are refreshed.
ANALYZE_AFTER_NEW_UNITS = 1_000
UNIT_KEY = ("cluster_id", "uuid", "created_at_ts")
_FIGURE_COLUMNS = ("total_time_seconds", *METRIC_FIELDS)
USAGE_KEY = ("cluster_id", "username", "project")
# The usage and daily_usage columns _add_usage writes, in the tables' order (see UNIT_COLUMNS).
_USAGE_COLUMNS = (
    "cluster_id", "resource_manager", "project", "username", "groupname", "num_units",
    *_FIGURE_COLUMNS, "num_updates", "last_updated_at_ts",
)  # fmt: skip
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
        self._pool: ThreadPoolExecutor | None = None
        self._checkpointer = Checkpointer(engine) if engine.dialect.name == "sqlite" else None

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
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            if self._checkpointer is not None:
                self._checkpointer.stop()

    def _executor(self) -> ThreadPoolExecutor:
        """The thread that runs a commit's inserts (see BackgroundWrites); held under _lock."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="ceems-store-writer")
        return self._pool

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
            with _collector_paused():  # resumed once the window's objects are gone
                new_units = self._store_units(conn, cluster_id, units, window_end_ms, now_ms)
            _refresh_statistics(conn, new_units)
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
        if self._checkpointer is not None:
            self._checkpointer.request()
        log.info(
            "update committed",
            extra={
                "cluster_id": cluster_id,
                "window_end_ms": window_end_ms,
                "units": len(units),
                "new_units": new_units,
                "duration_ms": round((time.monotonic() - started) * 1000),
            },
        )

    def _store_units(
        self,
        conn: sa.Connection,
        cluster_id: str,
        units: Sequence[Unit],
        window_end_ms: int,
        now_ms: int,
    ) -> int:
        """Check and upsert the window's units, add them to usage; returns how many are new."""
        day_ms = utc_day_ms(window_end_ms)
        # The worker reads and writes while this thread checks units and builds rows.
        with ConnectionWorker(conn, self._executor()) as worker:
            # both reads go first, and meet units not checked yet: a check's error is then the
            # one raised, the worker's discarded
            stored_units = worker.call(lambda c: _stored_unit_rows(c, cluster_id, units))
            stored_usage = worker.call(lambda c: _stored_usage_rows(c, cluster_id, units, day_ms))
            try:
                known = _decode_units(worker.result(stored_units))
            except Exception:
                for unit in units:  # a unit that fails its check explains the failure better
                    check_unit(cluster_id, unit)
                raise
            statement = upsert_statement(conn, schema.units, UNIT_KEY, UNIT_COLUMNS)
            seen: list[tuple[Unit, bool]] = []
            for batch in _unit_rows(cluster_id, units, known, now_ms, seen):
                worker.insert(statement, batch)
            deltas = usage_deltas(seen)
            windows = {group: delta.figures() for group, delta in deltas.items()}
            usage_rows, day_rows = worker.result(stored_usage)
            usage, days = _decode_usage(usage_rows, deltas), _decode_usage(day_rows, deltas)
            for table, stored_rows, day in (
                (schema.usage, usage, None),
                (schema.daily_usage, days, day_ms),
            ):
                names, key = _usage_layout(day)
                rows = _usage_rows(cluster_id, deltas, windows, stored_rows, now_ms, day)
                worker.insert(upsert_statement(conn, table, key, names), rows)
        return sum(new for _, new in seen)

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


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector during one commit.

    A commit builds a few objects per unit (rows, tuples, maps), keeps them until it ends,
    and they hold no reference cycles: reference counting frees them. Meanwhile the
    collector's passes kept re-scanning them, a tenth of a large commit's time. Other threads'
    cycles wait for the next pass, after the commit.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _checkpoint(conn: sa.Connection, cluster_id: str) -> int | None:
    table = schema.updates
    query = sa.select(table.c.last_update_ts).where(table.c.cluster_id == cluster_id)
    value = conn.execute(query).scalar_one_or_none()
    return None if value is None else int(value)


def _unit_rows(
    cluster_id: str,
    units: Sequence[Unit],
    known: dict[tuple[str, int], tuple[Figures, int, dict[str, str]]],
    now_ms: int,
    seen: list[tuple[Unit, bool]],
) -> Iterator[list[tuple[Any, ...]]]:
    """Check the units and make their rows to upsert (UNIT_COLUMNS values), WRITE_CHUNK at a
    time; each unit goes to `seen` with whether it is new (not stored, not earlier here).

    A unit listed twice in one window accumulates twice: its second row, with both windows'
    figures, comes later and overwrites the first.
    """
    # units new to the store and so far seen once in this window: their row is the unit's own
    fresh: dict[tuple[str, int], Unit] = {}
    rows: list[tuple[Any, ...]] = []
    for unit in units:
        check_unit(cluster_id, unit)
        key = (unit.uuid, unit.created_at_ts)
        before = known.get(key)
        seen.append((unit, before is None and key not in fresh))
        if before is None:
            first = fresh.pop(key, None)
            if first is None and not any("," in value for value in unit.provenance.values()):
                fresh[key] = unit
                rows.append(fresh_unit_params(unit, now_ms))
            elif first is not None:
                before = (_figures_of(first), 1, merge_provenance({}, first.provenance))
        if before is not None or key not in fresh:
            figures, num_updates, origin = before if before is not None else (Figures(), 0, {})
            figures.add(unit.total_time_seconds, unit.metrics)
            origin = merge_provenance(origin, unit.provenance)
            known[key] = (figures, num_updates + 1, origin)
            unit = replace(unit, provenance=origin)
            rows.append(unit_params(unit, figures.columns(), num_updates + 1, now_ms))
        if len(rows) >= WRITE_CHUNK:
            yield rows
            rows = []
    if rows:
        yield rows


def _figures_of(unit: Unit) -> Figures:
    figures = Figures()
    figures.add(unit.total_time_seconds, unit.metrics)
    return figures


def _stored_unit_rows(
    conn: sa.Connection, cluster_id: str, units: Sequence[Unit]
) -> list[Sequence[Any]]:
    """The stored rows of those of `units` already stored (decoded by _decode_units).

    Run by the connection worker: building Figures is left to the writer's thread, since
    Python work on the worker would only take turns with it for the GIL.
    """
    table = schema.units
    names = ("uuid", "created_at_ts", "num_updates", "provenance", *_FIGURE_COLUMNS)
    found: list[Sequence[Any]] = []
    for listed in one_of(conn, table.c.uuid, {u.uuid for u in units}):
        found += fetch_rows(conn, table, names, table.c.cluster_id == cluster_id, listed)
    return found


def _decode_units(
    found: list[Sequence[Any]],
) -> dict[tuple[str, int], tuple[Figures, int, dict[str, str]]]:
    """Stored figures, update count and provenance by (uuid, created_at_ts)."""
    known: dict[tuple[str, int], tuple[Figures, int, dict[str, str]]] = {}
    for uuid, created_at_ts, num_updates, provenance, *stored in found:
        origin = provenance if isinstance(provenance, dict) else loads_json(provenance or "{}")
        known[(uuid, created_at_ts)] = (Figures.from_json(stored), num_updates, origin)
    return known


def _refresh_statistics(conn: sa.Connection, new_units: int) -> None:
    """ANALYZE units on PostgreSQL after a large insert, so the next lookups use the index.

    Without statistics, or with ones from before the insert, the planner takes `uuid IN
    (500 values)` to match most rows and scans the whole table for every chunk: the commit
    after a first large one ran at 500 units/s instead of thousands. Autovacuum would analyze
    only a minute or more later. SQLite's planner prefers the index without statistics.
    """
    if conn.dialect.name == "postgresql" and new_units >= ANALYZE_AFTER_NEW_UNITS:
        conn.exec_driver_sql("ANALYZE units")


StoredUsage = dict[tuple[str, str], tuple[int, int, Figures]]


def _stored_usage_rows(
    conn: sa.Connection, cluster_id: str, units: Sequence[Unit], day_ms: int
) -> tuple[list[Sequence[Any]], list[Sequence[Any]]]:
    """The usage rows and the day's daily_usage rows of the units' users (see _decode_usage)."""
    users = {unit.username for unit in units}
    return (
        _usage_rows_of(conn, schema.usage, cluster_id, users, None),
        _usage_rows_of(conn, schema.daily_usage, cluster_id, users, day_ms),
    )


def _usage_rows_of(
    conn: sa.Connection, table: sa.Table, cluster_id: str, users: set[str], day_ms: int | None
) -> list[Sequence[Any]]:
    where = [table.c.cluster_id == cluster_id]
    if day_ms is not None:
        where.append(table.c.day_ts == day_ms)
    names = ("username", "project", "num_units", "num_updates", *_FIGURE_COLUMNS)
    found: list[Sequence[Any]] = []
    # by user (a plain IN); rows of groups the window lacks are dropped when decoding
    for listed in one_of(conn, table.c.username, users):
        found += fetch_rows(conn, table, names, *where, listed)
    return found


def _decode_usage(found: list[Sequence[Any]], groups: Collection[tuple[str, str]]) -> StoredUsage:
    """Stored num_units, num_updates and figures of the (user, project) rows of `groups`."""
    stored: StoredUsage = {}
    for username, project, num_units, num_updates, *maps in found:
        if (username, project) in groups:
            stored[(username, project)] = (num_units, num_updates, Figures.from_json(maps))
    return stored


def _usage_layout(day_ms: int | None) -> tuple[list[str], tuple[str, ...]]:
    """The columns _usage_rows gives and the conflict key, of usage or (with a day) daily."""
    if day_ms is None:
        return list(_USAGE_COLUMNS), USAGE_KEY
    return [*_USAGE_COLUMNS, "day_ts"], (*USAGE_KEY, "day_ts")


def _usage_rows(
    cluster_id: str,
    deltas: dict[tuple[str, str], UsageDelta],
    windows: dict[tuple[str, str], Figures],
    stored: StoredUsage,
    now_ms: int,
    day_ms: int | None,
) -> list[tuple[Any, ...]]:
    """usage (or daily_usage) rows after adding `deltas`, whose figures are `windows`, to the
    `stored` ones."""
    rows = []
    for (username, project), delta in deltas.items():
        num_units, num_updates, figures = stored.get((username, project), (0, 0, Figures()))
        window = windows[(username, project)]
        figures.add(window.times, window.metrics)
        lifetime = figures.columns()
        values = [
            cluster_id, delta.resource_manager, project, username, delta.groupname,
            num_units + delta.num_units, *[dumps_json(lifetime[name]) for name in _FIGURE_COLUMNS],
            num_updates + delta.num_updates, now_ms,
        ]  # fmt: skip
        if day_ms is not None:
            values.append(day_ms)
        rows.append(tuple(values))
    return rows


def _reason(err: sa.exc.SQLAlchemyError) -> str:
    # the driver's own message, without SQLAlchemy's echo of the statement and parameters
    orig = getattr(err, "orig", None)
    text = str(orig if orig is not None else err).strip()
    return text.splitlines()[0] if text else type(err).__name__
