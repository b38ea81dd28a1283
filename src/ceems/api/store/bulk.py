"""Writes of many rows: dialect upserts and executemany in chunks, values encoded once."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ceems.api.store.engine import dumps_json
from ceems.api.store.errors import StoreError

# Rows per executemany call, so memory stays bounded however many units a window has.
WRITE_CHUNK = 2_000

T = TypeVar("T")


# Values per `IN (...)` list where the dialect binds each: far below SQLite's parameter limit.
IN_CHUNK = 500


def one_of(
    conn: sa.Connection, column: sa.ColumnElement[str], values: Collection[str]
) -> list[sa.ColumnElement[bool]]:
    """Conditions `column IN (...)` that together cover `values`, one query each.

    On SQLite one condition reads them all from a JSON array: one bound parameter parsed in
    C, where an IN list of 500 values cost SQLAlchemy and the driver more than the lookups
    themselves. Elsewhere, IN lists of IN_CHUNK values.
    """
    ordered = sorted(values)
    if conn.dialect.name == "sqlite":
        listed = sa.func.json_each(orjson.dumps(ordered).decode()).table_valued("value")
        return [column.in_(sa.select(listed.c.value))]
    return [column.in_(chunk) for chunk in chunks(ordered, IN_CHUNK)]


def fetch_rows(
    conn: sa.Connection, table: sa.Table, names: Sequence[str], *where: sa.ColumnElement[bool]
) -> list[Sequence[Any]]:
    """The `names` columns of the rows matching `where`, JSON columns decoded.

    On SQLite the rows come back as one JSON array built by SQLite: a SELECT's rows each
    take the GIL back in sqlite3, so a thread reading thousands of them waited on the
    writer's thread for every row (a 40 ms read took 270 ms). One aggregate row is one step,
    and orjson decodes it, maps included, in one C call.
    """
    columns = [table.c[name] for name in names]
    if conn.dialect.name != "sqlite":
        return list(conn.execute(sa.select(*columns).where(*where)))
    values = [sa.func.json(c) if isinstance(c.type, sa.JSON) else c for c in columns]
    rows = sa.func.json_group_array(sa.func.json_array(*values))
    text = conn.execute(sa.select(sa.type_coerce(rows, sa.Text)).where(*where)).scalar_one()
    found: list[Sequence[Any]] = orjson.loads(text)
    return found


def upsert(
    conn: sa.Connection, table: sa.Table, key: Sequence[str], rows: list[dict[str, Any]]
) -> None:
    """Insert rows, or overwrite the non-key columns of those whose key exists."""
    if not rows:
        return
    names = list(rows[0])
    upsert_statement(conn, table, key, names).execute(conn, encode_rows(table, names, rows))


def execute_many(
    conn: sa.Connection, table: sa.Table, statement: sa.Insert, rows: list[dict[str, Any]]
) -> None:
    """Run an INSERT for every row with the driver's executemany, in WRITE_CHUNK batches."""
    names = list(rows[0])
    Prepared.of(conn, table, statement, names).execute(conn, encode_rows(table, names, rows))


def encode_rows(
    table: sa.Table, names: Sequence[str], rows: Sequence[dict[str, Any]]
) -> list[tuple[Any, ...]]:
    """Rows as value tuples in `names` order, JSON columns encoded."""
    json_columns = {n for n in names if n in table.c and isinstance(table.c[n].type, sa.JSON)}
    return [
        tuple([dumps_json(row[n]) if n in json_columns else row[n] for n in names]) for row in rows
    ]


def upsert_statement(
    conn: sa.Connection, table: sa.Table, key: Sequence[str], names: Sequence[str]
) -> Prepared:
    """The dialect's INSERT ... ON CONFLICT (key) DO UPDATE of the `names` columns."""
    insert = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)
    changed = {name: insert.excluded[name] for name in names if name not in key}
    statement = insert.on_conflict_do_update(index_elements=list(key), set_=changed)
    prepared = Prepared.of(conn, table, statement, names)
    if conn.dialect.name == "sqlite":
        return replace(prepared, multirow=MultiRowUpsert.of(conn, table, key, names))
    return prepared


# Bound parameters one SQLite statement may have (SQLITE_MAX_VARIABLE_NUMBER since 3.32).
SQLITE_MAX_PARAMETERS = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


