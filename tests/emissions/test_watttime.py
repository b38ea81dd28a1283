"""WattTime v3 through a local server replaying /login, region-from-loc and historical answers."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from ceems.emissions.fetch import UnauthorisedError
from ceems.emissions.provider import EmissionFactor, ProviderConfig, ProviderError
from ceems.emissions.watttime import (
    GRAMS_PER_POUND,
    WattTimeProvider,
    lbs_per_mwh_to_g_per_kwh,
)

if TYPE_CHECKING:
    from .conftest import FakeApi

LOGIN, HISTORICAL, REGION_FROM_LOC = "/login", "/v3/historical", "/v3/region-from-loc"
USERNAME, PASSWORD = "ceems-test", "pa55-w0rd:with colon"
START = datetime(2025, 3, 14, 14, 27, 41, 500000, tzinfo=UTC).timestamp()
CAISO_NORTH_G_PER_KWH = 843.0 * 453.59237 / 1000  # the newest point of the fixture


class Clock:
    """Epoch seconds that a test moves forward."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def provider(
    api: FakeApi,
    clock: Clock | None = None,
    env: dict[str, str] | None = None,
    country_code: str = "",
    timeout_s: float = 2.0,
) -> WattTimeProvider:
    config = ProviderConfig(
        country_code=country_code,
        base_url=api.base_url,
        timeout_s=timeout_s,
        env={"WT_USERNAME": USERNAME, "WT_PASSWORD": PASSWORD, "WT_REGION": "CAISO_NORTH"}
        if env is None
        else env,
    )
    return WattTimeProvider(config, clock=clock or Clock())


def serve_login_and_moer(api: FakeApi) -> None:
    api.reply(LOGIN, fixture="wt/login.json")
    api.reply(HISTORICAL, fixture="wt/historical_caiso_north.json")


def fixture_token(load_json: Callable[[str], object]) -> str:
    login = load_json("wt/login.json")
    assert isinstance(login, dict)
    return str(login["token"])


@pytest.mark.parametrize(
    ("lbs_per_mwh", "g_per_kwh"),
    [(0.0, 0.0), (1000.0, 453.59237), (2000.0, 907.18474), (843.0, 382.37836791)],
)
def test_moer_in_lbs_per_mwh_converts_to_grams_per_kwh(
    lbs_per_mwh: float, g_per_kwh: float
) -> None:
    assert lbs_per_mwh_to_g_per_kwh(lbs_per_mwh) == pytest.approx(g_per_kwh, rel=1e-12)


def test_a_pound_is_the_international_avoirdupois_pound() -> None:
    assert GRAMS_PER_POUND == 453.59237


def test_wt_serves_the_newest_moer_of_the_region_in_g_per_kwh(api: FakeApi) -> None:
    serve_login_and_moer(api)
    factors = provider(api).factors()
    assert factors == {
        "CAISO_NORTH": EmissionFactor("CAISO_NORTH", "CAISO_NORTH", CAISO_NORTH_G_PER_KWH)
    }


def test_wt_logs_in_with_basic_auth_then_asks_with_the_bearer_token(
    api: FakeApi, load_json: Callable[[str], object]
) -> None:
    serve_login_and_moer(api)
    provider(api).factors()
    login, historical = api.requests
    expected = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert (login.path, login.headers["authorization"]) == (LOGIN, f"Basic {expected}")
    assert historical.path == HISTORICAL
    assert historical.headers["authorization"] == f"Bearer {fixture_token(load_json)}"


def test_wt_asks_for_the_last_fifteen_minutes_of_co2_moer(api: FakeApi) -> None:
    serve_login_and_moer(api)
    provider(api).factors()
    assert api.requests[1].query == {
        "region": ["CAISO_NORTH"],
        "start": ["2025-03-14T14:12:41+00:00"],
        "end": ["2025-03-14T14:27:41+00:00"],
        "signal_type": ["co2_moer"],
    }


def test_wt_reuses_its_token_until_close_to_expiry(api: FakeApi) -> None:
    serve_login_and_moer(api)
    clock = Clock()
    wt = provider(api, clock)
    wt.factors()
    clock.now += 24 * 60
    wt.factors()
    assert api.paths() == [LOGIN, HISTORICAL, HISTORICAL]


def test_wt_logs_in_again_before_the_token_expires(api: FakeApi) -> None:
    serve_login_and_moer(api)
    clock = Clock()
    wt = provider(api, clock)
    wt.factors()
    clock.now += 26 * 60  # tokens live 30 minutes; renewal starts 5 minutes before
    wt.factors()
    assert api.paths() == [LOGIN, HISTORICAL, LOGIN, HISTORICAL]


