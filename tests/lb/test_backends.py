"""Backend pools, health checks, label filtering, forwarded headers and the LB's config.

Pure unit tests: no process is started; health checks and forwarding talk to a tiny HTTP
server in a thread (or to a port nobody listens on).
"""

from __future__ import annotations

import asyncio
import http.server
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import orjson
import pytest
import yaml

from ceems.common.asgiguard import Guard
from ceems.common.config import ConfigError, parse_config
from ceems.common.httpconfig import HttpClientConfig
from ceems.common.webconfig import WebConfig
from ceems.lb import cli
from ceems.lb.backends import Backend, Pool, Pools, async_client, redact
from ceems.lb.config import BackendConfig, LbConfig, Strategy
from ceems.lb.forward import (
    BackendUnavailableError,
    Forwarded,
    filter_labels,
    forward,
    request_headers,
    target_of,
)
from tests.conftest import free_port
from tests.lb.stack import build_store

DAY = timedelta(days=1)

# ---- Pool.pick -------------------------------------------------------------------------------


def backend(
    name: str,
    *,
    in_flight: int = 0,
    alive: bool = True,
    retention: timedelta | None = None,
    kind: str = "tsdb",
) -> Backend:
    """A backend that is never contacted: only its bookkeeping matters to `pick`."""
    config = BackendConfig(web=HttpClientConfig(url=f"http://{name}:9090"))
    return Backend(
        kind, config, httpx.AsyncClient(), alive=alive, in_flight=in_flight, retention=retention
    )


def names(picked: list[Backend | None]) -> list[str | None]:
    """Host names of the picked backends (None when nothing was picked)."""
    return [b.name.removeprefix("http://").split(":")[0] if b else None for b in picked]


def test_round_robin_alternates() -> None:
    a, b, c = backend("a"), backend("b"), backend("c")
    pool = Pool("slurm-0", [a, b, c], Strategy.ROUND_ROBIN)
    assert names([pool.pick() for _ in range(7)]) == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_ignores_load() -> None:
    pool = Pool("slurm-0", [backend("a", in_flight=50), backend("b")], Strategy.ROUND_ROBIN)
    assert names([pool.pick() for _ in range(4)]) == ["a", "b", "a", "b"]


def test_least_connection_picks_the_fewest_in_flight() -> None:
    a, b, c = backend("a", in_flight=3), backend("b", in_flight=1), backend("c", in_flight=7)
    pool = Pool("slurm-0", [a, b, c], Strategy.LEAST_CONNECTION)
    assert names([pool.pick() for _ in range(5)]) == ["b"] * 5
    b.in_flight = 4
    assert pool.pick() is a
    a.in_flight = 9
    assert pool.pick() is b


def test_least_connection_spreads_ties() -> None:
    pool = Pool("slurm-0", [backend("a"), backend("b")], Strategy.LEAST_CONNECTION)
    assert sorted(str(n) for n in names([pool.pick() for _ in range(4)])) == ["a", "a", "b", "b"]


def test_resource_based_prefers_a_backend_holding_the_range() -> None:
    short = backend("short", retention=2 * DAY)
    long = backend("long", retention=30 * DAY, in_flight=10)
    pool = Pool("slurm-0", [short, long], Strategy.RESOURCE_BASED)
    now = time.time()
    # a week back: only `long` holds it, however busy it is
    assert names([pool.pick(oldest_s=now - 7 * 86400) for _ in range(4)]) == ["long"] * 4
    # an hour back: both hold it, the least loaded answers
    assert names([pool.pick(oldest_s=now - 3600) for _ in range(4)]) == ["short"] * 4
    # no time range: least-connection
    assert pool.pick() is short


def test_resource_based_falls_back_to_the_one_reaching_furthest() -> None:
    week = backend("week", retention=7 * DAY)
    month = backend("month", retention=30 * DAY, in_flight=10)
    day = backend("day", retention=DAY)
    pool = Pool("slurm-0", [week, month, day], Strategy.RESOURCE_BASED)
    year_ago = time.time() - 365 * 86400
    assert names([pool.pick(oldest_s=year_ago) for _ in range(4)]) == ["month"] * 4


