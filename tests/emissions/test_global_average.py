"""The constant world average, labelled as CEEMS labels it."""

from __future__ import annotations

from ceems.emissions.global_average import GlobalProvider
from ceems.emissions.provider import EmissionFactor, ProviderConfig


def test_global_provider_serves_the_iea_world_average_as_zz() -> None:
    assert GlobalProvider(ProviderConfig()).factors() == {
        "ZZ": EmissionFactor("ZZ", "World", 475.0)
    }


def test_global_provider_ignores_the_node_country() -> None:
    assert set(GlobalProvider(ProviderConfig(country_code="FR")).factors()) == {"ZZ"}
