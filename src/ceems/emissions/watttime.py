"""Marginal emissions (MOER) of one grid region from the WattTime v3 API (account needed)."""

from __future__ import annotations

import base64
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from ceems.emissions.fetch import UnauthorisedError, fetch_json
from ceems.emissions.payload import as_factor, as_list, as_object, as_str, get_field
from ceems.emissions.provider import EmissionFactor, ProviderConfig, ProviderError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.watttime.org"
USERNAME_ENV = "WT_USERNAME"  # the variables CEEMS reads (pkg/emissions/watttime.go)
PASSWORD_ENV = "WT_PASSWORD"
REGION_ENV = "WT_REGION"
LATITUDE_ENV = "WT_LATITUDE"  # where the node is, when its WattTime region is not known
LONGITUDE_ENV = "WT_LONGITUDE"
SIGNAL_TYPE = "co2_moer"
UNITS = "lbs_co2_per_mwh"
GRAMS_PER_POUND = 453.59237  # the international avoirdupois pound, exactly
# WattTime tokens expire 30 minutes after login; renewing 5 minutes early, as CEEMS does,
# keeps a slow request from carrying an expired one.
TOKEN_LIFETIME_S = 30 * 60
TOKEN_RENEW_MARGIN_S = 5 * 60
# MOER comes in 5-minute steps; CEEMS asks for the last 15 minutes and keeps the newest point.
HISTORY_WINDOW_S = 15 * 60
PROVIDER = "wt"


def lbs_per_mwh_to_g_per_kwh(value: float) -> float:
    """A rate in lbs CO2/MWh as grams CO2/kWh: 453.59237 g per lb, 1000 kWh per MWh."""
    return value * GRAMS_PER_POUND / 1000


def parse_historical(payload: object, region: str) -> float:
    """The newest MOER (lbs CO2/MWh) of a /v3/historical answer; points come oldest first."""
    what = f"MOER answer for region {region}"
    obj = as_object(payload, provider=PROVIDER, what=what)
    meta = obj.get("meta")
    meta_obj = meta if isinstance(meta, dict) else {}
    units = meta_obj.get("units", UNITS)
    if units != UNITS:
        raise ProviderError(f"{PROVIDER}: MOER for region {region} is in {units!r}, not {UNITS}")
    points = as_list(
        get_field(obj, "data", provider=PROVIDER, what=what), provider=PROVIDER, what="'data'"
    )
    if not points:
        warnings = meta_obj.get("warnings")
        messages = [
            str(warning.get("message", warning)) if isinstance(warning, dict) else str(warning)
            for warning in (warnings if isinstance(warnings, list) else [])
        ]
        detail = f" (warnings: {'; '.join(messages)})" if messages else ""
        raise ProviderError(
            f"{PROVIDER}: no MOER for region {region} in the last"
            f" {HISTORY_WINDOW_S // 60} minutes{detail}"
        )
    last = as_object(points[-1], provider=PROVIDER, what="the newest MOER point")
    value = get_field(last, "value", provider=PROVIDER, what="the newest MOER point")
    return as_factor(value, provider=PROVIDER, what=f"MOER of region {region}")


def _location(env: Mapping[str, str]) -> tuple[float, float] | None:
    latitude, longitude = env.get(LATITUDE_ENV, ""), env.get(LONGITUDE_ENV, "")
    if not latitude and not longitude:
        return None
    try:
        lat, lon = float(latitude), float(longitude)
    except ValueError as err:
        raise ProviderError(
            f"{PROVIDER}: {LATITUDE_ENV}={latitude!r} and {LONGITUDE_ENV}={longitude!r}"
            " must both be decimal degrees"
        ) from err
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ProviderError(
            f"{PROVIDER}: ({lat}, {lon}) is not a latitude in [-90, 90] and a longitude in"
            " [-180, 180]"
        )
    return lat, lon


