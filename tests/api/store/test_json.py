"""How JSON columns are written and read: compact, finite, without NUL, whatever the driver."""

from __future__ import annotations

import json
import math

import pytest

from ceems.api.store.engine import dumps_json, loads_json


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({}, "{}"),
        ({"global": 53.4, "n": 2}, '{"global":53.4,"n":2}'),
        ({"nested": {"a": [1, "é"]}}, '{"nested":{"a":[1,"é"]}}'),
        ({"text": "a\\u0000b"}, '{"text":"a\\\\u0000b"}'),  # the six characters, not a NUL
        ([1, 2], "[1,2]"),
    ],
)
def test_dumps_json_is_compact(value: object, text: str) -> None:
    assert dumps_json(value) == text
    assert json.loads(text) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"x": math.nan}, "Out of range float values"),
        ({"x": [math.inf]}, "Out of range float values"),
        ({"x": "a\x00b"}, "NUL characters are not stored"),
        ({"x": "\\\x00"}, "NUL characters are not stored"),  # a backslash, then a NUL
        ({"x": object()}, "not JSON serializable"),
    ],
)
def test_dumps_json_refuses_what_an_engine_would(value: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        dumps_json(value)


@pytest.mark.parametrize(
    "text",
    ['{"a":1.5}', b'{"a":1.5}', ' {"a": 1.5} ', '{"a":1.5}\n'],
)
def test_loads_json_takes_text_bytes_and_whitespace(text: str | bytes) -> None:
    assert loads_json(text) == {"a": 1.5}


def test_loads_json_of_an_empty_map_is_a_new_dict() -> None:
    first, second = loads_json("{}"), loads_json("{}")
    first["x"] = 1
    assert second == {}


def test_loads_json_refuses_broken_text() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads_json('{"a":')
