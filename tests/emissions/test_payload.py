"""Typed access to decoded JSON: every unexpected shape is a ProviderError naming the provider."""

from __future__ import annotations

import pytest

from ceems.emissions.payload import as_factor, as_list, as_object, as_str, get_field
from ceems.emissions.provider import ProviderError


@pytest.mark.parametrize(
    ("value", "expected"), [(0, 0.0), (19, 19.0), (12.5, 12.5), (1306.0251, 1306.0251)]
)
def test_as_factor_accepts_non_negative_numbers(value: object, expected: float) -> None:
    assert as_factor(value, provider="x", what="v") == expected


@pytest.mark.parametrize(
    "value",
    [True, False, "42", None, [1], {"v": 1}, float("nan"), float("inf"), -0.5, -12],
)
def test_as_factor_rejects_what_is_not_a_plausible_intensity(value: object) -> None:
    with pytest.raises(ProviderError, match=r"^rte: taux_co2 is not"):
        as_factor(value, provider="rte", what="taux_co2")


@pytest.mark.parametrize("value", [[], "text", 1, None])
def test_as_object_rejects_non_objects(value: object) -> None:
    with pytest.raises(ProviderError, match=r"is not a JSON object"):
        as_object(value, provider="emaps", what="answer")


@pytest.mark.parametrize("value", [{}, "text", 1, None])
def test_as_list_rejects_non_arrays(value: object) -> None:
    with pytest.raises(ProviderError, match=r"is not a JSON array"):
        as_list(value, provider="rte", what="'results'")


@pytest.mark.parametrize("value", ["", 1, None, ["a"]])
def test_as_str_rejects_what_is_not_a_non_empty_string(value: object) -> None:
    with pytest.raises(ProviderError, match=r"is not a non-empty string"):
        as_str(value, provider="wt", what="region")


def test_get_field_returns_null_as_none_but_rejects_a_missing_key() -> None:
    obj: dict[str, object] = {"carbonIntensity": None}
    assert get_field(obj, "carbonIntensity", provider="emaps", what="answer") is None
    with pytest.raises(ProviderError, match=r"emaps: answer has no 'zone' field"):
        get_field(obj, "zone", provider="emaps", what="answer")