class WattTimeProvider:
    """The current MOER of the node's WattTime region, in gCO2/kWh."""

    name = PROVIDER
    display_name = "Watt Time"
    refresh_interval_s = 120.0

    def __init__(self, config: ProviderConfig, *, clock: Callable[[], float] = time.time) -> None:
        username, password = config.env.get(USERNAME_ENV, ""), config.env.get(PASSWORD_ENV, "")
        if not username or not password:
            raise ProviderError(
                f"{PROVIDER}: WattTime needs an account in {USERNAME_ENV} and {PASSWORD_ENV}"
            )
        # The region: configured, else looked up from the node's location at the first fetch,
        # else the country code, which is only right where WattTime's key for a country is its
        # ISO code; WT_REGION or a location is the reliable choice.
        self._region = config.env.get(REGION_ENV, "")
        self._location = None if self._region else _location(config.env)
        if not self._region and self._location is None:
            self._region = config.country_code
        if not self._region and self._location is None:
            raise ProviderError(
                f"{PROVIDER}: no region to query: set {REGION_ENV}, or {LATITUDE_ENV} and"
                f" {LONGITUDE_ENV}, or configure the node's country code"
            )
        self._basic_auth = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._base_url = (config.base_url or DEFAULT_BASE_URL).rstrip("/")
        self._timeout_s = config.timeout_s
        self._clock = clock
        self._lock = threading.Lock()  # the token and the looked-up region are shared state
        self._token = ""
        self._token_renew_at = 0.0

    def factors(self) -> dict[str, EmissionFactor]:
        """The region's newest MOER, keyed by the region."""
        with self._lock:
            reused_token = self._token_valid()
            try:
                return self._fetch_factors()
            except UnauthorisedError as err:
                # A token can be revoked before it expires: log in again, once.
                if err.status != 401 or not reused_token:
                    raise
                log.info("watttime refused the cached token, logging in again")
                self._token = ""
                return self._fetch_factors()

    def _token_valid(self) -> bool:
        return bool(self._token) and self._clock() < self._token_renew_at

    def _get(self, path: str, query: Mapping[str, str], token: str) -> object:
        return fetch_json(
            f"{self._base_url}{path}?{urllib.parse.urlencode(query)}",
            provider=PROVIDER,
            timeout_s=self._timeout_s,
            headers={"Authorization": f"Bearer {token}"},
        )

    def _login(self) -> str:
        if self._token_valid():
            return self._token
        payload = fetch_json(
            f"{self._base_url}/login",
            provider=PROVIDER,
            timeout_s=self._timeout_s,
            headers={"Authorization": f"Basic {self._basic_auth}"},
        )
        token = payload.get("token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            # Checked by hand, not with the payload helpers: their messages quote the value.
            raise ProviderError(f"{PROVIDER}: login answer has no token")
        self._token = token
        self._token_renew_at = self._clock() + TOKEN_LIFETIME_S - TOKEN_RENEW_MARGIN_S
        return token

    def _region_from_location(self, token: str) -> str:
        if self._location is None:
            raise ProviderError(f"{PROVIDER}: no region and no location configured")
        latitude, longitude = self._location
        query = {"latitude": str(latitude), "longitude": str(longitude), "signal_type": SIGNAL_TYPE}
        payload = self._get("/v3/region-from-loc", query, token)
        what = "region-from-loc answer"
        region = get_field(
            as_object(payload, provider=PROVIDER, what=what), "region", provider=PROVIDER, what=what
        )
        self._region = as_str(region, provider=PROVIDER, what="region")
        return self._region

    def _fetch_factors(self) -> dict[str, EmissionFactor]:
        token = self._login()
        region = self._region or self._region_from_location(token)
        end = datetime.fromtimestamp(self._clock(), UTC).replace(microsecond=0)
        start = end - timedelta(seconds=HISTORY_WINDOW_S)
        # ISO 8601 in UTC: CEEMS' Go layout ends in a literal "+07:00" that mislabels local time.
        query = {
            "region": region,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "signal_type": SIGNAL_TYPE,
        }
        lbs_per_mwh = parse_historical(self._get("/v3/historical", query, token), region)
        # CEEMS names a WattTime factor by its region in both labels.
        return {region: EmissionFactor(region, region, lbs_per_mwh_to_g_per_kwh(lbs_per_mwh))}
