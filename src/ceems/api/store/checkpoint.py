"""WAL checkpoints of the SQLite store on a thread of their own, off the commit path."""

from __future__ import annotations

import logging
import sqlite3
import threading

import sqlalchemy as sa

log = logging.getLogger(__name__)


class Checkpointer:
    """Copies committed WAL frames into the database file after each commit, in the background.

    PASSIVE checkpoints take no lock that the writer or readers wait for: frames a reader
    still needs stay in the WAL until a later checkpoint. A failed checkpoint is logged and
    retried after the next commit; the writer's own automatic checkpoint remains the backstop.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.completed = 0  # checkpoints run, for tests and logs

    def request(self) -> None:
        """Ask for a checkpoint soon; starts the thread on first use."""
        with self._lock:
            if self._stopping:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="ceems-store-checkpoint", daemon=True
                )
                self._thread.start()
        self._wanted.set()

    def stop(self) -> None:
        """Finish a checkpoint under way and stop the thread."""
        with self._lock:
            self._stopping = True
            thread, self._thread = self._thread, None
        self._wanted.set()
        if thread is not None:
            thread.join()
        with self._lock:
            self._stopping = False

    def _run(self) -> None:
        # A DBAPI connection in autocommit mode: through SQLAlchemy the writer engine would
        # BEGIN IMMEDIATE first and take the write lock the writer needs.
        raw = self._engine.raw_connection()
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stopping:
                    return
                try:
                    cursor = raw.cursor()
                    cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    busy, wal_pages, copied = cursor.fetchone() or (0, 0, 0)
                    cursor.close()
                except sqlite3.Error as err:
                    log.warning("store checkpoint failed, retried after the next commit: %s", err)
                    continue
                self.completed += 1
                log.debug(
                    "store checkpointed",
                    extra={"busy": busy, "wal_pages": wal_pages, "copied_pages": copied},
                )
        finally:
            raw.close()
