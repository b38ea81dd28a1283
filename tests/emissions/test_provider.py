"""ProviderConfig validation and the value objects of the extension point."""

from __future__ import annotations

import dataclasses

import pytest

from ceems.emissions.provider import EmissionFactor, ProviderConfig, ProviderError


@pytest.mark.parametrize("code", ["fr", "FRA", "F", "1A", "F ", "ZZ-1"])
def test_config_rejects_a_country_code_that_is_not_upper_case_alpha_2(code: str) -> None:
    with pytest.raises(ProviderError, match=r"ISO 3166-1 alpha-2"):
        ProviderConfig(country_code=code)


@pytest.mark.parametrize("code", ["", "FR", "US"])
def test_config_accepts_no_country_or_an_alpha_2_code(code: str) -> None:
    assert ProviderConfig(country_code=code).country_code == code


@pytest.mark.parametrize("timeout_s", [0.0, -1.0, float("nan"), float("inf")])
def test_config_rejects_a_timeout_that_is_not_a_positive_duration(timeout_s: float) -> None:
    with pytest.raises(ProviderError, match=r"timeout"):
        ProviderConfig(timeout_s=timeout_s)


def test_config_defaults_to_no_country_the_real_api_and_ten_seconds() -> None:
    config = ProviderConfig()
    assert (config.country_code, config.base_url, config.timeout_s, dict(config.env)) == (
        "",
        None,
        10.0,
        {},
    )


def test_emission_factor_is_immutable() -> None:
    factor = EmissionFactor("FR", "France", 56.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        factor.value_g_per_kwh = 1.0  # type: ignore[misc]