def test_resource_based_unknown_retention_holds_everything() -> None:
    vm = backend("vm", retention=None, in_flight=5)  # VictoriaMetrics: no flags endpoint
    prom = backend("prom", retention=15 * DAY)
    pool = Pool("slurm-0", [prom, vm], Strategy.RESOURCE_BASED)
    assert pool.pick(oldest_s=time.time() - 100 * 86400) is vm
    assert pool.pick(oldest_s=time.time() - 60) is prom  # both hold it: fewer in flight
    assert pool.pick(oldest_s=time.time() + 3600) is prom  # a future time is "now"


def test_resource_based_skips_dead_backends_holding_the_range() -> None:
    long = backend("long", retention=30 * DAY, alive=False)
    short = backend("short", retention=DAY)
    pool = Pool("slurm-0", [long, short], Strategy.RESOURCE_BASED)
    assert pool.pick(oldest_s=time.time() - 7 * 86400) is short


@pytest.mark.parametrize("strategy", list(Strategy))
def test_dead_backends_are_skipped(strategy: Strategy) -> None:
    a, b, c = backend("a"), backend("b", alive=False), backend("c", in_flight=2)
    pool = Pool("slurm-0", [a, b, c], strategy)
    picked = [pool.pick(oldest_s=time.time() - 60) for _ in range(6)]
    assert b not in picked and None not in picked
    assert pool.live() == [a, c]
    a.alive = c.alive = False
    assert pool.pick() is None
    b.alive = True
    assert pool.pick() is b


@pytest.mark.parametrize("strategy", list(Strategy))
def test_exclude(strategy: Strategy) -> None:
    a, b, c = backend("a"), backend("b"), backend("c", alive=False)
    pool = Pool("slurm-0", [a, b, c], strategy)
    assert all(pool.pick(exclude=[a]) is b for _ in range(4))
    assert all(pool.pick(exclude=(b,), oldest_s=time.time()) is a for _ in range(4))
    assert pool.pick(exclude=[a, b]) is None  # c is dead: nothing left


def test_pyroscope_pools_are_never_resource_based() -> None:
    web = BackendConfig(web=HttpClientConfig(url="http://pyro:4040"))
    tsdb = Pools.build("tsdb", {"c": [web]}, Strategy.RESOURCE_BASED, timedelta(seconds=3))
    pyro = Pools.build("pyroscope", {"c": [web], "empty": []}, Strategy.RESOURCE_BASED, DAY)
    assert tsdb.by_cluster["c"].strategy is Strategy.RESOURCE_BASED
    assert pyro.by_cluster["c"].strategy is Strategy.LEAST_CONNECTION
    assert list(pyro.by_cluster) == ["c"]  # a cluster without servers of a kind has no pool
    assert tsdb.interval_s == 3.0


def test_backend_name_hides_credentials() -> None:
    assert redact("http://user:pw@host:9090/prom") == "http://host:9090/prom"
    one = BackendConfig(web=HttpClientConfig(url="https://u:secret@tsdb.example.org/prometheus/"))
    named = Backend("tsdb", one, httpx.AsyncClient())
    assert "secret" not in named.name and named.name.endswith("/prometheus/")


