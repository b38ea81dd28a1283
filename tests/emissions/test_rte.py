"""RTE eCO2mix through a local server replaying Opendatasoft Explore v2.1 answers."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from ceems.emissions.provider import EmissionFactor, ProviderConfig, ProviderError
from ceems.emissions.rte import RECORDS_PATH, RteProvider

if TYPE_CHECKING:
    from .conftest import FakeApi

NOW = datetime(2025, 3, 14, 0, 10, tzinfo=UTC).timestamp()  # just after midnight


def provider(api: FakeApi, timeout_s: float = 2.0) -> RteProvider:
    config = ProviderConfig(country_code="FR", base_url=api.base_url, timeout_s=timeout_s)
    return RteProvider(config, clock=lambda: NOW)


def test_rte_serves_the_latest_co2_rate_of_france(api: FakeApi) -> None:
    api.reply(RECORDS_PATH, fixture="rte/records.json")
    assert provider(api).factors() == {"FR": EmissionFactor("FR", "France", 19.0)}


def test_rte_asks_for_the_newest_non_null_rate_since_yesterday(api: FakeApi) -> None:
    api.reply(RECORDS_PATH, fixture="rte/records.json")
    provider(api).factors()
    (request,) = api.requests
    assert request.path == "/api/explore/v2.1/catalog/datasets/eco2mix-national-tr/records"
    assert request.query == {
        "select": ["taux_co2,date_heure"],
        "where": ["date_heure in [date'2025-03-13' TO now()] and taux_co2 is not null"],
        "order_by": ["date_heure desc"],
        "offset": ["0"],
        "limit": ["1"],
        "timezone": ["Europe/Paris"],
        "include_links": ["false"],
        "include_app_metas": ["false"],
    }
    assert "auth-token" not in request.headers and "authorization" not in request.headers


def test_rte_skips_a_record_whose_rate_is_null(api: FakeApi) -> None:
    api.reply(RECORDS_PATH, fixture="rte/records_leading_null.json")
    assert provider(api).factors()["FR"].value_g_per_kwh == 21.0


@pytest.mark.parametrize(
    "body",
    [{"total_count": 0, "results": []}, {"total_count": 1, "results": [{"taux_co2": None}]}],
)
def test_rte_reports_no_record_with_a_rate(api: FakeApi, body: object) -> None:
    api.reply(RECORDS_PATH, body=body)
    with pytest.raises(ProviderError, match=r"^rte: eco2mix has no record with a CO2 rate"):
        provider(api).factors()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"total_count": 1}, "answer has no 'results' field"),
        ({"results": {"taux_co2": 19}}, "'results' is not a JSON array"),
        ({"results": [{"date_heure": "2025-03-14T00:00:00+01:00"}]}, "has no 'taux_co2' field"),
        ({"results": [{"taux_co2": "19"}]}, r"results\[0\].taux_co2 is not a number"),
        ({"results": [{"taux_co2": -3}]}, "is not a plausible carbon intensity"),
        ({"results": ["19"]}, r"results\[0\] is not a JSON object"),
        ([19], "answer is not a JSON object"),
    ],
)
def test_rte_reports_an_answer_of_unexpected_shape(
    api: FakeApi, body: object, message: str
) -> None:
    api.reply(RECORDS_PATH, body=body)
    with pytest.raises(ProviderError, match=f"^rte: .*{message}"):
        provider(api).factors()


def test_rte_reports_a_server_error(api: FakeApi) -> None:
    api.reply(RECORDS_PATH, fixture="rte/odsql_error.json", status=500)
    with pytest.raises(ProviderError, match=r"^rte: HTTP 500"):
        provider(api).factors()


def test_rte_reports_a_rejected_query(api: FakeApi) -> None:
    api.reply(RECORDS_PATH, fixture="rte/odsql_error.json", status=400)
    with pytest.raises(ProviderError, match=r"^rte: HTTP 400"):
        provider(api).factors()


def test_rte_reports_an_html_page(api: FakeApi) -> None:
    api.reply(RECORDS_PATH, fixture="gateway_error.html")
    with pytest.raises(ProviderError, match=r"^rte: answer .* is not JSON"):
        provider(api).factors()


def test_rte_reports_malformed_json(api: FakeApi) -> None:
    api.reply(RECORDS_PATH, body=b'{"total_count": 57, "results": [{"taux_co2": 19')
    with pytest.raises(ProviderError, match=r"^rte: answer .* is not JSON"):
        provider(api).factors()


def test_rte_gives_up_on_a_server_that_hangs(api: FakeApi) -> None:
    api.reply(RECORDS_PATH, fixture="rte/records.json", delay_s=10)
    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"^rte: no answer .* within 0.5 s"):
        provider(api, timeout_s=0.5).factors()
    assert time.monotonic() - started < 3


def test_rte_refuses_a_node_outside_france() -> None:
    with pytest.raises(ProviderError, match=r"covers France \(FR\) only, not .* 'DE'"):
        RteProvider(ProviderConfig(country_code="DE"))


@pytest.mark.parametrize("code", ["", "FR"])
def test_rte_is_built_without_any_request(api: FakeApi, code: str) -> None:
    RteProvider(ProviderConfig(country_code=code, base_url=api.base_url))
    assert api.requests == []
