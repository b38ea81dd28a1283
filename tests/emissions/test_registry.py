"""Building providers from the `ceems.emission_providers` entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from ceems.emissions import registry
from ceems.emissions.emaps import ElectricityMapsProvider
from ceems.emissions.global_average import GlobalProvider
from ceems.emissions.owid import OwidProvider
from ceems.emissions.provider import EmissionProvider, ProviderConfig, ProviderError
from ceems.emissions.registry import GROUP, available_providers, build_providers
from ceems.emissions.rte import RteProvider
from ceems.emissions.watttime import WattTimeProvider

CONFIG = ProviderConfig(
    country_code="FR",
    env={"EMAPS_API_TOKEN": "t", "WT_USERNAME": "u", "WT_PASSWORD": "p"},
)


def test_every_built_in_provider_is_installed() -> None:
    assert {"owid", "global", "rte", "emaps", "wt"} <= set(available_providers())


@pytest.mark.parametrize(
    ("name", "cls", "display_name", "refresh_interval_s"),
    [
        ("owid", OwidProvider, "OWID", 0.0),
        ("global", GlobalProvider, "Global Average", 0.0),
        ("rte", RteProvider, "RTE eCO2 Mix", 1800.0),
        ("emaps", ElectricityMapsProvider, "Electricity Maps", 1800.0),
        ("wt", WattTimeProvider, "Watt Time", 120.0),
    ],
)
def test_build_providers_builds_each_built_in_with_ceems_labels(
    name: str, cls: type, display_name: str, refresh_interval_s: float
) -> None:
    (provider,) = build_providers([name], CONFIG)
    assert type(provider) is cls
    assert isinstance(provider, EmissionProvider)
    assert (provider.name, provider.display_name, provider.refresh_interval_s) == (
        name,
        display_name,
        refresh_interval_s,
    )


def test_build_providers_keeps_the_requested_order() -> None:
    names = ["rte", "owid", "global"]
    assert [provider.name for provider in build_providers(names, CONFIG)] == names


def test_build_providers_names_the_unknown_provider_and_the_installed_ones() -> None:
    with pytest.raises(ProviderError) as info:
        build_providers(["owid", "co2signal"], CONFIG)
    message = str(info.value)
    assert "unknown emission provider 'co2signal'" in message
    assert "installed: emaps, global, owid, rte, wt" in message


def test_build_providers_refuses_a_repeated_name() -> None:
    with pytest.raises(ProviderError, match=r"'owid' given twice"):
        build_providers(["owid", "global", "owid"], CONFIG)


def test_build_providers_passes_on_a_constructor_error() -> None:
    with pytest.raises(ProviderError, match=r"EMAPS_API_TOKEN"):
        build_providers(["owid", "emaps"], ProviderConfig(country_code="FR"))


def _installed(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    fake = [EntryPoint(name=name, value=value, group=GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: fake if group == GROUP else [])


def test_build_providers_refuses_a_provider_that_calls_itself_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _installed(monkeypatch, "world", "ceems.emissions.global_average:GlobalProvider")
    with pytest.raises(ProviderError, match=r"'world' .* calls itself 'global'"):
        build_providers(["world"], CONFIG)


def test_build_providers_reports_an_entry_point_that_cannot_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _installed(monkeypatch, "gone", "ceems.emissions.no_such_module:Provider")
    with pytest.raises(
        ProviderError, match=r"'gone' cannot be loaded from ceems.emissions.no_such"
    ):
        build_providers(["gone"], CONFIG)


def test_available_providers_lists_entry_points_sorted(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed(monkeypatch, "zeta", "x:y")
    assert available_providers() == ["zeta"]