def test_wt_logs_in_again_once_when_a_cached_token_is_refused(api: FakeApi) -> None:
    api.reply(LOGIN, fixture="wt/login.json")
    api.reply(HISTORICAL, fixture="wt/historical_caiso_north.json")
    api.reply(HISTORICAL, fixture="wt/unauthorised.json", status=401)
    api.reply(HISTORICAL, fixture="wt/historical_caiso_north.json")
    wt = provider(api)
    wt.factors()
    factors = wt.factors()
    assert factors["CAISO_NORTH"].value_g_per_kwh == pytest.approx(CAISO_NORTH_G_PER_KWH)
    assert api.paths() == [LOGIN, HISTORICAL, HISTORICAL, LOGIN, HISTORICAL]


def test_wt_does_not_retry_when_a_fresh_token_is_refused(api: FakeApi) -> None:
    api.reply(LOGIN, fixture="wt/login.json")
    api.reply(HISTORICAL, fixture="wt/unauthorised.json", status=401)
    with pytest.raises(UnauthorisedError, match=r"^wt: unauthorised"):
        provider(api).factors()
    assert api.paths() == [LOGIN, HISTORICAL]


def test_wt_does_not_retry_a_region_outside_the_plan(api: FakeApi) -> None:
    api.reply(LOGIN, fixture="wt/login.json")
    api.reply(HISTORICAL, fixture="wt/historical_caiso_north.json")
    api.reply(HISTORICAL, fixture="wt/unauthorised.json", status=403)
    wt = provider(api)
    wt.factors()
    with pytest.raises(UnauthorisedError, match=r"^wt: unauthorised \(HTTP 403"):
        wt.factors()
    assert api.paths() == [LOGIN, HISTORICAL, HISTORICAL]


def test_wt_reports_refused_credentials_without_echoing_them(api: FakeApi) -> None:
    api.reply(LOGIN, fixture="wt/unauthorised.json", status=401)
    with pytest.raises(UnauthorisedError, match=r"^wt: unauthorised .*/login") as info:
        provider(api).factors()
    assert PASSWORD not in str(info.value)
    assert base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode() not in str(info.value)


@pytest.mark.parametrize(
    "body", [{}, {"token": ""}, {"token": None}, {"token": 42}, b'"eyJhbGciOiJIUzI1NiJ9.e30.c2ln"']
)
def test_wt_reports_a_login_answer_without_token(api: FakeApi, body: object) -> None:
    api.reply(LOGIN, body=body)
    with pytest.raises(ProviderError, match=r"^wt: login answer has no token$") as info:
        provider(api).factors()
    assert "eyJ" not in str(info.value)


def test_wt_looks_up_the_region_from_the_node_location_once(api: FakeApi) -> None:
    serve_login_and_moer(api)
    api.reply(REGION_FROM_LOC, fixture="wt/region_from_loc.json")
    env = {"WT_USERNAME": USERNAME, "WT_PASSWORD": PASSWORD}
    wt = provider(api, env={**env, "WT_LATITUDE": "38.58", "WT_LONGITUDE": "-121.49"})
    wt.factors()
    factors = wt.factors()
    assert set(factors) == {"CAISO_NORTH"}
    assert api.paths() == [LOGIN, REGION_FROM_LOC, HISTORICAL, HISTORICAL]
    assert api.requests[1].query == {
        "latitude": ["38.58"],
        "longitude": ["-121.49"],
        "signal_type": ["co2_moer"],
    }
    assert api.requests[2].query["region"] == ["CAISO_NORTH"]


def test_wt_falls_back_to_the_node_country_as_region(api: FakeApi) -> None:
    serve_login_and_moer(api)
    env = {"WT_USERNAME": USERNAME, "WT_PASSWORD": PASSWORD}
    provider(api, env=env, country_code="FR").factors()
    assert api.requests[1].query["region"] == ["FR"]


def test_wt_reports_an_empty_answer_with_its_warnings(api: FakeApi) -> None:
    api.reply(LOGIN, fixture="wt/login.json")
    api.reply(HISTORICAL, fixture="wt/historical_empty.json")
    with pytest.raises(
        ProviderError,
        match=r"^wt: no MOER for region CAISO_NORTH .*No data available for the requested time",
    ):
        provider(api).factors()


