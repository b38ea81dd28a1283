"""Writes of many rows: dialect upserts and executemany in chunks, values encoded once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ceems.api.store.engine import dumps_json
from ceems.api.store.errors import StoreError

# Rows per executemany call, so memory stays bounded however many units a window has.
WRITE_CHUNK = 2_000

T = TypeVar("T")


def upsert(
    conn: sa.Connection, table: sa.Table, key: Sequence[str], rows: list[dict[str, Any]]
) -> None:
    """Insert rows, or overwrite the non-key columns of those whose key exists."""
    if not rows:
        return
    insert = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)
    changed = {name: insert.excluded[name] for name in rows[0] if name not in key}
    statement = insert.on_conflict_do_update(index_elements=list(key), set_=changed)
    execute_many(conn, table, statement, rows)


def execute_many(
    conn: sa.Connection, table: sa.Table, statement: sa.Insert, rows: list[dict[str, Any]]
) -> None:
    """Run an INSERT for every row with the driver's executemany, in WRITE_CHUNK batches.

    SQLAlchemy compiles the statement once, but its per-row parameter processing, which
    is half of a large commit's time, is skipped: JSON columns are encoded here instead, the
    only processing these tables' values need (ints, strings and booleans pass as they are).
    """
    names = list(rows[0])
    compiled = statement.compile(dialect=conn.dialect, column_keys=names, for_executemany=True)
    binds = list(compiled.positiontup or compiled.params)
    missing = set(binds) - set(names)
    if missing:  # a column with a default not given: only SQLAlchemy's execution fills those
        raise StoreError(f"rows for {table.name} lack columns {', '.join(sorted(missing))}")
    encode = [
        (name, isinstance(table.c[name].type, sa.JSON) if name in table.c else False)
        for name in binds
    ]
    sql = str(compiled)
    for batch in chunks(rows, WRITE_CHUNK):
        if compiled.positional:
            params: list[Any] = [
                tuple([dumps_json(row[n]) if json else row[n] for n, json in encode])
                for row in batch
            ]
        else:
            params = [
                {n: dumps_json(row[n]) if json else row[n] for n, json in encode} for row in batch
            ]
        conn.exec_driver_sql(sql, params)


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
