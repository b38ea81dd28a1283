"""fetch_json against a local server: every failure is a ProviderError naming provider and cause."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from ceems.emissions.fetch import MAX_BODY_BYTES, UnauthorisedError, fetch_json
from ceems.emissions.provider import ProviderError

if TYPE_CHECKING:
    from .conftest import FakeApi


def test_fetch_json_decodes_the_body(api: FakeApi, load_json: Callable[[str], object]) -> None:
    api.reply("/records", fixture="rte/records.json")
    assert fetch_json(f"{api.base_url}/records", provider="rte", timeout_s=2) == load_json(
        "rte/records.json"
    )


def test_fetch_json_asks_for_json_and_sends_extra_headers(api: FakeApi) -> None:
    api.reply("/latest", body={"carbonIntensity": 1})
    fetch_json(
        f"{api.base_url}/latest?zone=FR",
        provider="emaps",
        timeout_s=2,
        headers={"auth-token": "t0ken"},
    )
    (request,) = api.requests
    assert request.headers["accept"] == "application/json"
    assert request.headers["auth-token"] == "t0ken"
    assert request.query == {"zone": ["FR"]}


@pytest.mark.parametrize("status", [400, 404, 429, 500, 502, 503])
def test_fetch_json_reports_an_http_error_status(api: FakeApi, status: int) -> None:
    api.reply("/x", fixture="rte/odsql_error.json", status=status)
    with pytest.raises(ProviderError, match=rf"^rte: HTTP {status} .* from http://127") as info:
        fetch_json(f"{api.base_url}/x", provider="rte", timeout_s=2)
    assert not isinstance(info.value, UnauthorisedError)


@pytest.mark.parametrize("status", [401, 403])
def test_fetch_json_reports_refused_credentials_as_unauthorised(api: FakeApi, status: int) -> None:
    api.reply("/x", fixture="emaps/unauthorised.json", status=status)
    with pytest.raises(UnauthorisedError, match=rf"^emaps: unauthorised \(HTTP {status}") as info:
        fetch_json(f"{api.base_url}/x", provider="emaps", timeout_s=2)
    assert info.value.status == status


def test_fetch_json_reports_an_html_page_served_with_200(api: FakeApi) -> None:
    api.reply("/x", fixture="gateway_error.html", status=200)
    with pytest.raises(ProviderError, match=r"^rte: answer from .* is not JSON .*text/html"):
        fetch_json(f"{api.base_url}/x", provider="rte", timeout_s=2)


def test_fetch_json_reports_an_html_error_page_by_its_status(api: FakeApi) -> None:
    api.reply("/x", fixture="gateway_error.html", status=502)
    with pytest.raises(ProviderError, match=r"^wt: HTTP 502 Bad Gateway"):
        fetch_json(f"{api.base_url}/x", provider="wt", timeout_s=2)


@pytest.mark.parametrize("body", [b'{"results": [', b"", b"\xff\xfe\x00garbage", b"NaN-ish"])
def test_fetch_json_reports_a_malformed_body(api: FakeApi, body: bytes) -> None:
    api.reply("/x", body=body)
    with pytest.raises(ProviderError, match=r"^rte: answer from .* is not JSON"):
        fetch_json(f"{api.base_url}/x", provider="rte", timeout_s=2)


def test_fetch_json_refuses_an_oversized_body(api: FakeApi) -> None:
    api.reply("/x", body=json.dumps(["x" * MAX_BODY_BYTES]))
    with pytest.raises(ProviderError, match=r"larger than"):
        fetch_json(f"{api.base_url}/x", provider="rte", timeout_s=5)


def test_fetch_json_gives_up_on_a_server_that_hangs(api: FakeApi) -> None:
    api.reply("/x", fixture="rte/records.json", delay_s=10)
    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"^rte: no answer from .* within 0.3 s"):
        fetch_json(f"{api.base_url}/x", provider="rte", timeout_s=0.3)
    assert time.monotonic() - started < 3


def test_fetch_json_reports_a_refused_connection() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago has no listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ProviderError, match=r"^emaps: cannot reach http://127.0.0.1:\d+/x"):
        fetch_json(f"http://127.0.0.1:{port}/x", provider="emaps", timeout_s=2)


def test_fetch_json_leaves_the_query_out_of_error_messages(api: FakeApi) -> None:
    api.reply("/x", status=500)
    with pytest.raises(ProviderError) as info:
        fetch_json(f"{api.base_url}/x?token=s3cret", provider="wt", timeout_s=2)
    assert "s3cret" not in str(info.value)
    assert f"{api.base_url}/x" in str(info.value)
