"""Electricity Maps through a local server replaying /v3/carbon-intensity/latest answers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from ceems.emissions.emaps import ElectricityMapsProvider
from ceems.emissions.fetch import UnauthorisedError
from ceems.emissions.provider import EmissionFactor, ProviderConfig, ProviderError

if TYPE_CHECKING:
    from .conftest import FakeApi

LATEST = "/v3/carbon-intensity/latest"
TOKEN = "emaps-t0ken-4f2a"


def provider(
    api: FakeApi, env: dict[str, str] | None = None, timeout_s: float = 2.0
) -> ElectricityMapsProvider:
    config = ProviderConfig(
        country_code="FR",
        base_url=api.base_url,
        timeout_s=timeout_s,
        env={"EMAPS_API_TOKEN": TOKEN, **(env or {})},
    )
    return ElectricityMapsProvider(config)


def test_emaps_serves_the_latest_intensity_of_the_node_country(api: FakeApi) -> None:
    api.reply(LATEST, fixture="emaps/latest_fr.json")
    assert provider(api).factors() == {"FR": EmissionFactor("FR", "France", 33.0)}


def test_emaps_sends_the_zone_and_the_token_header(api: FakeApi) -> None:
    api.reply(LATEST, fixture="emaps/latest_fr.json")
    provider(api).factors()
    (request,) = api.requests
    assert request.path == LATEST
    assert request.query == {"zone": ["FR"]}
    assert request.headers["auth-token"] == TOKEN


def test_emaps_queries_a_configured_zone_and_names_it_by_its_key(api: FakeApi) -> None:
    api.reply(LATEST, fixture="emaps/latest_us_cal_ciso.json")
    factors = provider(api, env={"EMAPS_ZONE": "US-CAL-CISO"}).factors()
    assert api.requests[0].query == {"zone": ["US-CAL-CISO"]}
    assert factors == {"US-CAL-CISO": EmissionFactor("US-CAL-CISO", "US-CAL-CISO", 212.0)}


@pytest.mark.parametrize("status", [401, 403])
def test_emaps_reports_a_refused_token_without_echoing_it(api: FakeApi, status: int) -> None:
    api.reply(LATEST, fixture="emaps/unauthorised.json", status=status)
    with pytest.raises(UnauthorisedError, match=f"^emaps: unauthorised \\(HTTP {status}") as info:
        provider(api).factors()
    assert TOKEN not in str(info.value)


def test_emaps_reports_a_null_intensity(api: FakeApi) -> None:
    api.reply(LATEST, fixture="emaps/latest_null.json")
    with pytest.raises(ProviderError, match=r"^emaps: no carbon intensity for zone FR right now"):
        provider(api).factors()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"zone": "FR", "datetime": "2025-03-14T14:00:00.000Z"}, "has no 'carbonIntensity'"),
        ({"zone": "FR", "carbonIntensity": "33"}, "carbonIntensity of zone FR is not a number"),
        ({"zone": "FR", "carbonIntensity": True}, "carbonIntensity of zone FR is not a number"),
        ([{"carbonIntensity": 33}], "answer for zone FR is not a JSON object"),
    ],
)
def test_emaps_reports_an_answer_of_unexpected_shape(
    api: FakeApi, body: object, message: str
) -> None:
    api.reply(LATEST, body=body)
    with pytest.raises(ProviderError, match=f"^emaps: .*{message}"):
        provider(api).factors()


def test_emaps_reports_a_server_error(api: FakeApi) -> None:
    api.reply(LATEST, body={"message": "internal error"}, status=500)
    with pytest.raises(ProviderError, match=r"^emaps: HTTP 500"):
        provider(api).factors()


def test_emaps_reports_an_html_page(api: FakeApi) -> None:
    api.reply(LATEST, fixture="gateway_error.html")
    with pytest.raises(ProviderError, match=r"^emaps: answer .* is not JSON"):
        provider(api).factors()


def test_emaps_reports_malformed_json(api: FakeApi) -> None:
    api.reply(LATEST, body=b'{"zone": "FR", "carbonIntensity": 3')
    with pytest.raises(ProviderError, match=r"^emaps: answer .* is not JSON"):
        provider(api).factors()


def test_emaps_gives_up_on_a_server_that_hangs(api: FakeApi) -> None:
    api.reply(LATEST, fixture="emaps/latest_fr.json", delay_s=10)
    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"^emaps: no answer .* within 0.5 s"):
        provider(api, timeout_s=0.5).factors()
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("env", [{}, {"EMAPS_API_TOKEN": ""}])
def test_emaps_needs_a_token(env: dict[str, str]) -> None:
    with pytest.raises(ProviderError, match=r"needs an API token in EMAPS_API_TOKEN"):
        ElectricityMapsProvider(ProviderConfig(country_code="FR", env=env))


def test_emaps_needs_a_zone() -> None:
    with pytest.raises(ProviderError, match=r"no zone to query"):
        ElectricityMapsProvider(ProviderConfig(env={"EMAPS_API_TOKEN": TOKEN}))


def test_emaps_is_built_without_any_request(api: FakeApi) -> None:
    provider(api)
    assert api.requests == []
