"""Online, consistent copies of the store: SQLite's backup API, or pg_dump for PostgreSQL."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from ceems.api.store.errors import StoreError

log = logging.getLogger(__name__)

BACKUP_KEEP = 7
SQLITE_SUFFIX = ".db"
POSTGRESQL_SUFFIX = ".pgdump"
_PREFIX = "ceems-"


def backup_path(dest_dir: Path, now: datetime, suffix: str) -> Path:
    """`<dest_dir>/ceems-<UTC timestamp><suffix>`; names sort in time order."""
    if now.tzinfo is None:
        raise StoreError(f"backup time {now.isoformat()} has no time zone")
    return dest_dir / f"{_PREFIX}{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}{suffix}"


def backup_sqlite(source: sqlite3.Connection, dest_dir: Path, now: datetime, keep: int) -> Path:
    """Copy the database behind `source` while others may write; keep the newest `keep`."""
    final = _prepare(dest_dir, now, SQLITE_SUFFIX, keep)
    temporary = final.with_name(f".{final.name}.tmp")
    try:
        temporary.unlink(missing_ok=True)
        target = sqlite3.connect(temporary)
        try:
            # All pages in one step (pages=-1) under one read transaction: a snapshot, even
            # while another connection commits (WAL readers do not block writers).
            source.backup(target)
            # the copy is one self-contained file, not a WAL database needing -wal and -shm
            target.execute("PRAGMA journal_mode=DELETE")
        finally:
            target.close()
        temporary.replace(final)
    except (sqlite3.Error, OSError) as err:
        temporary.unlink(missing_ok=True)
        raise StoreError(f"SQLite backup to {final} failed: {err}") from err
    prune_backups(dest_dir, SQLITE_SUFFIX, keep)
    return final


def backup_postgresql(url: sa.URL, dest_dir: Path, now: datetime, keep: int) -> Path:
    """pg_dump --format=custom into dest_dir (restore with pg_restore); keep the newest `keep`."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise StoreError(
            "pg_dump is not installed (Debian package postgresql-client): it makes the backups"
            " of a PostgreSQL store"
        )
    final = _prepare(dest_dir, now, POSTGRESQL_SUFFIX, keep)
    temporary = final.with_name(f".{final.name}.tmp")
    # the password goes through the environment, not the command line others can read
    dsn = libpq_url(url)
    env = {**os.environ, "PGPASSWORD": str(url.password or ""), "PGCONNECT_TIMEOUT": "10"}
    command = [pg_dump, "--format=custom", "--no-password", f"--file={temporary}", dsn]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    except OSError as err:
        raise StoreError(f"cannot run {pg_dump}: {err}") from err
    if done.returncode != 0:
        temporary.unlink(missing_ok=True)
        reason = " / ".join(done.stderr.strip().splitlines()[-3:])
        raise StoreError(f"pg_dump exited {done.returncode}: {reason}")
    try:
        temporary.replace(final)
    except OSError as err:
        raise StoreError(f"cannot move the backup to {final}: {err.strerror}") from err
    prune_backups(dest_dir, POSTGRESQL_SUFFIX, keep)
    return final


def libpq_url(url: sa.URL) -> str:
    """The URL as libpq tools (pg_dump, pg_restore) take it, without the password."""
    plain = sa.URL.create(
        "postgresql",
        username=url.username,
        host=url.host,
        port=url.port,
        database=url.database,
        query=url.query,
    )
    return plain.render_as_string(hide_password=False)


def prune_backups(dest_dir: Path, suffix: str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups with that suffix; returns those deleted."""
    backups = sorted(dest_dir.glob(f"{_PREFIX}*{suffix}"))
    old = backups[:-keep] if keep > 0 else backups
    for path in old:
        path.unlink(missing_ok=True)
        log.info("old backup deleted", extra={"path": str(path)})
    return old


def _prepare(dest_dir: Path, now: datetime, suffix: str, keep: int) -> Path:
    if keep < 1:
        raise StoreError(f"backups to keep must be at least 1, got {keep}")
    path = backup_path(dest_dir, now, suffix)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StoreError(f"cannot create the backup directory {dest_dir}: {err.strerror}") from err
    return path
