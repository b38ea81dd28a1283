"""Rendering rules taken from Go's encoding/json and CEEMS' JSONFloat, elapsed and time strings."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest

from ceems.api.models import METRIC_FIELDS
from ceems.api.render import (
    METRIC_ORDER,
    UNIT_FIELDS,
    USAGE_FIELDS,
    encode,
    encode_float,
    encode_metric_map,
    format_elapsed,
    format_time,
)
from ceems.api.schemas import UnitModel, UsageModel


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (7952.0, "7952"),
        (343597383680.0, "343597383680"),
        (21.23464659, "21.23464659"),
        (53.4770154, "53.47701540"),  # CEEMS keeps 8 decimals, trailing zeros included
        (0.1 + 0.2, "0.30000000"),
        (-1.5, "-1.50000000"),
        (float("inf"), "0"),
        (float("nan"), "0"),
        (1e21, "1e+21"),
    ],
)
def test_metric_values_are_written_as_jsonfloat(value: float, text: str) -> None:
    assert encode_float(value) == text


def test_metric_map_keys_are_sorted_and_non_numbers_dropped() -> None:
    values = {"rte_total": 2, "emaps_total": 1.25, "note": "x", "flag": True}
    assert encode_metric_map(values) == '{"emaps_total":1.25000000,"rte_total":2}'


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "00:00:00"), (497, "00:08:17"), (86_399, "23:59:59"), (86_400, "1-00:00:00"),
     (2 * 86_400 + 3_661, "2-01:01:01"), (-5, "00:00:00")],
)  # fmt: skip
def test_elapsed_is_slurm_formatted(seconds: int, text: str) -> None:
    assert format_elapsed(seconds) == text


@pytest.mark.parametrize(
    ("zone", "text"),
    [("Europe/Paris", "2023-02-21T15:48:20+0100"), ("Europe/Athens", "2023-02-21T16:48:20+0200"),
     ("UTC", "2023-02-21T14:48:20+0000")],
)  # fmt: skip
def test_time_strings_use_the_zone_offset(zone: str, text: str) -> None:
    assert format_time(1676990900000, ZoneInfo(zone)) == text


def test_time_string_of_zero_is_not_available() -> None:
    assert format_time(0, ZoneInfo("UTC")) == "N/A"


def test_strings_are_html_escaped_like_go() -> None:
    assert encode({"b": "<a&b>", "a": "\u2028"}) == '{"a":"\\u2028","b":"\\u003ca\\u0026b\\u003e"}'


def test_metric_order_holds_every_metric() -> None:
    assert sorted(METRIC_ORDER) == sorted(METRIC_FIELDS)


def test_response_models_list_the_rendered_fields_in_order() -> None:
    assert tuple(UnitModel.model_fields) == UNIT_FIELDS
    assert tuple(UsageModel.model_fields) == USAGE_FIELDS
