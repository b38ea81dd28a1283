"""The world-average carbon intensity of electricity, a constant."""

from __future__ import annotations

from ceems.emissions.provider import EmissionFactor, ProviderConfig

# The world average CEEMS' global provider serves ("Global Average", IEA figure). Later CEEMS
# releases moved to 445 g/kWh (IEA Electricity 2025); we keep 475 until the project decides to
# follow (docs/compatibility.md).
WORLD_AVERAGE_G_PER_KWH = 475.0
# CEEMS labels the world with ISO 3166-1's user-assigned "ZZ" so Grafana can select it like a
# country (pkg/emissions/global.go).
WORLD_CODE = "ZZ"
WORLD_NAME = "World"


class GlobalProvider:
    """One factor for the whole world, whatever the node's country."""

    name = "global"
    display_name = "Global Average"  # CEEMS' provider_name for the 475 g/kWh figure
    refresh_interval_s = 0.0

    def __init__(self, config: ProviderConfig) -> None:
        # Nothing to configure: the world average applies in every country.
        del config

    def factors(self) -> dict[str, EmissionFactor]:
        """The world average, keyed by "ZZ"."""
        return {WORLD_CODE: EmissionFactor(WORLD_CODE, WORLD_NAME, WORLD_AVERAGE_G_PER_KWH)}
