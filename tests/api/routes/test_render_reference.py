"""The fast unit rendering against a straightforward reference of CEEMS' encoding.

The reference is the renderer as first written (json.dumps, datetime.strftime, every
rule spelled out per field); the fast one must give the same bytes for any row, zone
and field selection.
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ceems.api import render
from ceems.api.render import (
    METRIC_ORDER,
    UNIT_FIELDS,
    encode,
    encode_float,
    encode_metric_map,
    format_elapsed,
    format_time,
    render_unit,
    unit_renderer,
)

# --- the reference ----------------------------------------------------------------------

_TIME_STRINGS = {"created_at": "created_at_ts", "started_at": "started_at_ts",
                 "ended_at": "ended_at_ts"}  # fmt: skip
_METRIC_MAPS = frozenset(("total_time_seconds", *METRIC_ORDER))


def ref_encode(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def ref_encode_float(value: float) -> str:
    if math.isinf(value) or math.isnan(value):
        return "0"
    if value.is_integer():
        return str(int(value)) if abs(value) < 1e21 else repr(value)
    return f"{value:.8f}"


def ref_encode_metric_map(values: Mapping[str, Any]) -> str:
    parts = [
        f"{ref_encode(str(key))}:{ref_encode_float(float(values[key]))}"
        for key in sorted(values)
        if isinstance(values[key], int | float) and not isinstance(values[key], bool)
    ]
    return "{" + ",".join(parts) + "}"


def ref_format_time(ts_ms: int, zone: tzinfo | None) -> str:
    if ts_ms <= 0:
        return "N/A"
    moment = datetime.fromtimestamp(ts_ms / 1000, zone)
    if zone is None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%dT%H:%M:%S%z")


def ref_format_elapsed(seconds: int) -> str:
    days, rest = divmod(max(seconds, 0), 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def ref_value(row: Mapping[str, Any], field: str, zone: tzinfo | None, now_ms: int) -> Any:
    if field in _TIME_STRINGS:
        return ref_format_time(int(row[_TIME_STRINGS[field]]), zone)
    if field == "elapsed":
        started, ended = int(row["started_at_ts"]), int(row["ended_at_ts"])
        if started <= 0:
            return ref_format_elapsed(0)
        return ref_format_elapsed(((ended or now_ms) - started) // 1000)
    return row[field]


def ref_render_unit(
    row: Mapping[str, Any], fields: Sequence[str], zone: tzinfo | None, now_ms: int
) -> str:
    wanted = set(fields)
    parts = []
    for field in UNIT_FIELDS:
        if field not in wanted:
            if field == "uuid":
                parts.append('"uuid":""')
            continue
        value = ref_value(row, field, zone, now_ms)
        if field != "uuid" and (value is None or value == "" or value == 0 or value == {}):
            continue
        text = ref_encode_metric_map(value) if field in _METRIC_MAPS else ref_encode(value)
        parts.append(f'"{field}":{text}')
    return "{" + ",".join(parts) + "}"


# --- varied inputs ----------------------------------------------------------------------

STRINGS = ["", "job", "é✓ 漢字 🚀", "<a&b>", "line\u2028para\u2029", 'q"uo\\te',
           "tab\tnl\n\x01\x7f", "/home/x&<y>", "\ud800 lone surrogate", "0"]  # fmt: skip
FLOATS = [0.0, -0.0, 1.0, 7952.0, 0.1 + 0.2, 53.4770154, -1.5, 1e-7, 123456789.123456789, 1e20,
          1e21, -1e21, 1.5e300, 5e-324, float("inf"), float("-inf"), float("nan")]  # fmt: skip
INTS = [0, 1, -1, 42, 2**53 + 1, 2**63, 2**70, -(2**70)]
ZONES: list[tzinfo | None] = [
    None,
    ZoneInfo("UTC"),
    ZoneInfo("Europe/Paris"),
    ZoneInfo("America/New_York"),
    ZoneInfo("Asia/Kolkata"),
    ZoneInfo("Australia/Lord_Howe"),  # DST of 30 minutes
    ZoneInfo("America/St_Johns"),  # -0330 and -0230
]


def transitions(zone: ZoneInfo, first_year: int, last_year: int) -> Iterator[int]:
    """Epoch seconds where `zone`'s UTC offset changes (found day by day, then bisected)."""
    start = int(datetime(first_year, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp())
    end = int(datetime(last_year, 1, 1, tzinfo=ZoneInfo("UTC")).timestamp())

    def offset(ts: int) -> Any:
        return datetime.fromtimestamp(ts, zone).utcoffset()

    for day in range(start, end, 86_400):
        if offset(day) != offset(day + 86_400):
            low, high = day, day + 86_400
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
            yield high


@functools.cache
def edge_times_ms() -> tuple[int, ...]:
    """Times around DST changes in Paris and New York, epoch edges and random instants."""
    found = [0, -1, -86_400_000, 1, 999, 1000, 86_399_999, 253_401_000_000_999]
    for name in ("Europe/Paris", "America/New_York"):
        for ts in transitions(ZoneInfo(name), 1970, 2040):
            for delta_ms in (-3_600_001, -3_600_000, -1001, -1000, -1, 0, 1, 999, 1000,
                             3_599_999, 3_600_000):  # fmt: skip
                found.append(ts * 1000 + delta_ms)
    rng = random.Random(7)
    found += [rng.randrange(1, 4_102_444_800_000) for _ in range(2000)]
    return tuple(found)


def random_map(rng: random.Random, numeric: bool) -> dict[str, Any]:
    values: list[Any] = [*FLOATS, *INTS]
    if not numeric:
        values += [*STRINGS, True, False, None, [1, "<"], {"nested": {"b": 1, "a": "&"}}]
    else:
        values += [True, "not a number", None]  # dropped from metric maps
    keys = ["global", "total", "rte_total", "owid_total", "<k>", "é", "walltime", "z&"]
    return {rng.choice(keys): rng.choice(values) for _ in range(rng.randrange(0, 5))}


def random_row(rng: random.Random, times: Sequence[int]) -> dict[str, Any]:
    row: dict[str, Any] = {
        name: rng.choice(STRINGS)
        for name in ("cluster_id", "resource_manager", "uuid", "name", "project", "groupname",
                     "username", "state")
    }  # fmt: skip
    for name in ("created_at_ts", "started_at_ts", "ended_at_ts"):
        row[name] = rng.choice([0, 0, *times[:50], rng.choice(times)])
    for name in ("allocation", "tags", "provenance"):
        row[name] = rng.choice([{}, None, random_map(rng, numeric=False)])
    for name in ("total_time_seconds", *METRIC_ORDER):
        row[name] = rng.choice([{}, random_map(rng, numeric=True)])
    return row


# --- the comparisons --------------------------------------------------------------------


@pytest.fixture(params=["UTC", "America/New_York"])
def host_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's zone (`zone=None`) set through TZ."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("host_zone")
@pytest.mark.parametrize("zone", ZONES, ids=lambda z: str(z))
def test_time_strings_match_strftime_across_dst_changes(zone: tzinfo | None) -> None:
    times = edge_times_ms()
    assert [format_time(ts, zone) for ts in times] == [ref_format_time(ts, zone) for ts in times]


@pytest.mark.usefixtures("host_zone")
def test_units_render_as_the_reference_does() -> None:
    rng = random.Random(2023)
    times = edge_times_ms()
    for n in range(600):
        row = random_row(rng, times)
        zone = rng.choice(ZONES)
        fields = UNIT_FIELDS if n % 3 == 0 else rng.sample(UNIT_FIELDS, rng.randrange(1, 12))
        now_ms = rng.choice([1, *times[:20]])
        expected = ref_render_unit(row, fields, zone, now_ms)
        assert unit_renderer(fields, zone, now_ms)(row) == expected, (row, fields, zone)
        assert render_unit(row, fields, zone, now_ms) == expected


def test_one_renderer_serves_many_rows() -> None:
    rng = random.Random(5)
    rows = [random_row(rng, edge_times_ms()) for _ in range(50)]
    zone = ZoneInfo("Europe/Paris")
    renderer = unit_renderer(UNIT_FIELDS, zone, 1_700_000_000_000)
    expected = [ref_render_unit(row, UNIT_FIELDS, zone, 1_700_000_000_000) for row in rows]
    assert [renderer(row) for row in rows] == expected


@pytest.mark.parametrize(
    "value",
    [*STRINGS, *INTS, *FLOATS, True, False, None, [], {}, ["<", 1.5, None],
     {"b": {"d": "\u2028", "c": [2**70, 0.1]}, "a": "&"}, {2: "int keys", 1: 1e16},
     ("tuple", 1)],
)  # fmt: skip
def test_values_encode_as_json_dumps_does(value: Any) -> None:
    assert encode(value) == ref_encode(value)


@pytest.mark.parametrize("value", [*FLOATS, *(float(i) for i in INTS)])
def test_floats_encode_as_the_reference_does(value: float) -> None:
    assert encode_float(value) == ref_encode_float(value)


def test_metric_maps_encode_as_the_reference_does() -> None:
    rng = random.Random(11)
    for _ in range(500):
        values = random_map(rng, numeric=True)
        assert encode_metric_map(values) == ref_encode_metric_map(values)
    int_keys: dict[Any, float] = {2: 1.5, 1: 3}
    assert encode_metric_map(int_keys) == ref_encode_metric_map(int_keys)


def test_elapsed_matches_the_reference() -> None:
    for seconds in [-5, 0, 59, 60, 3599, 3600, 86_399, 86_400, 90_061, 10**7]:
        assert format_elapsed(seconds) == ref_format_elapsed(seconds)


def test_memo_tables_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "_MEMO_LIMIT", 3)
    values = {f"key{i}": float(i) for i in range(10)}
    assert encode_metric_map(values) == ref_encode_metric_map(values)
    assert len(render._MAP_KEYS) <= 3
