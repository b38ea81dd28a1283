"""Background sampling of sources that can block, so a scrape never waits on them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ceems.exporter.collector import NoDataError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sample(Generic[T]):
    """The last good value of a source and when it was taken (monotonic seconds)."""

    value: T
    taken_at: float


class BackgroundSampler(Generic[T]):
    """Calls `fetch` every `interval_s` in a daemon thread and keeps the last good result.

    `fetch` must bound its own blocking (subprocess or HTTP timeouts); if it hangs anyway,
    only this thread waits and scrapes keep serving the last good value until it is older
    than `max_age_s`, after which `latest()` raises so the collector reports a failure.
    """

    def __init__(
        self,
        name: str,
        fetch: Callable[[], T],
        interval_s: float,
        max_age_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"sampler {name!r}: interval must be positive, got {interval_s}")
        self.name = name
        self._fetch = fetch
        self._interval_s = interval_s
        self._max_age_s = max_age_s if max_age_s is not None else 3 * interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sample: Sample[T] | None = None
        self._last_error: str = "no sample taken yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Take the first sample in the background and keep sampling until `stop()`."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"sampler-{self.name}", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Ask the sampling thread to end after its current fetch."""
        self._stop.set()

    def sample_now(self) -> None:
        """Fetch once in the calling thread, recording success or failure."""
        try:
            value = self._fetch()
        except Exception as err:  # any failure of the source is reported, never raised here
            with self._lock:
                self._last_error = f"{type(err).__name__}: {err}"
            log.warning("source sample failed", extra={"source": self.name, "err": str(err)})
            return
        with self._lock:
            self._sample = Sample(value, self._clock())
            self._last_error = ""

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            self.sample_now()
            self._stop.wait(max(0.0, self._interval_s - (self._clock() - started)))

    def latest(self) -> Sample[T]:
        """The last good sample; raises NoDataError if there is none or it is too old."""
        with self._lock:
            sample, error = self._sample, self._last_error
        if sample is None:
            raise NoDataError(f"{self.name}: {error}")
        age = self._clock() - sample.taken_at
        if age > self._max_age_s:
            raise NoDataError(
                f"{self.name}: last good sample is {age:.0f}s old (limit {self._max_age_s:.0f}s);"
                f" last error: {error or 'sampling is stuck'}"
            )
        return sample

    def age_s(self) -> float | None:
        """Seconds since the last good sample, or None if there was none."""
        with self._lock:
            sample = self._sample
        return None if sample is None else self._clock() - sample.taken_at
