"""PromQL literals: durations and regex-escaped label values."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from ceems.tsdb.promql import alternation, escape_regex, format_duration, regex_selector


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=15), "15s"),
        (timedelta(minutes=15) - timedelta(milliseconds=1), "14m59s999ms"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=2, seconds=1), "2d1s"),
        (timedelta(milliseconds=250), "250ms"),
    ],
)
def test_format_duration(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text


def test_negative_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("1234", "1234"),
        ("300[1]", r"300\[1\]"),  # LSF job array element
        ("a.b+c*", r"a\.b\+c\*"),
        ("x|y", r"x\|y"),
        ("q\"u'o`te", r"q\x22u\x27o\x60te"),
        ("f47ac10b-58cc-4372-a567-0e02b2c3d479", "f47ac10b-58cc-4372-a567-0e02b2c3d479"),
    ],
)
def test_escape_regex_matches_only_the_value(value: str, pattern: str) -> None:
    assert escape_regex(value) == pattern
    assert re.fullmatch(pattern, value)  # Python's re reads these escapes as RE2 does


def test_alternation_matches_each_value_exactly() -> None:
    pattern = alternation(["1.0", "2[3]"])
    assert re.fullmatch(pattern, "2[3]") and re.fullmatch(pattern, "1.0")
    assert not re.fullmatch(pattern, "1x0")


def test_regex_selector_doubles_backslashes_inside_the_string() -> None:
    assert regex_selector("uuid", ["a.1", "b"]) == r'{uuid=~"a\\.1|b"}'