def test_wt_refuses_moer_in_other_units(api: FakeApi, load_json: Callable[[str], object]) -> None:
    answer = load_json("wt/historical_caiso_north.json")
    assert isinstance(answer, dict)
    answer["meta"]["units"] = "kg_co2_per_mwh"
    api.reply(LOGIN, fixture="wt/login.json")
    api.reply(HISTORICAL, body=answer)
    with pytest.raises(ProviderError, match=r"is in 'kg_co2_per_mwh', not lbs_co2_per_mwh"):
        provider(api).factors()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"meta": {"units": "lbs_co2_per_mwh"}}, "has no 'data' field"),
        ({"data": {"value": 843}}, "'data' is not a JSON array"),
        ({"data": [{"point_time": "2025-03-14T14:25:00+00:00"}]}, "has no 'value' field"),
        ({"data": [{"value": None}]}, "MOER of region CAISO_NORTH is not a number"),
        ({"data": [{"value": "843"}]}, "MOER of region CAISO_NORTH is not a number"),
        ({"data": [843.0]}, "the newest MOER point is not a JSON object"),
    ],
)
def test_wt_reports_an_answer_of_unexpected_shape(api: FakeApi, body: object, message: str) -> None:
    api.reply(LOGIN, fixture="wt/login.json")
    api.reply(HISTORICAL, body=body)
    with pytest.raises(ProviderError, match=f"^wt: .*{message}"):
        provider(api).factors()


def test_wt_reports_a_server_error(api: FakeApi) -> None:
    api.reply(LOGIN, fixture="wt/login.json")
    api.reply(HISTORICAL, fixture="gateway_error.html", status=502)
    with pytest.raises(ProviderError, match=r"^wt: HTTP 502"):
        provider(api).factors()


def test_wt_reports_an_html_page(api: FakeApi) -> None:
    api.reply(LOGIN, fixture="gateway_error.html")
    with pytest.raises(ProviderError, match=r"^wt: answer .*/login is not JSON"):
        provider(api).factors()


def test_wt_reports_malformed_json(api: FakeApi) -> None:
    api.reply(LOGIN, fixture="wt/login.json")
    api.reply(HISTORICAL, body=b'{"data": [{"point_time": "2025-03-14T14:15:00+00:00", "val')
    with pytest.raises(ProviderError, match=r"^wt: answer .* is not JSON"):
        provider(api).factors()


def test_wt_gives_up_on_a_server_that_hangs(api: FakeApi) -> None:
    api.reply(LOGIN, fixture="wt/login.json", delay_s=10)
    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"^wt: no answer .*/login within 0.5 s"):
        provider(api, timeout_s=0.5).factors()
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "env",
    [
        {"WT_PASSWORD": PASSWORD, "WT_REGION": "CAISO_NORTH"},
        {"WT_USERNAME": USERNAME, "WT_REGION": "CAISO_NORTH"},
        {"WT_USERNAME": USERNAME, "WT_PASSWORD": "", "WT_REGION": "CAISO_NORTH"},
    ],
)
def test_wt_needs_a_username_and_a_password(env: dict[str, str]) -> None:
    with pytest.raises(ProviderError, match=r"needs an account in WT_USERNAME and WT_PASSWORD"):
        WattTimeProvider(ProviderConfig(env=env))


def test_wt_needs_a_region_a_location_or_a_country() -> None:
    env = {"WT_USERNAME": USERNAME, "WT_PASSWORD": PASSWORD}
    with pytest.raises(ProviderError, match=r"no region to query: set WT_REGION"):
        WattTimeProvider(ProviderConfig(env=env))


@pytest.mark.parametrize(
    ("latitude", "longitude", "message"),
    [
        ("38.58", "", "must both be decimal degrees"),
        ("north", "-121.49", "must both be decimal degrees"),
        ("91", "0", "is not a latitude in"),
        ("0", "-181", "is not a latitude in"),
    ],
)
def test_wt_refuses_a_malformed_location(latitude: str, longitude: str, message: str) -> None:
    env = {
        "WT_USERNAME": USERNAME,
        "WT_PASSWORD": PASSWORD,
        "WT_LATITUDE": latitude,
        "WT_LONGITUDE": longitude,
    }
    with pytest.raises(ProviderError, match=message):
        WattTimeProvider(ProviderConfig(env=env))


def test_wt_is_built_without_any_request(api: FakeApi) -> None:
    provider(api)
    assert api.requests == []


def test_wt_never_logs_its_password_or_token(
    api: FakeApi, load_json: Callable[[str], object], caplog: pytest.LogCaptureFixture
) -> None:
    api.reply(LOGIN, fixture="wt/login.json")
    api.reply(HISTORICAL, fixture="wt/historical_caiso_north.json")
    api.reply(HISTORICAL, fixture="wt/unauthorised.json", status=401)
    api.reply(HISTORICAL, fixture="wt/historical_caiso_north.json")
    caplog.set_level(logging.DEBUG, logger="ceems.emissions")
    wt = provider(api)
    wt.factors()
    wt.factors()
    assert any(record.name == "ceems.emissions.watttime" for record in caplog.records)
    logged = caplog.text + " ".join(str(vars(record)) for record in caplog.records)
    for secret in (PASSWORD, fixture_token(load_json)):
        assert secret not in logged