# ---- a tiny backend --------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Stub

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        with self.server.lock:
            self.server.requests.append((self.command, self.path, dict(self.headers), body))
        status, content = self.server.routes.get(self.path.split("?")[0], (404, b"not found"))
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def do_GET(self) -> None:
        """Answer from the routes."""
        self._serve()

    def do_POST(self) -> None:
        """Answer from the routes."""
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class Stub(http.server.ThreadingHTTPServer):
    """Answers fixed bodies by path and records what it was asked."""

    daemon_threads = True

    def __init__(self, routes: dict[str, tuple[int, bytes]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = routes
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.delay_s = 0.0
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        """Quiet: a client that gave up on a slow answer is expected here."""

    def paths(self) -> list[str]:
        """Paths asked for, in order."""
        with self.lock:
            return [path for _, path, _, _ in self.requests]


def flags(retention: str) -> bytes:
    """A Prometheus /api/v1/status/flags answer."""
    return orjson.dumps({"status": "success", "data": {"storage.tsdb.retention.time": retention}})


HEALTHY = (200, b"Prometheus Server is Healthy.\n")


@pytest.fixture
def stub() -> Iterator[Stub]:
    """A Prometheus-like backend: healthy, 15 days of retention."""
    server = Stub({"/-/healthy": HEALTHY, "/api/v1/status/flags": (200, flags("15d"))})
    yield server
    server.shutdown()
    server.server_close()


def live_backend(url: str, kind: str = "tsdb", **web: Any) -> Backend:
    """A backend with a real client, as the LB builds it."""
    config = BackendConfig(web=HttpClientConfig(url=url, **web))
    return Backend(kind, config, async_client(config.web))


def check(one: Backend, then: Callable[[], None] | None = None) -> None:
    """One health check (two, with `then` run between them), then the client closed."""

    async def run() -> None:
        try:
            await one.check()
            if then is not None:
                then()
                await one.check()
        finally:
            await one.client.aclose()

    asyncio.run(run())


# ---- Backend.check ---------------------------------------------------------------------------


def test_check_marks_alive_and_reads_retention(stub: Stub) -> None:
    one = live_backend(stub.url)
    one.alive = False
    check(one)
    assert one.alive and one.last_error == ""
    assert one.retention == timedelta(days=15)
    assert stub.paths() == ["/-/healthy", "/api/v1/status/flags"]


def test_retention_is_read_once(stub: Stub) -> None:
    one = live_backend(stub.url)
    one.retention = timedelta(days=3)
    check(one)
    assert one.retention == timedelta(days=3)
    assert stub.paths() == ["/-/healthy"]


@pytest.mark.parametrize(
    ("answer", "retention"),
    [
        ((404, b"404 page not found"), None),  # VictoriaMetrics
        ((200, b"not json"), None),
        ((200, b'{"status":"success","data":{}}'), None),
        ((200, flags("1y")), timedelta(days=365)),
        ((200, flags("90d12h")), timedelta(days=90, hours=12)),
    ],
)
def test_unknown_retention_is_none(
    stub: Stub, answer: tuple[int, bytes], retention: timedelta | None
) -> None:
    stub.routes["/api/v1/status/flags"] = answer
    one = live_backend(stub.url)
    check(one)
    assert one.alive
    assert one.retention == retention


@pytest.mark.parametrize("status", [500, 503, 404, 401])
def test_check_marks_dead_on_a_bad_answer(stub: Stub, status: int) -> None:
    stub.routes["/-/healthy"] = (status, b"nope")
    one = live_backend(stub.url)
    check(one)
    assert not one.alive
    assert one.last_error == f"health check answered {status}"
    assert one.retention is None


def test_check_marks_dead_when_nobody_listens() -> None:
    one = live_backend(f"http://127.0.0.1:{free_port()}")
    check(one)
    assert not one.alive
    assert one.last_error.startswith("health check: ConnectError")


def test_a_backend_coming_back_is_alive_again(stub: Stub) -> None:
    stub.routes["/-/healthy"] = (503, b"starting")
    one = live_backend(stub.url)
    states: list[tuple[bool, str]] = []

    def come_back() -> None:
        states.append((one.alive, one.last_error))
        stub.routes["/-/healthy"] = HEALTHY

    check(one, then=come_back)
    assert states == [(False, "health check answered 503")]
    assert one.alive and one.last_error == ""


def test_check_uses_the_path_prefix_and_credentials(stub: Stub) -> None:
    stub.routes = {"/prom/-/healthy": HEALTHY, "/prom/api/v1/status/flags": (200, flags("2d"))}
    basic = {"username": "lb", "password": "pw"}
    one = live_backend(stub.url + "/prom/", basic_auth=basic)
    check(one)
    assert one.alive and one.retention == 2 * DAY
    assert stub.paths() == ["/prom/-/healthy", "/prom/api/v1/status/flags"]
    assert all(h["Authorization"] == "Basic bGI6cHc=" for _, _, h, _ in stub.requests)


def test_pyroscope_is_checked_on_ready_without_retention(stub: Stub) -> None:
    stub.routes["/ready"] = (200, b"ready")
    one = live_backend(stub.url, kind="pyroscope")
    check(one)
    assert one.alive and one.retention is None
    assert stub.paths() == ["/ready"]


def test_check_all_checks_every_backend(stub: Stub) -> None:
    dead_url = f"http://127.0.0.1:{free_port()}"
    configs = [BackendConfig(web=HttpClientConfig(url=u)) for u in (stub.url, dead_url)]
    pools = Pools.build("tsdb", {"a": configs[:1], "b": configs[1:]}, Strategy.ROUND_ROBIN, DAY)

    async def run() -> None:
        try:
            await pools.check_all()
        finally:
            await pools.close()

    asyncio.run(run())
    assert [b.alive for b in pools.all_backends()] == [True, False]


# ---- forward() through the tiny backend -----------------------------------------------------


def forward_once(
    pool: Pool, path: str, headers: list[tuple[bytes, bytes]] | None = None
) -> Forwarded:
    """forward() a GET in a fresh event loop, closing the backends' clients afterwards."""

    async def run() -> Forwarded:
        try:
            return await forward(pool, "GET", path, b"", headers or [], b"")
        finally:
            await Pools("tsdb", {pool.cluster_id: pool}, 1.0).close()

    return asyncio.run(run())


def test_forward_filters_label_names_but_not_label_values(stub: Stub) -> None:
    names_answer = {"status": "success", "data": ["__name__", "instance", "uuid"]}
    values_answer = {"status": "success", "data": ["instance", "login", "compute"]}
    stub.routes["/api/v1/labels"] = (200, orjson.dumps(names_answer))
    stub.routes["/api/v1/label/job/values"] = (200, orjson.dumps(values_answer))
    config = BackendConfig(web=HttpClientConfig(url=stub.url), filter_labels=["instance"])

    def pool() -> Pool:
        return Pool("c", [Backend("tsdb", config, async_client(config.web))], Strategy.ROUND_ROBIN)

    labels = orjson.loads(forward_once(pool(), "/api/v1/labels").body)
    assert labels["data"] == ["__name__", "uuid"]
    # values are not label names: a job that happens to be called "instance" stays
    values = orjson.loads(forward_once(pool(), "/api/v1/label/job/values").body)
    assert values["data"] == ["instance", "login", "compute"]


@pytest.mark.parametrize(
    ("path", "query", "target"),
    [
        ("/api/v1/query", b"", b"/api/v1/query"),
        ("/api/v1/query", b"query=up%7B%7D&time=1", b"/api/v1/query?query=up%7B%7D&time=1"),
        # what a request line cannot carry is escaped, byte for byte, never re-encoded
        ("/api/v1/series", b"match[]=a b&x=caf\xe9#", b"/api/v1/series?match[]=a%20b&x=caf%E9%23"),
        ("/api/v1/label/a b\r\n/values", b"", b"/api/v1/label/a%20b%0D%0A/values"),
        ("/api/v1/label/caf\u00e9/values", b"", b"/api/v1/label/caf%C3%A9/values"),
    ],
)
def test_request_targets_fit_a_request_line(path: str, query: bytes, target: bytes) -> None:
    assert target_of(path, query) == target


@pytest.mark.parametrize(("status", "length"), [(200, [b"2"]), (204, []), (304, [])])
def test_forward_answers_with_its_own_content_length(
    stub: Stub, status: int, length: list[bytes]
) -> None:
    stub.routes["/api/v1/query"] = (status, b"{}" if status == 200 else b"")
    answer = forward_once(
        Pool("c", [live_backend(stub.url)], Strategy.ROUND_ROBIN), "/api/v1/query"
    )
    names = [n.lower() for n, _ in answer.headers]
    assert answer.status == status
    assert [v for n, v in answer.headers if n.lower() == b"content-length"] == length
    assert b"date" not in names and b"server" not in names  # the LB's own server sets them
    assert (b"content-type", b"application/json") in [(n.lower(), v) for n, v in answer.headers]


def test_forward_retries_on_another_replica(stub: Stub) -> None:
    stub.routes["/api/v1/query"] = (200, b'{"status":"success","data":{"result":[]}}')
    dead = live_backend(f"http://127.0.0.1:{free_port()}")
    live = live_backend(stub.url)
    pool = Pool("c", [dead, live], Strategy.ROUND_ROBIN)
    response = forward_once(pool, "/api/v1/query")
    assert response.status == 200
    assert not dead.alive and live.alive
    assert dead.in_flight == live.in_flight == 0


def test_forward_keeps_the_path_prefix(stub: Stub) -> None:
    stub.routes = {"/prom/api/v1/query": (200, b'{"status":"success","data":[]}')}
    prefixed = live_backend(stub.url + "/prom")
    response = forward_once(Pool("c", [prefixed], Strategy.ROUND_ROBIN), "/api/v1/query")
    assert response.status == 200
    assert stub.paths() == ["/prom/api/v1/query"]


def test_forward_without_live_backends_raises_503() -> None:
    pool = Pool("c", [backend("a", alive=False)], Strategy.ROUND_ROBIN)
    with pytest.raises(BackendUnavailableError, match="no live backend") as raised:
        forward_once(pool, "/api/v1/query")
    assert raised.value.status == 503


def test_forward_times_out_with_504(stub: Stub) -> None:
    stub.routes["/api/v1/query"] = (200, b"{}")
    stub.delay_s = 1.0
    slow = live_backend(stub.url, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as raised:
        forward_once(Pool("c", [slow], Strategy.ROUND_ROBIN), "/api/v1/query")
    assert raised.value.status == 504
    assert time.monotonic() - started < 0.9
    assert slow.alive  # slow is not dead


# ---- filter_labels ---------------------------------------------------------------------------

HIDDEN = frozenset({"instance", "hostname"})


def filtered(document: object, hidden: frozenset[str] = HIDDEN) -> Any:
    """filter_labels on `document` as JSON, parsed back."""
    return orjson.loads(filter_labels(orjson.dumps(document), hidden))


def test_filter_labels_on_a_vector_answer() -> None:
    metric = {"__name__": "up", "instance": "n1:9010", "hostname": "n1", "uuid": "1"}
    answer = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": metric, "value": [1.5, "1"]}]},
    }
    result = filtered(answer)["data"]["result"]
    assert result == [{"metric": {"__name__": "up", "uuid": "1"}, "value": [1.5, "1"]}]


def test_filter_labels_on_a_matrix_answer() -> None:
    series = [
        {"metric": {"instance": f"n{i}", "uuid": str(i)}, "values": [[1, "2"], [2, "3"]]}
        for i in range(3)
    ]
    answer = {"status": "success", "data": {"resultType": "matrix", "result": series}}
    result = filtered(answer)["data"]["result"]
    assert [r["metric"] for r in result] == [{"uuid": "0"}, {"uuid": "1"}, {"uuid": "2"}]
    assert all(r["values"] == [[1, "2"], [2, "3"]] for r in result)


def test_filter_labels_on_a_series_answer() -> None:
    answer = {
        "status": "success",
        "data": [
            {"__name__": "a", "instance": "n1", "uuid": "1"},
            {"__name__": "b", "hostname": "n2"},
        ],
    }
    assert filtered(answer)["data"] == [{"__name__": "a", "uuid": "1"}, {"__name__": "b"}]


def test_filter_labels_on_a_labels_answer() -> None:
    answer = {"status": "success", "data": ["__name__", "hostname", "instance", "uuid"]}
    assert filtered(answer) == {"status": "success", "data": ["__name__", "uuid"]}


def test_filter_labels_keeps_values_that_look_like_names() -> None:
    metric = {"job": "instance", "instance": "hostname"}
    answer = {"status": "success", "data": {"result": [{"metric": metric, "value": [1, "0"]}]}}
    assert filtered(answer)["data"]["result"][0]["metric"] == {"job": "instance"}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"status":"error","errorType":"bad_data","error":"parse error"}',
        b'{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}',
        b'{"status":"success","data":{"resultType":"string","result":[1,"x"]}}',
        b"[1, 2]",
        b'{"status":"success","data":null}',
    ],
)
def test_filter_labels_leaves_other_answers_alone(body: bytes) -> None:
    out = filter_labels(body, HIDDEN)
    if body.startswith((b"{", b"[")):
        assert orjson.loads(out) == orjson.loads(body)
    else:
        assert out == body


