"""Real-time carbon intensity of one grid zone from the Electricity Maps API (token needed)."""

from __future__ import annotations

import urllib.parse

from ceems.emissions.fetch import fetch_json
from ceems.emissions.owid import load_owid_table
from ceems.emissions.payload import as_factor, as_object, get_field
from ceems.emissions.provider import EmissionFactor, ProviderConfig, ProviderError

# CEEMS' base (pkg/emissions/emaps.go); the v3 path is added per request.
DEFAULT_BASE_URL = "https://api.electricitymap.org"
TOKEN_ENV = "EMAPS_API_TOKEN"  # the variable CEEMS reads
ZONE_ENV = "EMAPS_ZONE"  # a zone finer than the country, such as "US-CAL-CISO"
PROVIDER = "emaps"


def parse_latest(payload: object, zone: str) -> float:
    """`carbonIntensity` (gCO2eq/kWh) of a /v3/carbon-intensity/latest answer."""
    what = f"answer for zone {zone}"
    obj = as_object(payload, provider=PROVIDER, what=what)
    value = get_field(obj, "carbonIntensity", provider=PROVIDER, what=what)
    if value is None:
        raise ProviderError(f"{PROVIDER}: no carbon intensity for zone {zone} right now (null)")
    return as_factor(value, provider=PROVIDER, what=f"carbonIntensity of zone {zone}")


class ElectricityMapsProvider:
    """The latest factor of the node's zone."""

    # One zone, not CEEMS' loop over every zone: a free token serves a single zone, and the
    # loop makes hundreds of requests every half hour.

    name = PROVIDER
    display_name = "Electricity Maps"
    refresh_interval_s = 1800.0

    def __init__(self, config: ProviderConfig) -> None:
        token = config.env.get(TOKEN_ENV, "")
        if not token:
            raise ProviderError(f"{PROVIDER}: Electricity Maps needs an API token in {TOKEN_ENV}")
        zone = config.env.get(ZONE_ENV, "") or config.country_code
        if not zone:
            raise ProviderError(
                f"{PROVIDER}: no zone to query: configure the node's country code or set {ZONE_ENV}"
            )
        self._token = token
        self._zone = zone
        # CEEMS names a zone from the /zones endpoint; a country's OWID name avoids that request.
        known = load_owid_table().get(zone)
        self._zone_name = known.country if known else zone
        self._base_url = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._timeout_s = config.timeout_s

    def factors(self) -> dict[str, EmissionFactor]:
        """The zone's latest factor, keyed by the zone."""
        query = urllib.parse.urlencode({"zone": self._zone})
        payload = fetch_json(
            f"{self._base_url}/v3/carbon-intensity/latest?{query}",
            provider=PROVIDER,
            timeout_s=self._timeout_s,
            headers={"auth-token": self._token},
        )
        value = parse_latest(payload, self._zone)
        return {self._zone: EmissionFactor(self._zone, self._zone_name, value)}
