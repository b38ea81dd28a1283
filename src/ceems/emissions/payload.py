"""Typed access to fields of a decoded JSON answer, every surprise a ProviderError."""

from __future__ import annotations

import math
from typing import cast

from ceems.emissions.provider import ProviderError


def as_object(value: object, *, provider: str, what: str) -> dict[str, object]:
    """`value` as a JSON object."""
    if not isinstance(value, dict):
        raise ProviderError(f"{provider}: {what} is not a JSON object: {value!r:.60}")
    return cast("dict[str, object]", value)


def as_list(value: object, *, provider: str, what: str) -> list[object]:
    """`value` as a JSON array."""
    if not isinstance(value, list):
        raise ProviderError(f"{provider}: {what} is not a JSON array: {value!r:.60}")
    return cast("list[object]", value)


def as_str(value: object, *, provider: str, what: str) -> str:
    """`value` as a non-empty JSON string."""
    if not isinstance(value, str) or not value:
        raise ProviderError(f"{provider}: {what} is not a non-empty string: {value!r:.60}")
    return value


def as_factor(value: object, *, provider: str, what: str) -> float:
    """`value` as a carbon intensity: a finite, non-negative JSON number."""
    # bool is an int in Python, and JSON's true must not read as 1 g/kWh.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProviderError(f"{provider}: {what} is not a number: {value!r:.60}")
    number = float(value)
    # json.loads accepts NaN and Infinity; no grid emits a negative amount of CO2.
    if not math.isfinite(number) or number < 0:
        raise ProviderError(f"{provider}: {what} is not a plausible carbon intensity: {number}")
    return number


def get_field(obj: dict[str, object], key: str, *, provider: str, what: str) -> object:
    """The value of `key` in `obj`; missing is an error, null is returned as None."""
    if key not in obj:
        raise ProviderError(f"{provider}: {what} has no {key!r} field")
    return obj[key]