def test_filter_labels_without_hidden_labels_changes_nothing() -> None:
    answer = {"status": "success", "data": ["instance", "uuid"]}
    assert filtered(answer, frozenset()) == answer


# ---- request_headers -------------------------------------------------------------------------


def test_request_headers_drop_credentials_and_hop_headers() -> None:
    raw = [
        (b"Host", b"lb.example.org"),
        (b"Authorization", b"Basic YWxpY2U6cHc="),
        (b"cookie", b"grafana_session=abc"),
        (b"Proxy-Authorization", b"Basic eA=="),
        (b"Connection", b"keep-alive"),
        (b"Content-Length", b"12"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Accept-Encoding", b"gzip"),
        (b"X-Ceems-Cluster-Id", b"slurm-0"),
        (b"X-Grafana-User", b"alice"),
        (b"Content-Type", b"application/x-www-form-urlencoded"),
        (b"Accept", b"application/json"),
        (b"X-Custom", b"caf\xe9"),
    ]
    raw.append((b"Expect", b"100-continue"))
    kept = request_headers(raw)
    # names lowercased, values byte for byte (a latin-1 byte is not re-encoded as UTF-8)
    assert kept == [
        (b"x-grafana-user", b"alice"),
        (b"content-type", b"application/x-www-form-urlencoded"),
        (b"accept", b"application/json"),
        (b"x-custom", b"caf\xe9"),
        (b"accept-encoding", b"identity"),
    ]


@pytest.mark.parametrize("name", [b"AUTHORIZATION", b"authorization", b"Cookie", b"HOST"])
def test_request_headers_drop_whatever_the_case(name: bytes) -> None:
    assert request_headers([(name, b"secret")]) == [(b"accept-encoding", b"identity")]


# ---- config ----------------------------------------------------------------------------------


def minimal(**lb: Any) -> dict[str, Any]:
    """The smallest valid config, with `ceems_lb` keys replaced by `lb`."""
    section: dict[str, Any] = {
        "backends": [{"id": "slurm-0", "tsdb": [{"web": {"url": "http://localhost:9090"}}]}],
    }
    section.update(lb)
    return {"ceems_lb": section, "ceems_api_server": {"data": {"path": "/var/lib/ceems"}}}


def refused(raw: dict[str, Any]) -> str:
    """The ConfigError message for `raw` (which must be refused)."""
    with pytest.raises(ConfigError) as raised:
        parse_config(yaml.safe_dump(raw), LbConfig, "ceems_lb.yml")
    message = str(raised.value)
    assert message.startswith("ceems_lb.yml: ")
    return message


def test_the_minimal_config_loads() -> None:
    config = parse_config(yaml.safe_dump(minimal()), LbConfig)
    assert config.ceems_lb.strategy is Strategy.ROUND_ROBIN
    assert config.ceems_lb.health_check_interval == timedelta(seconds=10)
    assert config.ceems_lb.user_header_names == ["X-Grafana-User"]
    assert config.has_tsdb() and not config.has_pyroscope()
    assert cli.frontends_of(config) == ["tsdb"]


@pytest.mark.parametrize(
    "server",
    [{}, {"web": {"url": ""}}, {"admin": {"users": ["root"]}}, {"web": {"timeout": 5}}],
)
def test_a_config_without_store_or_api_url_is_refused(server: dict[str, Any]) -> None:
    raw = minimal()
    raw["ceems_api_server"] = server
    message = refused(raw)
    assert "set data.path (or data.url)" in message and "web.url" in message
    assert "nobody's access can be checked" in message


def test_a_config_without_api_server_section_is_refused() -> None:
    raw = minimal()
    del raw["ceems_api_server"]
    assert "ceems_api_server: Field required" in refused(raw)


def test_duplicate_backend_ids_are_refused() -> None:
    tsdb = [{"web": {"url": "http://localhost:9090"}}]
    backends = [{"id": i, "tsdb": tsdb} for i in ("slurm-0", "slurm-1", "slurm-0", "slurm-1")]
    assert "backend ids listed twice: slurm-0, slurm-1" in refused(minimal(backends=backends))


@pytest.mark.parametrize(
    "url", ["localhost:9090", "ftp://localhost:9090", "", "unix:///run/prom.sock", "HTTP//x"]
)
def test_backend_urls_must_be_http(url: str) -> None:
    backends = [{"id": "slurm-0", "tsdb": [{"web": {"url": url}}]}]
    message = refused(minimal(backends=backends))
    assert "ceems_lb.backends.0.tsdb.0.web" in message
    assert "must be an http(s) URL" in message


def test_backend_ids_must_be_cluster_ids() -> None:
    tsdb = [{"web": {"url": "http://localhost:9090"}}]
    raw = minimal(backends=[{"id": i, "tsdb": tsdb} for i in ("slurm-0", "slurm-9", "gpu")])
    raw["clusters"] = [{"id": "slurm-0", "manager": "slurm"}, {"id": "other"}]
    message = refused(raw)
    assert "ids slurm-9, gpu are not in clusters" in message
    raw["clusters"] += [{"id": "slurm-9"}, {"id": "gpu"}]
    assert len(parse_config(yaml.safe_dump(raw), LbConfig).ceems_lb.backends) == 3


@pytest.mark.parametrize(
    ("where", "key"),
    [
        ((), "ceems_lbs"),
        (("ceems_lb",), "tsdb_urls"),  # CEEMS' older key
        (("ceems_lb",), "strategies"),
        (("ceems_lb", "backends", 0), "urls"),
        (("ceems_lb", "backends", 0, "tsdb", 0), "filter_label"),
        (("ceems_lb", "backends", 0, "tsdb", 0, "web"), "username"),
        (("ceems_api_server",), "db_path"),
        (("ceems_api_server", "data"), "pth"),
    ],
)
def test_unknown_keys_are_refused(where: tuple[str | int, ...], key: str) -> None:
    raw = minimal()
    node: Any = raw
    for step in where:
        node = node[step]
    node[key] = "x"
    message = refused(raw)
    assert ".".join(str(s) for s in (*where, key)) + ": unknown key" in message


@pytest.mark.parametrize(
    ("lb", "words"),
    [
        ({"backends": []}, "ceems_lb.backends: List should have at least 1 item"),
        ({"backends": [{"id": "slurm-0"}]}, "lists neither tsdb nor pyroscope servers"),
        ({"backends": [{"id": "", "tsdb": [{"web": {"url": "http://x"}}]}]}, "backends.0.id"),
        ({"strategy": "random"}, "ceems_lb.strategy"),
        ({"allowed_node_metrics": ['up{job="x"}']}, "is not a metric name"),
        ({"allowed_node_metrics": ["sum(up)"]}, "is not a metric name"),
        ({"max_body_bytes": 0}, "ceems_lb.max_body_bytes"),
        ({"health_check_interval": "soon"}, "ceems_lb.health_check_interval"),
        ({"user_header_names": []}, "ceems_lb.user_header_names"),
    ],
)
def test_invalid_lb_sections_are_refused(lb: dict[str, Any], words: str) -> None:
    assert words in refused(minimal(**lb))


CEEMS_SHAPED = """
ceems_lb:
  strategy: resource-based
  backends:
    - id: slurm-0
      tsdb:
        - web:
            url: http://localhost:9090
          filter_labels:
            - instance
        - web:
            url: http://prom-replica:9090/prometheus
            basic_auth:
              username: ceems
              password: secret
            timeout: 60
      pyroscope:
        - web:
            url: http://localhost:4040
    - id: slurm-1
      pyroscope:
        - web:
            url: https://pyroscope.example.org
            tls_config:
              insecure_skip_verify: true
  health_check_interval: 30s

ceems_api_server:
  data:
    path: /var/lib/ceems
    retention_period: 30d
    update_interval: 15m
  admin:
    users: [adm1, adm2]
  web:
    url: http://localhost:9020
    requests_limit: 30
    max_query: 30d
    basic_auth:
      username: lb
      password: api-secret

clusters:
  - id: slurm-0
    manager: slurm
    updaters: [tsdb-0]
  - id: slurm-1
    manager: slurm

updaters:
  - id: tsdb-0
    updater: tsdb
    web:
      url: http://localhost:9090
"""


def test_a_ceems_shaped_file_loads() -> None:
    config = parse_config(CEEMS_SHAPED, LbConfig)
    section = config.ceems_lb
    assert section.strategy is Strategy.RESOURCE_BASED
    assert section.health_check_interval == timedelta(seconds=30)
    slurm0, slurm1 = section.backends
    assert [b.web.url for b in slurm0.tsdb] == [
        "http://localhost:9090",
        "http://prom-replica:9090/prometheus",
    ]
    assert slurm0.tsdb[0].filter_labels == ["instance"]
    assert slurm0.tsdb[1].web.basic_auth is not None
    assert slurm0.tsdb[1].web.timeout == 60
    assert len(slurm0.pyroscope) == 1 and not slurm1.tsdb and len(slurm1.pyroscope) == 1
    server = config.ceems_api_server
    assert server.web is not None and server.web.url == "http://localhost:9020"
    assert server.web.requests_limit == 30
    assert server.data is not None and server.data.path == "/var/lib/ceems"
    assert server.admin.users == ["adm1", "adm2"]
    assert config.has_tsdb() and config.has_pyroscope()
    assert cli.frontends_of(config) == ["tsdb", "pyroscope"]


def test_an_api_server_url_alone_is_enough() -> None:
    raw = minimal(strategy="least-connection")
    raw["ceems_api_server"] = {"web": {"url": "http://api:9020", "requests_limit": 10}}
    config = parse_config(yaml.safe_dump(raw), LbConfig)
    assert config.ceems_api_server.data is None
    assert config.ceems_lb.strategy is Strategy.LEAST_CONNECTION


def test_the_deploy_example_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "ceems-lb" / "config.yml"
    if not example.exists():
        pytest.skip("no deploy/ceems-lb/config.yml")
    monkeypatch.setenv("PROMETHEUS_PASSWORD", "pw")
    config = parse_config(example.read_text(), LbConfig, str(example), expand_env_vars=True)
    assert config.has_tsdb()


# ---- what uvicorn serves -----------------------------------------------------------------------


def test_the_app_is_served_without_a_guard_when_the_web_config_has_no_users() -> None:
    app = cli.build_app(
        LbConfig.model_validate({
            "ceems_lb": {"backends": [{"id": "c", "tsdb": [{"web": {"url": "http://h:9"}}]}]},
            "ceems_api_server": {"web": {"url": "http://api:9020"}},
        })
    )  # fmt: skip
    assert cli.asgi_app(app, WebConfig()) is app
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
    guarded = cli.asgi_app(app, WebConfig(basic_auth_users={"admin": hashed}))
    assert isinstance(guarded, Guard) and guarded.app is app and guarded.auth
    asyncio.run(app.close())


# ---- ceems_lb refusing to start --------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """cli.main() configures the root logger; put pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    httpx_level = logging.getLogger("httpx").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(httpx_level)


def write(path: Path, raw: dict[str, Any] | str) -> Path:
    """`raw` (YAML text or a mapping) written to `path`."""
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def refuses_to_start(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """cli.main(argv) must return 1; its stderr."""
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("ceems_lb: ")
    return captured.err


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("ceems_lb: [unclosed", "not valid YAML"),
        ("- a list\n", "expected a mapping at the top level"),
        ({"ceems_lb": {"backends": []}}, "ceems_lb.backends"),
        ({**minimal(), "extra": 1}, "extra: unknown key"),
        ({**minimal(), "ceems_api_server": {}}, "nobody's access can be checked"),
    ],
)
def test_ceems_lb_refuses_a_broken_config(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
    content: dict[str, Any] | str,
    words: str,
) -> None:
    config = write(tmp_path / "lb.yml", content)
    err = refuses_to_start(["--config.file", str(config)], capsys)
    assert str(config) in err and words in err