@dataclass(frozen=True, slots=True)
class MultiRowUpsert:
    """An upsert of many rows per statement: `INSERT ... VALUES (...), (...) ON CONFLICT`.

    executemany takes the GIL back after every row it inserts, so a thread inserting rows
    and one building the next ran one after the other. One statement inserts hundreds of
    rows in a single sqlite3_step, which sqlite3 runs without the GIL. Rows repeating a key
    are applied in order, the later one winning, as with executemany (SQLite only:
    PostgreSQL refuses a statement that updates one row twice).
    """

    head: str
    group: str
    tail: str
    width: int  # values per row

    @classmethod
    def of(
        cls, conn: sa.Connection, table: sa.Table, key: Sequence[str], names: Sequence[str]
    ) -> MultiRowUpsert:
        quote = conn.dialect.identifier_preparer.quote
        changed = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in names if n not in key)
        return cls(
            head=f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) VALUES ",
            group="(" + ", ".join("?" * len(names)) + ")",
            tail=f" ON CONFLICT ({', '.join(quote(k) for k in key)}) DO UPDATE SET {changed}",
            width=len(names),
        )

    def rows_per_statement(self) -> int:
        return max(1, SQLITE_MAX_PARAMETERS // self.width)

    def sql(self, rows: int) -> str:
        return self.head + ", ".join([self.group] * rows) + self.tail

    def execute(self, conn: sa.Connection, params: Sequence[tuple[Any, ...]]) -> None:
        """Upsert the rows, as many per statement as SQLite's parameter limit allows."""
        size = self.rows_per_statement()
        full = self.sql(size)
        for batch in chunks(params, size):
            sql = full if len(batch) == size else self.sql(len(batch))
            conn.exec_driver_sql(sql, tuple(itertools.chain.from_iterable(batch)))


@dataclass(frozen=True, slots=True)
class Prepared:
    """An INSERT compiled once, run with the driver's executemany on value tuples.

    SQLAlchemy's per-row parameter processing, half of a large commit's time, is skipped:
    the caller encodes JSON columns, the only processing these tables' values need (ints,
    strings and booleans pass as they are).
    """

    sql: str
    names: tuple[str, ...]
    # the position in `names` of each of the statement's parameters; None: the same order
    order: tuple[int, ...] | None
    named: bool  # psycopg's %(name)s parameters rather than SQLite's ?
    # SQLite upserts: many rows per statement instead of executemany (see MultiRowUpsert)
    multirow: MultiRowUpsert | None = None

    @classmethod
    def of(
        cls, conn: sa.Connection, table: sa.Table, statement: sa.Insert, names: Sequence[str]
    ) -> Prepared:
        """Compile `statement` for rows of the `names` columns."""
        compiled = statement.compile(
            dialect=conn.dialect, column_keys=list(names), for_executemany=True
        )
        binds = list(compiled.positiontup or compiled.params)
        missing = set(binds) - set(names)
        if missing:  # a column with a default not given: only SQLAlchemy's execution fills it
            raise StoreError(f"rows for {table.name} lack columns {', '.join(sorted(missing))}")
        order = tuple(list(names).index(name) for name in binds)
        same = order == tuple(range(len(names)))
        return cls(str(compiled), tuple(names), None if same else order, not compiled.positional)

    def execute(self, conn: sa.Connection, params: Sequence[tuple[Any, ...]]) -> None:
        """Insert the rows, in WRITE_CHUNK batches."""
        if self.multirow is not None and self.order is None:
            self.multirow.execute(conn, params)
            return
        names, order = self.names, self.order
        for batch in chunks(params, WRITE_CHUNK):
            if self.named:
                conn.exec_driver_sql(self.sql, [dict(zip(names, v, strict=True)) for v in batch])
            elif order is not None:
                conn.exec_driver_sql(self.sql, [tuple([v[i] for i in order]) for v in batch])
            else:
                conn.exec_driver_sql(self.sql, list(batch))


def replace_rows(
    conn: sa.Connection, table: sa.Table, cluster_id: str, rows: list[dict[str, Any]]
) -> None:
    """Make `rows` the table's rows of one cluster."""
    conn.execute(table.delete().where(table.c.cluster_id == cluster_id))
    if rows:
        execute_many(conn, table, table.insert(), rows)


def delete_rows(conn: sa.Connection, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    """Delete the rows matching `where`; returns how many."""
    return conn.execute(table.delete().where(where)).rowcount


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
