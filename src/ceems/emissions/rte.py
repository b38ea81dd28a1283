"""Real-time carbon intensity of France from RTE's eCO2mix, through the ODRÉ open-data API."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from ceems.emissions.fetch import fetch_json
from ceems.emissions.payload import as_factor, as_list, as_object, get_field
from ceems.emissions.provider import EmissionFactor, ProviderConfig, ProviderError

# The Opendatasoft Explore v2.1 API of RTE's open-data portal, as CEEMS queries it
# (pkg/emissions/rte.go); eco2mix-national-tr is the real-time national dataset, 15-min steps.
DEFAULT_BASE_URL = "https://reseaux-energies-rte.opendatasoft.com"
RECORDS_PATH = "/api/explore/v2.1/catalog/datasets/eco2mix-national-tr/records"
COUNTRY_CODE = "FR"
COUNTRY = "France"
PROVIDER = "rte"


def build_records_url(base_url: str, since: date) -> str:
    """URL of the latest eco2mix record since `since` that has a CO2 rate."""
    params = {
        "select": "taux_co2,date_heure",
        "where": f"date_heure in [date'{since.isoformat()}' TO now()] and taux_co2 is not null",
        "order_by": "date_heure desc",
        "offset": "0",
        "limit": "1",
        "timezone": "Europe/Paris",
        "include_links": "false",
        "include_app_metas": "false",
    }
    return f"{base_url.rstrip('/')}{RECORDS_PATH}?{urllib.parse.urlencode(params)}"


def parse_records(payload: object) -> float:
    """The latest non-null `taux_co2` (gCO2/kWh) of an Explore v2.1 records answer."""
    answer = as_object(payload, provider=PROVIDER, what="answer")
    results = get_field(answer, "results", provider=PROVIDER, what="answer")
    for index, record in enumerate(as_list(results, provider=PROVIDER, what="'results'")):
        what = f"results[{index}]"
        fields = as_object(record, provider=PROVIDER, what=what)
        rate = get_field(fields, "taux_co2", provider=PROVIDER, what=what)
        # The API filters out null rates, but a record may still carry one if it ignores `where`.
        if rate is not None:
            return as_factor(rate, provider=PROVIDER, what=f"{what}.taux_co2")
    raise ProviderError(f"{PROVIDER}: eco2mix has no record with a CO2 rate since yesterday")


class RteProvider:
    """France's current factor from eCO2mix; no API key needed."""

    name = PROVIDER
    display_name = "RTE eCO2 Mix"
    refresh_interval_s = 1800.0

    def __init__(self, config: ProviderConfig, *, clock: Callable[[], float] = time.time) -> None:
        if config.country_code not in ("", COUNTRY_CODE):
            raise ProviderError(
                f"{PROVIDER}: RTE eCO2mix covers France (FR) only,"
                f" not the configured country {config.country_code!r}"
            )
        self._base_url = config.base_url or DEFAULT_BASE_URL
        self._timeout_s = config.timeout_s
        self._clock = clock

    def factors(self) -> dict[str, EmissionFactor]:
        """France's latest real-time factor."""
        # From yesterday, not today as CEEMS does: just after midnight today has no rate yet.
        since = datetime.fromtimestamp(self._clock(), UTC).date() - timedelta(days=1)
        payload = fetch_json(
            build_records_url(self._base_url, since), provider=PROVIDER, timeout_s=self._timeout_s
        )
        value = parse_records(payload)
        return {COUNTRY_CODE: EmissionFactor(COUNTRY_CODE, COUNTRY, value)}