def test_ceems_lb_refuses_a_missing_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    assert "cannot read" in refuses_to_start(["--config.file", str(tmp_path / "nope")], capsys)
    assert "--config.file is required" in refuses_to_start([], capsys)


@pytest.mark.parametrize(
    ("pyroscope", "addresses"),
    [
        (False, ["127.0.0.1:1", "127.0.0.1:2"]),
        (True, ["127.0.0.1:1"]),
        (True, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]),
    ],
)
def test_ceems_lb_refuses_a_wrong_number_of_listen_addresses(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
    pyroscope: bool,
    addresses: list[str],
) -> None:
    raw = minimal()
    if pyroscope:
        raw["ceems_lb"]["backends"][0]["pyroscope"] = [{"web": {"url": "http://localhost:4040"}}]
    argv = ["--config.file", str(write(tmp_path / "lb.yml", raw))]
    for address in addresses:
        argv += ["--web.listen-address", address]
    err = refuses_to_start(argv, capsys)
    kinds = 2 if pyroscope else 1
    assert f"--web.listen-address given {len(addresses)} time(s) for {kinds} frontend(s)" in err


def test_ceems_lb_refuses_a_broken_web_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    config = write(tmp_path / "lb.yml", minimal())
    web = write(tmp_path / "web.yml", {"basic_auth_users": {"admin": "plain-text"}})
    argv = ["--config.file", str(config), "--web.config.file", str(web)]
    argv += ["--web.listen-address", f"127.0.0.1:{free_port()}"]
    err = refuses_to_start(argv, capsys)
    assert str(web) in err and "bcrypt" in err


def test_ceems_lb_refuses_a_port_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    raw = minimal()
    raw["ceems_api_server"] = {"data": {"path": str(build_store(tmp_path / "store"))}}
    config = write(tmp_path / "lb.yml", raw)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        err = refuses_to_start(
            ["--config.file", str(config), "--web.listen-address", address], capsys
        )
    assert f"cannot listen on {address}" in err
