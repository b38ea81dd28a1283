"""The TSDB client against a real Prometheus with backfilled series, and against failures."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from ceems.common.httpconfig import HttpClientConfig
from ceems.tsdb.client import MAX_GET_PARAMS_BYTES, TsdbClient
from ceems.tsdb.errors import TsdbError
from ceems.tsdb.promql import regex_selector
from tests.conftest import PrometheusService, free_port
from tests.tsdb.backfill import SCRAPE_S, LoadedPrometheus, Series, start_loaded

pytestmark = pytest.mark.services

# Backfilled data must be older than Prometheus' head block: put it hours in the past.
BASE_S = (int(time.time()) - 4 * 3600) // 900 * 900
END_S = BASE_S + 3600


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def gauge(uuid: str, host: str, value: float) -> Series:
    points = [(float(t), value) for t in range(BASE_S + 7, END_S, SCRAPE_S)]
    return Series("ceems_test_gauge", {"uuid": uuid, "host": host}, points)


SERIES = [
    gauge("u1", "a", 1.5),
    gauge("u2", "b", 2.5),
    gauge("u.3", "c", 3.5),  # a regex metacharacter in the value
    gauge("uX3", "d", 4.5),  # what an unescaped "u.3" would match too
    Series("ceems_test_special", {"kind": "nan"}, [(END_S - 8.0, math.nan)]),
    Series("ceems_test_special", {"kind": "inf"}, [(END_S - 8.0, math.inf)]),
    Series("ceems_test_special", {"kind": "-inf"}, [(END_S - 8.0, -math.inf)]),
]


class CountingTransport(httpx.BaseTransport):
    """The real transport, recording each request."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)


@pytest.fixture
def prometheus(
    prometheus_service: PrometheusService, promtool: str, monkeypatch: pytest.MonkeyPatch
) -> LoadedPrometheus:
    """Prometheus with SERIES loaded and a small query.max-samples to read back."""
    return start_loaded(
        prometheus_service, promtool, SERIES, monkeypatch, args="--query.max-samples=123456"
    )


@pytest.fixture
def client(prometheus: LoadedPrometheus) -> Iterator[TsdbClient]:
    with TsdbClient(HttpClientConfig(url=prometheus.url)) as tsdb:
        yield tsdb


def test_query_returns_labels_and_values(client: TsdbClient) -> None:
    samples = client.query("ceems_test_gauge", at(END_S - 1))
    values = {s.labels["uuid"]: s.value for s in samples}
    assert values == {"u1": 1.5, "u2": 2.5, "u.3": 3.5, "uX3": 4.5}
    assert {s.labels["host"] for s in samples} == {"a", "b", "c", "d"}
    assert all(s.timestamp_ms == (END_S - 1) * 1000 for s in samples)


def test_query_reads_nan_and_infinities(client: TsdbClient) -> None:
    samples = client.query("ceems_test_special", at(END_S - 1))
    values = {s.labels["kind"]: s.value for s in samples}
    assert math.isnan(values["nan"])
    assert values["inf"] == math.inf and values["-inf"] == -math.inf


def test_query_range_returns_points(client: TsdbClient) -> None:
    streams = client.query_range(
        'ceems_test_gauge{uuid="u1"}', at(BASE_S + 60), at(BASE_S + 120), timedelta(seconds=30)
    )
    assert [s.labels["uuid"] for s in streams] == ["u1"]
    assert streams[0].points == (
        ((BASE_S + 60) * 1000, 1.5),
        ((BASE_S + 90) * 1000, 1.5),
        ((BASE_S + 120) * 1000, 1.5),
    )


def test_series_and_labels(client: TsdbClient) -> None:
    found = client.series([regex_selector("uuid", ["u.3", "u1"])], at(BASE_S), at(END_S))
    assert sorted(s["uuid"] for s in found) == ["u.3", "u1"]  # not uX3: the dot is escaped
    assert {"__name__", "host", "uuid"} <= set(client.labels(["ceems_test_gauge"]))


def test_settings_of_a_running_prometheus(client: TsdbClient) -> None:
    settings = client.settings()
    assert settings.scrape_interval == timedelta(seconds=SCRAPE_S)
    assert settings.evaluation_interval == timedelta(seconds=SCRAPE_S)
    assert settings.retention == timedelta(days=100 * 365)  # scripts/services.sh: 100y
    assert settings.query_max_samples == 123456


def test_delete_series_removes_samples(client: TsdbClient) -> None:
    client.delete_series(['{uuid="u2"}'], at(BASE_S), at(END_S))
    remaining = client.series(["ceems_test_gauge"], at(BASE_S), at(END_S))
    assert sorted(s["uuid"] for s in remaining) == ["u.3", "u1", "uX3"]


def test_bad_promql_is_a_bad_data_error(client: TsdbClient) -> None:
    with pytest.raises(TsdbError, match="bad_data") as caught:
        client.query("sum(", at(END_S))
    assert caught.value.status == 400
    assert caught.value.error_type == "bad_data"
    assert "parse error" in caught.value.error


def test_query_over_the_sample_limit_is_an_execution_error(client: TsdbClient) -> None:
    with pytest.raises(TsdbError) as caught:
        client.query("count_over_time(ceems_test_gauge[1h:10ms])", at(END_S))
    assert caught.value.status == 422
    assert caught.value.error_type == "execution"
    assert "too many samples" in caught.value.error


def test_long_query_goes_in_a_post_body(prometheus: LoadedPrometheus) -> None:
    transport = CountingTransport()
    uuids = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(1200)] + ["u1", "u2"]
    with TsdbClient(HttpClientConfig(url=prometheus.url), transport=transport) as tsdb:
        selector = regex_selector("uuid", uuids)
        samples = tsdb.query(f"ceems_test_gauge{selector}", at(END_S - 1))
        tsdb.query('ceems_test_gauge{uuid="u1"}', at(END_S - 1))
    assert len(selector) > MAX_GET_PARAMS_BYTES
    assert sorted(s.labels["uuid"] for s in samples) == ["u1", "u2"]
    assert [r.method for r in transport.requests] == ["POST", "GET"]


def test_ready(client: TsdbClient) -> None:
    assert client.ready()


def test_connection_refused() -> None:
    with TsdbClient(HttpClientConfig(url=f"http://127.0.0.1:{free_port()}")) as tsdb:
        assert not tsdb.ready()
        with pytest.raises(TsdbError, match="cannot reach") as caught:
            tsdb.query("up", at(END_S))
    assert caught.value.status is None


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_timeout(hanging_url: str) -> None:
    started = time.monotonic()
    with (
        TsdbClient(HttpClientConfig(url=hanging_url, timeout=0.3)) as tsdb,
        pytest.raises(TsdbError, match=r"no answer .* within 0\.3s") as caught,
    ):
        tsdb.query("up", at(END_S))
    assert time.monotonic() - started < 5
    assert caught.value.status is None


def test_naive_times_are_refused() -> None:
    with (
        TsdbClient(HttpClientConfig(url="http://127.0.0.1:1")) as tsdb,
        pytest.raises(ValueError, match="naive"),
    ):
        tsdb.query("up", datetime(2024, 1, 1))
