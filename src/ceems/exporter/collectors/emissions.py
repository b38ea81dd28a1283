"""Emission factors of electricity (gCO2e/kWh) per provider, as ceems_emissions_gCo2_kWh.

Static providers (OWID table, world average) are read once; online providers (RTE,
Electricity Maps, WattTime) refresh in the background at their own pace, and a provider that
is down or unauthorised is skipped with a logged reason while the others are still served.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from ceems.emissions.provider import EmissionFactor, EmissionProvider, ProviderConfig, ProviderError
from ceems.emissions.registry import available_providers, build_providers
from ceems.exporter.collector import NoDataError, NodeContext
from ceems.exporter.sampler import BackgroundSampler

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Source:
    provider: EmissionProvider
    static: dict[str, EmissionFactor] | None
    sampler: BackgroundSampler[dict[str, EmissionFactor]] | None

    def factors(self) -> dict[str, EmissionFactor]:
        if self.static is not None:
            return self.static
        assert self.sampler is not None
        return self.sampler.latest().value


@dataclass(frozen=True, slots=True, eq=False)  # registered in a registry: hashed by identity
class EmissionsCollector:
    """Serves the latest factor of every provider that has one."""

    hostname: str
    sources: tuple[_Source, ...]

    def samplers(self) -> Sequence[BackgroundSampler[Any]]:
        """Samplers of the online providers."""
        return [s.sampler for s in self.sources if s.sampler is not None]

    def close(self) -> None:
        """Stop refreshing online providers."""
        for sampler in self.samplers():
            sampler.stop()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """One gauge family; fails only when no provider has a usable factor."""
        family = GaugeMetricFamily(
            "ceems_emissions_gCo2_kWh",
            "Current emission factor in CO2eq grams per kWh",
            labels=["hostname", "provider", "provider_name", "country_code", "country"],
        )
        errors = []
        for source in self.sources:
            try:
                factors = source.factors()
            except NoDataError as err:
                errors.append(str(err))
                continue
            for factor in factors.values():
                family.add_metric(
                    [
                        self.hostname,
                        source.provider.name,
                        source.provider.display_name,
                        factor.country_code,
                        factor.country,
                    ],
                    factor.value_g_per_kwh,
                )
        if not family.samples:
            raise NoDataError("no emission provider has a factor: " + "; ".join(errors))
        yield family


def build_sources(providers: Sequence[EmissionProvider]) -> tuple[_Source, ...]:
    """Read static providers now; start a sampler for each online one."""
    sources = []
    for provider in providers:
        if provider.refresh_interval_s <= 0:
            try:
                sources.append(_Source(provider, provider.factors(), None))
            except ProviderError as err:
                log.warning(
                    "emission provider skipped", extra={"provider": provider.name, "err": str(err)}
                )
            continue
        sampler = BackgroundSampler(
            f"emissions_{provider.name}", provider.factors, provider.refresh_interval_s
        )
        sampler.start()
        sources.append(_Source(provider, None, sampler))
    return tuple(sources)


@dataclass(frozen=True, slots=True)
class EmissionsCollectorFactory:
    """Builds the emissions collector."""

    name: str = "emissions"
    enabled_by_default: bool = False
    description: str = "Emission factors of electricity from OWID, RTE, Electricity Maps, WattTime."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """Providers and the node's country."""
        group.add_argument(
            "--collector.emissions.provider",
            dest="emissions_providers",
            action="append",
            metavar="NAME",
            help="Emission factor provider; repeat for several. Installed: "
            f"{', '.join(available_providers())}. Default: every installed provider that can "
            "serve the country with the credentials in the environment.",
        )
        group.add_argument(
            "--collector.emissions.country-code",
            dest="emissions_country_code",
            default="FR",
            metavar="CC",
            help="ISO 3166-1 alpha-2 code of the country the node draws power in. "
            "Default: %(default)s.",
        )

    def build(self, node: NodeContext, options: argparse.Namespace) -> EmissionsCollector:
        """Build the providers one by one, so one that cannot work never stops the others."""
        config = ProviderConfig(country_code=options.emissions_country_code.upper(), env=os.environ)
        explicit = options.emissions_providers is not None
        providers: list[EmissionProvider] = []
        for name in options.emissions_providers or available_providers():
            try:
                providers.extend(build_providers([name], config))
            except ProviderError as err:
                level = logging.WARNING if explicit else logging.INFO
                log.log(
                    level, "emission provider skipped", extra={"provider": name, "err": str(err)}
                )
        return EmissionsCollector(node.hostname, build_sources(providers))


FACTORY = EmissionsCollectorFactory()
