"""Rendered units kept between requests: never stale, bounded, the bytes of a fresh rendering."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from datetime import tzinfo
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from ceems.api import rendercache
from ceems.api.envelope import GZIP_MINIMUM_BYTES, success_body
from ceems.api.render import UNIT_FIELDS, unit_columns, unit_renderer
from ceems.api.rendercache import UnitTexts
from ceems.api.store.queries import UnitFilter, fetch_unit_rows, unit_dicts
from ceems.api.store.writes import StoreWriter
from tests.api.store.factory import CLUSTER, DAY_MS, T0, project, user, window

PARIS = ZoneInfo("Europe/Paris")
NOW = T0 + DAY_MS
EVERYONE = UnitFilter()


def commit(writer: StoreWriter, *units: object, at: int = NOW) -> None:
    writer.commit_update(
        CLUSTER, at, list(units), [user("alice", "research")], [project("research", "alice")], at
    )  # type: ignore[arg-type]


def finished(uuid: str, energy: float = 0.5) -> object:
    return window(uuid, 3600.0, 50.0, energy, ended_at_ts=T0 + 7_200_000, state="COMPLETED")


def texts(
    engine: sa.Engine,
    cache: UnitTexts,
    fields: Sequence[str] = UNIT_FIELDS,
    zone: tzinfo | None = PARIS,
    now: int = NOW,
) -> list[str]:
    """What /units renders, through the cache and afresh; both must agree."""
    with engine.connect() as conn:
        found = fetch_unit_rows(conn, EVERYONE, unit_columns(fields))
    kept = [text.decode() for text in cache.render(found, fields, zone, now)]
    fresh = [unit_renderer(fields, zone, now)(unit) for unit in unit_dicts(found)]
    assert kept == fresh
    return kept


def counts(registry: CollectorRegistry) -> tuple[float, float]:
    hits = registry.get_sample_value("ceems_api_server_units_cache_hits_total")
    misses = registry.get_sample_value("ceems_api_server_units_cache_misses_total")
    assert hits is not None and misses is not None
    return hits, misses


def test_a_second_answer_is_served_from_the_cache(writer: StoreWriter, engine: sa.Engine) -> None:
    commit(writer, finished("1"), finished("2"))
    registry = CollectorRegistry()
    cache = UnitTexts(100, registry)
    first = texts(engine, cache)
    assert counts(registry) == (0, 2) and len(cache) == 2
    assert texts(engine, cache) == first
    assert counts(registry) == (2, 2)


def test_a_changed_unit_is_rendered_again(writer: StoreWriter, engine: sa.Engine) -> None:
    commit(writer, finished("1"), finished("2"))
    cache = UnitTexts(100)
    before = texts(engine, cache)
    # A late update of unit 2 (its last window): its energy grows, unit 1 stays as it was.
    commit(writer, finished("2", energy=0.25), at=NOW + 900_000)
    after = texts(engine, cache)
    assert after[0] == before[0]
    assert after[1] != before[1]
    assert '"total_cpu_energy_usage_kwh":{"total":0.75000000}' in after[1]


def test_the_elapsed_time_of_a_running_unit_follows_the_clock(
    writer: StoreWriter, engine: sa.Engine
) -> None:
    commit(writer, window("run", 60.0, 10.0, 0.01), finished("done"))
    cache = UnitTexts(100)
    now = texts(engine, cache)
    later = texts(engine, cache, now=NOW + 3_600_000)
    # Sorted by uuid: "done", then "run".
    assert later[0] == now[0]  # the finished unit's elapsed does not move
    assert '"elapsed":"23:59:59"' in now[1] and '"elapsed":"1-00:59:59"' in later[1]
    # Without `elapsed` a running unit renders the same at any time: it may be kept.
    fields = [f for f in UNIT_FIELDS if f != "elapsed"]
    assert texts(engine, cache, fields) == texts(engine, cache, fields, now=NOW + 3_600_000)


def test_fields_and_zones_are_kept_apart(writer: StoreWriter, engine: sa.Engine) -> None:
    commit(writer, finished("1"))
    cache = UnitTexts(100)
    paris = texts(engine, cache)
    utc = texts(engine, cache, zone=ZoneInfo("UTC"))
    local = texts(engine, cache, zone=None)
    few = texts(engine, cache, ["uuid", "state"])
    assert paris != utc and few == ['{"uuid":"1","state":"COMPLETED"}']
    assert '"ended_at":"2026-01-01T03:00:00+0100"' in paris[0]
    assert '"ended_at":"2026-01-01T02:00:00+0000"' in utc[0]
    assert len(local) == 1
    # The same fields in another order are the same answer (CEEMS' order is fixed).
    assert texts(engine, cache, ["state", "uuid"]) == few


def test_the_least_recently_used_units_go_first(writer: StoreWriter, engine: sa.Engine) -> None:
    commit(writer, *(finished(str(i)) for i in range(4)))
    registry = CollectorRegistry()
    cache = UnitTexts(6, registry)
    texts(engine, cache, ["uuid"])  # 4 kept
    texts(engine, cache, ["uuid", "state"])  # 4 more: units 0 and 1 of ["uuid"] go
    assert len(cache) == 6 and counts(registry) == (0, 8)
    texts(engine, cache, ["uuid"])  # units 2 and 3 are still there
    assert len(cache) == 6 and counts(registry) == (2, 10)


def test_units_in_use_are_not_pushed_out(writer: StoreWriter, engine: sa.Engine) -> None:
    commit(writer, *(finished(str(i)) for i in range(4)))
    registry = CollectorRegistry()
    cache = UnitTexts(8, registry)
    a, b, c = ["uuid"], ["uuid", "state"], ["uuid", "name"]
    texts(engine, cache, a)
    texts(engine, cache, b)  # full: a's four are the oldest
    texts(engine, cache, a)  # served from the older half: moved back to the young end
    assert counts(registry) == (4, 8)
    texts(engine, cache, c)  # four more push b's out, not a's
    texts(engine, cache, a)
    assert counts(registry) == (8, 12)
    texts(engine, cache, b)
    assert counts(registry) == (8, 16)


def test_a_list_longer_than_the_cache_bypasses_it(writer: StoreWriter, engine: sa.Engine) -> None:
    commit(writer, *(finished(str(i)) for i in range(5)))
    small = UnitTexts(4)
    assert len(texts(engine, small)) == 5
    assert len(small) == 0
    off = UnitTexts(0)
    texts(engine, off)
    texts(engine, off)
    assert len(off) == 0


def test_forgotten_plans_never_serve_another_plans_text(
    writer: StoreWriter, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rendercache, "_PLANS_LIMIT", 2)
    commit(writer, finished("1"))
    cache = UnitTexts(100)
    plans = [["uuid"], ["uuid", "state"], ["uuid", "name"], ["uuid"], ["uuid", "project"]]
    for _ in range(2):
        for fields in plans:
            texts(engine, cache, fields)  # asserts against a fresh rendering each time


def test_request_threads_share_it(writer: StoreWriter, engine: sa.Engine) -> None:
    commit(writer, *(finished(str(i), energy=i + 0.5) for i in range(50)))
    cache = UnitTexts(80)  # smaller than two plans' worth: threads evict each other
    expected = {
        zone: texts(engine, UnitTexts(0), zone=ZoneInfo(zone)) for zone in ("UTC", "Asia/Tokyo")
    }
    failures: list[BaseException] = []

    def run(zone: str) -> None:
        try:
            for _ in range(20):
                assert texts(engine, cache, zone=ZoneInfo(zone)) == expected[zone]
        except BaseException as err:  # reported by the main thread
            failures.append(err)

    threads = [threading.Thread(target=run, args=(z,)) for z in ("UTC", "Asia/Tokyo") * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(cache) <= 80


def test_a_negative_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 0"):
        UnitTexts(-1)


def answer(
    engine: sa.Engine,
    cache: UnitTexts,
    fields: Sequence[str] = UNIT_FIELDS,
    gzip: bool = False,
    now: int = NOW,
) -> tuple[bytes, bool]:
    """The whole /units body through the cache, checked against one made afresh."""
    with engine.connect() as conn:
        found = fetch_unit_rows(conn, EVERYONE, unit_columns(fields))
    body, gzipped = cache.answer(found, fields, PARIS, now, gzip)
    fresh = success_body([text.encode() for text in texts(engine, UnitTexts(0), fields, now=now)])
    assert (zlib.decompress(body, 16 + zlib.MAX_WBITS) if gzipped else body) == fresh
    return body, gzipped


def answer_hits(registry: CollectorRegistry) -> float:
    hits = registry.get_sample_value("ceems_api_server_units_cache_answer_hits_total")
    assert hits is not None
    return hits


def test_the_same_rows_get_the_same_answer_whole(writer: StoreWriter, engine: sa.Engine) -> None:
    commit(writer, finished("1"), finished("2"))
    registry = CollectorRegistry()
    cache = UnitTexts(100, registry)
    first, _ = answer(engine, cache)
    assert answer_hits(registry) == 0 and counts(registry) == (0, 2)
    again, _ = answer(engine, cache)
    assert again is first  # the kept bytes themselves
    assert answer_hits(registry) == 1 and counts(registry) == (2, 2)


def test_one_changed_unit_makes_a_new_answer(writer: StoreWriter, engine: sa.Engine) -> None:
    commit(writer, finished("1"), finished("2"), finished("3"))
    registry = CollectorRegistry()
    cache = UnitTexts(100, registry)
    before, _ = answer(engine, cache)
    # The middle unit changes: same count, same first and last rows, another list.
    commit(writer, finished("2", energy=0.25), at=NOW + 900_000)
    after, _ = answer(engine, cache)
    assert after != before and b'"total_cpu_energy_usage_kwh":{"total":0.75000000}' in after
    assert answer_hits(registry) == 0
    assert counts(registry) == (2, 4)  # units 1 and 3 still came from their kept texts


def test_gzip_is_kept_beside_the_plain_body(writer: StoreWriter, engine: sa.Engine) -> None:
    commit(writer, *(finished(str(i)) for i in range(10)))
    registry = CollectorRegistry()
    cache = UnitTexts(100, registry)
    plain, gzipped = answer(engine, cache)
    assert not gzipped
    packed, gzipped = answer(engine, cache, gzip=True)  # asserts it inflates to `plain`
    assert gzipped and len(packed) < len(plain)
    again, _ = answer(engine, cache, gzip=True)
    assert again is packed
    small, gzipped = answer(engine, cache, ["uuid"], gzip=True)
    assert not gzipped and len(small) < GZIP_MINIMUM_BYTES  # not worth compressing


def test_running_units_with_elapsed_are_never_answered_whole(
    writer: StoreWriter, engine: sa.Engine
) -> None:
    commit(writer, finished("1"), window("2", 60.0, 50.0, 0.5))  # 2 still runs
    registry = CollectorRegistry()
    cache = UnitTexts(100, registry)
    answer(engine, cache, now=NOW)
    answer(engine, cache, now=NOW + 60_000)  # asserts that elapsed moved on
    assert answer_hits(registry) == 0
    no_elapsed = [f for f in UNIT_FIELDS if f != "elapsed"]
    answer(engine, cache, no_elapsed)
    answer(engine, cache, no_elapsed, now=NOW + 120_000)
    assert answer_hits(registry) == 1


def test_answers_keep_to_half_the_capacity(writer: StoreWriter, engine: sa.Engine) -> None:
    commit(writer, *(finished(str(i)) for i in range(3)))
    registry = CollectorRegistry()
    cache = UnitTexts(10, registry)  # answers up to 5 units in all
    plans = [["uuid"], ["uuid", "state"], ["uuid", "name"]]  # 3 units each
    for fields in plans:
        answer(engine, cache, fields)
    answer(engine, cache, plans[2])  # the newest is kept
    answer(engine, cache, plans[0])  # pushed out by the second
    assert answer_hits(registry) == 1
    answer(engine, cache, plans[0])
    assert answer_hits(registry) == 2
    larger = UnitTexts(4, CollectorRegistry())  # 3 units > 4 // 2: never kept whole
    for _ in range(2):
        answer(engine, larger)
    assert len(larger._answers) == 0


def test_rows_with_converted_columns_are_not_answered_whole(
    writer: StoreWriter, engine: sa.Engine
) -> None:
    commit(writer, finished("1"))
    registry = CollectorRegistry()
    cache = UnitTexts(100, registry)
    for _ in range(2):
        with engine.connect() as conn:
            found = fetch_unit_rows(conn, EVERYONE)  # every column: `ignore` makes them Rows
        assert type(found.rows[0]) is not tuple
        body, _ = cache.answer(found, UNIT_FIELDS, PARIS, NOW, False)
        assert body == answer(engine, UnitTexts(0))[0]
    assert answer_hits(registry) == 0 and len(cache._answers) == 0
