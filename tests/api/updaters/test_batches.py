"""Planning queries: range buckets per unit and batch sizes from the sample budget."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from ceems.api.models import Unit
from ceems.api.updaters.tsdb import Batch, batch_size_for, placeholder_values, plan_batches
from ceems.tsdb.settings import TsdbSettings

START = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
END = START + timedelta(hours=1)
SETTINGS = TsdbSettings(scrape_interval=timedelta(seconds=15))


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def unit(uuid: str, started: datetime | None, ended: datetime | None = None) -> Unit:
    return Unit(
        "c", "slurm", uuid,
        started_at_ts=ms(started) if started else 0,
        ended_at_ts=ms(ended) if ended else 0,
    )  # fmt: skip


def test_units_are_grouped_by_their_range_bucket() -> None:
    units = [
        unit("before", START - timedelta(days=1)),  # whole window
        unit("ended", START - timedelta(hours=1), START + timedelta(minutes=5)),  # whole window
        unit("at-10m", START + timedelta(minutes=10)),  # 50 min -> 60 min bucket
        unit("at-40m", START + timedelta(minutes=40)),  # 20 min -> 30 min bucket
        unit("at-44m", START + timedelta(minutes=44)),  # 16 min -> 30 min bucket
        unit("at-59m", START + timedelta(minutes=59, seconds=50)),  # 10 s -> 15 min bucket
    ]
    assert plan_batches(units, START, END, SETTINGS) == [
        Batch(900_000, ("at-59m",)),
        Batch(1_800_000, ("at-40m", "at-44m")),
        Batch(3_600_000, ("before", "ended", "at-10m")),
    ]


@pytest.mark.parametrize(
    "skipped",
    [
        unit("pending", None),
        unit("later", END + timedelta(seconds=1)),
        unit("gone", START - timedelta(hours=2), START - timedelta(seconds=1)),
        unit("", START),
    ],
)
def test_units_that_cannot_have_data_are_not_queried(skipped: Unit) -> None:
    assert plan_batches([skipped], START, END, SETTINGS) == []


def test_range_never_exceeds_an_odd_window() -> None:
    end = START + timedelta(minutes=14, seconds=59, milliseconds=400)  # not whole seconds
    (batch,) = plan_batches([unit("a", START - timedelta(hours=1))], START, end, SETTINGS)
    assert batch.range_ms == 899_400
    assert placeholder_values(batch, SETTINGS)["Range"] == "14m59s399ms"


def test_consecutive_odd_windows_count_every_step_once() -> None:
    """Windows of any length in ms tile the subquery steps: each counts the steps in
    [end - range, end] (both ends included, as Prometheus 2 does), none is lost or repeated."""
    step_ms, edges = 15_000, [0, 9_600, 40_213, 77_999, 95_001, 180_000]
    counted: list[int] = []
    for lo, hi in itertools.pairwise(edges):
        start, end = START + timedelta(milliseconds=lo), START + timedelta(milliseconds=hi)
        (batch,) = plan_batches([unit("a", START - timedelta(hours=1))], start, end, SETTINGS)
        first = ms(end) - (batch.range_ms - 1)
        counted += [t for t in range(-(-first // step_ms) * step_ms, ms(end) + 1, step_ms)]
    assert counted == list(range(ms(START) + step_ms, ms(START) + 180_001, step_ms))


def test_explicit_batch_size_splits_groups() -> None:
    units = [unit(f"u{i}", START - timedelta(hours=1)) for i in range(5)]
    batches = plan_batches(units, START, END, SETTINGS, batch_size=2)
    assert [b.uuids for b in batches] == [("u0", "u1"), ("u2", "u3"), ("u4",)]


def test_batch_size_keeps_samples_within_half_of_max_samples() -> None:
    settings = TsdbSettings(scrape_interval=timedelta(seconds=15), query_max_samples=50_000_000)
    # one hour at 15 s: 241 samples per series, 50 series per unit
    assert batch_size_for(3_600_000, settings) == 25_000_000 // (50 * 241)
    assert batch_size_for(900_000, settings) > batch_size_for(3_600_000, settings)
    tiny = TsdbSettings(scrape_interval=timedelta(seconds=15), query_max_samples=10)
    assert batch_size_for(3_600_000, tiny) == 1


def test_placeholder_values() -> None:
    batch = Batch(3_600_000, ("a.1", "300[2]"))
    settings = TsdbSettings(
        scrape_interval=timedelta(seconds=30), evaluation_interval=timedelta(minutes=1)
    )
    assert placeholder_values(batch, settings) == {
        "UUIDs": r"a\.1|300\[2\]",
        "Range": "59m59s999ms",
        "ScrapeInterval": "30s",
        "ScrapeIntervalMilli": "30000",
        "EvaluationInterval": "1m",
        "EvaluationIntervalMilli": "60000",
        "RateInterval": "2m",
    }
