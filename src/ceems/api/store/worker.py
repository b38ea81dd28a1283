"""A thread that does a commit's database work while the writer prepares the next of it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

import sqlalchemy as sa

from ceems.api.store.bulk import Prepared

T = TypeVar("T")


class SkippedError(Exception):
    """Work not done because earlier work on the connection failed."""


class ConnectionWorker:
    """Runs reads and inserts on a worker thread, in submission order, on one connection.

    The drivers release the GIL while the database works (sqlite3 around every step,
    psycopg while it waits on the server), so the caller's Python (checking units, building
    rows) overlaps with the database's work on what it submitted before. Until the `with`
    block ends only the worker uses the connection. Once a piece of work fails the later
    ones are skipped, and the block ends with that first error.
    """

    def __init__(self, conn: sa.Connection, executor: ThreadPoolExecutor) -> None:
        self._conn = conn
        self._executor = executor
        self._futures: list[Future[Any]] = []
        self._error: BaseException | None = None

    def call(self, work: Callable[[sa.Connection], T]) -> Future[T]:
        """Queue `work(connection)`; result() of the future waits for it."""
        future = self._executor.submit(self._run, work)
        self._futures.append(future)
        return future

    def insert(self, statement: Prepared, params: Sequence[tuple[Any, ...]]) -> None:
        """Queue the insertion of `params` with `statement`."""
        if params:
            self.call(lambda conn: statement.execute(conn, params))

    def result(self, future: Future[T]) -> T:
        """The future's value; the first failure's error if it was skipped."""
        try:
            return future.result()
        except SkippedError:
            if self._error is None:  # pragma: no cover - skipped only after a failure
                raise
            raise self._error from None

    def _run(self, work: Callable[[sa.Connection], T]) -> T:
        if self._error is not None:
            raise SkippedError("skipped after an earlier failure on the connection")
        try:
            return work(self._conn)
        except BaseException as err:
            self._error = err
            raise

    def __enter__(self) -> ConnectionWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None and self._error is None:
            # the caller failed: the queued work is skipped, and the caller's error stands
            self._error = exc
        for future in self._futures:  # the connection is free only once the last is done
            future.exception()
        self._futures = []
        if exc is None and self._error is not None:
            raise self._error
