"""Background sampling: last good value, staleness and failure isolation."""

from __future__ import annotations

import threading

import pytest

from ceems.exporter.collector import NoDataError
from ceems.exporter.sampler import BackgroundSampler


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_sample_yet_is_no_data() -> None:
    sampler = BackgroundSampler("s", lambda: 1, 10.0, clock=Clock())
    with pytest.raises(NoDataError, match="no sample taken yet"):
        sampler.latest()


def test_failure_keeps_the_last_good_value_until_it_is_too_old() -> None:
    clock = Clock()
    values: list[object] = [42, RuntimeError("BMC busy")]

    def fetch() -> int:
        value = values.pop(0)
        if isinstance(value, Exception):
            raise value
        assert isinstance(value, int)
        return value

    sampler = BackgroundSampler("bmc", fetch, 10.0, max_age_s=30.0, clock=clock)
    sampler.sample_now()
    clock.now += 20
    sampler.sample_now()  # fails, logged, not raised
    assert sampler.latest().value == 42
    assert sampler.age_s() == 20
    clock.now += 11
    with pytest.raises(NoDataError, match="RuntimeError: BMC busy"):
        sampler.latest()


def test_background_thread_samples_until_stopped() -> None:
    calls = threading.Semaphore(0)

    def fetch() -> str:
        calls.release()
        return "ok"

    sampler = BackgroundSampler("s", fetch, 0.01)
    sampler.start()
    for _ in range(3):
        assert calls.acquire(timeout=5)
    sampler.stop()
    assert sampler.latest().value == "ok"


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        BackgroundSampler("s", lambda: 1, 0)
