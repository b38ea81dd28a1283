"""The exporter's emissions collector over real provider code and a replaying local API."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry

from ceems.emissions.emaps import ElectricityMapsProvider
from ceems.emissions.provider import ProviderConfig
from ceems.emissions.rte import RECORDS_PATH, RteProvider
from ceems.exporter.collector import NoDataError, NodeContext
from ceems.exporter.collectors.emissions import FACTORY, EmissionsCollector, build_sources

if TYPE_CHECKING:
    from .conftest import FakeApi

METRIC = "ceems_emissions_gCo2_kWh"


class FastRte(RteProvider):
    """RTE refreshed every 0.1 s, so staleness shows within a test."""

    refresh_interval_s = 0.1


def wait_for(predicate: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (callable(predicate) and predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def registry_of(collector: EmissionsCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def test_online_provider_down_or_unauthorised_does_not_hide_the_others(api: FakeApi) -> None:
    api.reply(RECORDS_PATH, fixture="rte/records.json")
    api.reply("/v3/carbon-intensity/latest", status=401, fixture="emaps/unauthorised.json")
    config = ProviderConfig(
        country_code="FR", base_url=api.base_url, timeout_s=1.0, env={"EMAPS_API_TOKEN": "bad"}
    )
    collector = EmissionsCollector(
        "n1", build_sources([FastRte(config), ElectricityMapsProvider(config)])
    )
    try:
        wait_for(lambda: len(api.paths()) >= 2)
        wait_for(lambda: collector.sources[0].sampler.age_s() is not None)  # type: ignore[union-attr]
        registry = registry_of(collector)
        labels = {
            "hostname": "n1",
            "provider": "rte",
            "provider_name": "RTE eCO2 Mix",
            "country_code": "FR",
            "country": "France",
        }
        assert registry.get_sample_value(METRIC, labels) == 19.0
        assert registry.get_sample_value(METRIC, {**labels, "provider": "emaps"}) is None
    finally:
        collector.close()


def test_last_good_factor_expires_when_the_provider_stays_down(api: FakeApi) -> None:
    api.reply(RECORDS_PATH, fixture="rte/records.json")
    api.reply(RECORDS_PATH, status=502, fixture="gateway_error.html")
    config = ProviderConfig(country_code="FR", base_url=api.base_url, timeout_s=1.0)
    collector = EmissionsCollector("n1", build_sources([FastRte(config)]))
    try:
        wait_for(lambda: len(api.requests) >= 2)  # one good answer, then errors
        wait_for(lambda: (collector.sources[0].sampler.age_s() or 0) > 0.35)  # type: ignore[union-attr]
        with pytest.raises(NoDataError, match="502"):
            list(collector.collect())
    finally:
        collector.close()


def factory_options(*providers: str, country: str = "FR") -> argparse.Namespace:
    return argparse.Namespace(
        emissions_providers=list(providers) or None, emissions_country_code=country
    )


def test_providers_without_credentials_are_skipped_not_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("EMAPS_API_TOKEN", "WT_USERNAME", "WT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    collector = FACTORY.build(NodeContext(hostname="n1"), factory_options("owid", "emaps", "wt"))
    try:
        assert [s.provider.name for s in collector.sources] == ["owid"]
        registry = registry_of(collector)
        value = registry.get_sample_value(
            METRIC,
            {
                "hostname": "n1",
                "provider": "owid",
                "provider_name": "OWID",
                "country_code": "FR",
                "country": "France",
            },
        )
        assert value is not None and 0 < value < 200
    finally:
        collector.close()


def test_default_providers_for_a_country_rte_cannot_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("EMAPS_API_TOKEN", "WT_USERNAME", "WT_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    collector = FACTORY.build(NodeContext(hostname="n1"), factory_options(country="DE"))
    try:
        assert sorted(s.provider.name for s in collector.sources) == ["global", "owid"]
    finally:
        collector.close()


def test_unknown_provider_is_skipped_with_the_others_served() -> None:
    collector = FACTORY.build(NodeContext(hostname="n"), factory_options("nope", "global"))
    try:
        assert [s.provider.name for s in collector.sources] == ["global"]
    finally:
        collector.close()


def test_no_usable_provider_is_no_data() -> None:
    collector = FACTORY.build(NodeContext(hostname="n"), factory_options("nope"))
    with pytest.raises(NoDataError):
        list(collector.collect())
