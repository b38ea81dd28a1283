"""Engines of the store: SQLite (WAL) under `data.path`, or PostgreSQL at `data.url`."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from _json import encode_basestring, make_encoder
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import sqlalchemy as sa
from sqlalchemy import event

from ceems.api.config import DataConfig
from ceems.api.store.errors import StoreError

log = logging.getLogger(__name__)

DB_FILE = "ceems.db"
BUSY_TIMEOUT_MS = 5_000
CONNECT_TIMEOUT_S = 10
APPLICATION_NAME = "ceems_api_server"

# Compact, and NaN/Infinity refused: neither SQLite's JSON functions nor JSONB accept them.
_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))
# JSONEncoder.encode builds a new C encoder on every call, a third of the cost of encoding a
# small map; a commit encodes about ten per unit, so build it once (CPython's _json, which
# json itself uses). Likewise the scanner json.loads calls after two whitespace searches.
_ENCODE_C = make_encoder(
    None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, False
)
# An escaped NUL not itself preceded by an escaped backslash (that would be the text "\u0000").
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


WRITER_CACHE_KB = 256 * 1024
# Pages the WAL may reach before a commit checkpoints it itself (SQLite's default: 1,000, 4 MB).
# A commit of 10,000 units writes a few thousand pages, so with the default nearly every large
# commit also copied the WAL into the database before returning. The writer's Checkpointer
# (store/checkpoint.py) makes that copy after the commit instead; this remains the backstop.
WAL_AUTOCHECKPOINT_PAGES = 32_768
READER_CACHE_KB = 64 * 1024
MMAP_BYTES = 1 << 30


def dumps_json(value: object) -> str:
    """Serialise one JSON column value; empty maps, the common case, skip the encoder.

    orjson (C) first: a commit encodes about twenty maps per unit and it is five times
    faster than the standard library; what it refuses (integers past 64 bits) goes through
    the standard encoder, which also refuses NaN and infinities.
    """
    if type(value) is dict and not value:
        return "{}"
    try:
        encoded = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except orjson.JSONEncodeError:
        encoded = "null"  # re-encoded below
    if "null" in encoded:
        # orjson writes NaN and infinities as null; the standard encoder refuses them (and
        # encodes a genuine None the same way), so anything holding a null takes that path.
        encoded = "".join(_ENCODE_C(value, 0)) if type(value) is dict else _ENCODER.encode(value)
    # JSONB refuses NUL characters; SQLite would take them, so refuse them on both engines
    if "\\u0000" in encoded and _NUL.search(encoded):
        raise ValueError("NUL characters are not stored in JSON (PostgreSQL refuses them)")
    return encoded


def loads_json(text: str | bytes) -> Any:
    """Parse one JSON column value; what the store wrote needs no whitespace handling."""
    if text == "{}":
        return {}
    try:
        return orjson.loads(text)  # str or bytes (psycopg hands JSONB over as bytes)
    except orjson.JSONDecodeError:
        # what orjson refuses but the standard parser takes (NaN written by another tool)
        return json.loads(text)


def sqlite_path(data: DataConfig) -> Path:
    """Where the SQLite store of `data` lives."""
    return Path(data.path) / DB_FILE


def create_store_engine(data: DataConfig) -> sa.Engine:
    """The engine the writer and migrations use; fails now if the store cannot be reached."""
    if data.url:
        return _postgresql_engine(data.url, read_only=False)
    path = sqlite_path(data)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create the data directory {path.parent}: {err.strerror}") from err
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise StoreError(f"the data directory {path.parent} is not writable by uid {os.getuid()}")
    url = sa.URL.create("sqlite+pysqlite", database=str(path))
    return _sqlite_engine(url, path, read_only=False)


def read_only_engine(data: DataConfig) -> sa.Engine:
    """An engine for readers: it cannot write, and on SQLite it never blocks the writer."""
    if data.url:
        return _postgresql_engine(data.url, read_only=True)
    path = sqlite_path(data)
    if not path.exists():
        raise StoreError(f"no store at {path}: the API server's writer creates it")
    # A URI filename, so that SQLite itself opens the file read-only (Datasette does the same).
    url = sa.URL.create(
        "sqlite+pysqlite",
        database=f"file:{quote(str(path.resolve()))}",
        query={"mode": "ro", "uri": "true"},
    )
    return _sqlite_engine(url, path, read_only=True)


def _sqlite_engine(url: sa.URL, path: Path, *, read_only: bool) -> sa.Engine:
    engine = sa.create_engine(
        url,
        json_serializer=dumps_json,
        json_deserializer=loads_json,
        # the writer's calls may come from any thread; StoreWriter serialises them
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
    )
    event.listen(engine, "connect", _sqlite_reader_setup if read_only else _sqlite_writer_setup)
    # pysqlite only begins transactions before DML, so reads are not isolated and DDL is not
    # transactional; the SQLAlchemy recipe is to take over BEGIN ourselves. The writer begins
    # IMMEDIATE: a deferred transaction that later writes can fail with SQLITE_BUSY at once,
    # without waiting for the busy timeout.
    event.listen(engine, "begin", _begin_immediate if not read_only else _begin_deferred)
    _check_connects(engine, f"the SQLite store {path}")
    return engine


def _sqlite_writer_setup(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable in WAL mode except for the last transactions before a power loss
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # SQLite's default page cache is 2 MB: with a store of a million units every index
        # update missed it and ingest fell by half as the store grew. 256 MB of cache and
        # memory-mapped reads keep the indexes' hot pages in memory.
        cursor.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KB}")
        cursor.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    finally:
        cursor.close()


def _sqlite_reader_setup(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA query_only=1")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA cache_size=-{READER_CACHE_KB}")
        cursor.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    finally:
        cursor.close()


def _begin_immediate(connection: sa.Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _begin_deferred(connection: sa.Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def postgresql_url(raw: str) -> sa.URL:
    """`data.url` as a psycopg 3 URL; anything but PostgreSQL is refused."""
    try:
        url = sa.make_url(raw)
    except sa.exc.ArgumentError as err:
        # the URL may hold a password: never echo it
        raise StoreError(
            "data.url is not a database URL (expected postgresql+psycopg://user:pass@host:port/db)"
        ) from err
    if url.drivername == "postgres":  # the scheme libpq and Heroku-style URLs use
        url = url.set(drivername="postgresql")
    if url.get_backend_name() != "postgresql":
        raise StoreError(
            f"data.url: only PostgreSQL is supported, not {url.get_backend_name()!r}"
            " (leave data.url empty for SQLite under data.path)"
        )
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    elif url.get_driver_name() != "psycopg":
        raise StoreError(
            f"data.url: driver {url.get_driver_name()!r} is not installed; use postgresql+psycopg"
        )
    return url


def _postgresql_engine(raw: str, *, read_only: bool) -> sa.Engine:
    url = postgresql_url(raw)
    connect_args: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": APPLICATION_NAME + ("_reader" if read_only else ""),
    }
    if read_only:
        connect_args["options"] = "-c default_transaction_read_only=on"
    engine = sa.create_engine(
        url,
        json_serializer=dumps_json,
        json_deserializer=loads_json,
        pool_pre_ping=True,
        connect_args=connect_args,
        # readers see one snapshot per transaction, as they do on SQLite in WAL mode
        isolation_level="REPEATABLE READ" if read_only else "READ COMMITTED",
    )
    _check_connects(engine, f"PostgreSQL at {url.render_as_string(hide_password=True)}")
    return engine


def _check_connects(engine: sa.Engine, what: str) -> None:
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except sa.exc.DBAPIError as err:
        engine.dispose()
        reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise StoreError(f"cannot open {what}: {reason}") from err
    log.debug("store opened", extra={"store": what})
