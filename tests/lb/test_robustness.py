"""Bad input, slow and dead backends, hidden labels and credentials, through a real `ceems_lb`.

Every refusal is answered by the LB itself (the counting proxies in front of the backends
see nothing) and the LB keeps answering afterwards. Backends that are slow, dead, flaky or
coming back are the LB's own problem: clients get an answer promptly, from a live replica
when there is one.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import bcrypt
import httpx
import pytest
import yaml

from ceems.cli.tool.main import main as ceems_tool
from tests.conftest import PrometheusService, free_port
from tests.lb.stack import (
    AT,
    NODE_METRIC,
    T0,
    UNIT_METRIC,
    CountingProxy,
    LbProcess,
    VictoriaMetrics,
    lb_config,
    running,
)

INVALID_CLUSTER = (
    "invalid cluster ID. Set cluster ID using X-Ceems-Cluster-Id header in Prometheus datasource."
)
NO_RESOURCE_PERMISSION = "user do not have permissions to this resource"
NO_USER = (
    "no user header found. Make sure to set send_user_header = true in [dataproxy] section of "
    "Grafana configuration file."
)
ALICE = {"X-Grafana-User": "alice", "X-Ceems-Cluster-Id": "slurm-0"}
ROOT = {"X-Grafana-User": "root", "X-Ceems-Cluster-Id": "slurm-0"}
GOOD_QUERY = f'{UNIT_METRIC}{{uuid="a-1"}}'
GOOD_PARAMS: dict[str, str | int] = {"query": GOOD_QUERY, "time": AT}
FORM = "application/x-www-form-urlencoded"

serving = contextlib.contextmanager(running)


def error_of(response: httpx.Response, status: int, error_type: str) -> str:
    """The envelope's error text, after checking status and errorType."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error"
    assert body["errorType"] == error_type, body
    assert body.get("data") is None
    error: str = body["error"]
    return error


def answer_of(response: httpx.Response) -> Any:
    """`data` of a successful Prometheus answer."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


@contextlib.contextmanager
def nothing_forwarded(*proxies: CountingProxy) -> Iterator[None]:
    """Fails unless no request reaches any of `proxies` inside the block."""
    before = [p.count() for p in proxies]
    yield
    assert [p.count() for p in proxies] == before, "a refused request reached a backend"


def good_query(
    url: str, proxy: CountingProxy, headers: dict[str, str] = ALICE, uuid: str = "a-1"
) -> None:
    """An allowed query answers with alice's series, and it reached the backend once."""
    before = proxy.count()
    response = httpx.get(
        url + "/api/v1/query",
        params={"query": f'{UNIT_METRIC}{{uuid="{uuid}"}}', "time": AT},
        headers=headers,
    )
    result = answer_of(response)["result"]
    assert [r["metric"]["uuid"] for r in result] == [uuid]
    assert proxy.count() == before + 1


def wait_for(condition: Callable[[], bool], timeout_s: float = 8.0) -> None:
    """Poll `condition` until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.fixture
def client(lb: LbProcess) -> Iterator[httpx.Client]:
    """A client of the package's LB."""
    with httpx.Client(base_url=lb.url, timeout=10) as session:
        yield session


# ---- bad input: refused by the LB, nothing reaches a backend ---------------------------------


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("sum(", "invalid query: "),
        (f'{UNIT_METRIC}{{uuid="a-1"', "invalid query: "),
        ("", "invalid query: "),
        (f'rate({UNIT_METRIC}{{uuid="a-1"}}[5x])', "invalid query: "),
    ],
)
def test_malformed_promql_is_bad_data_with_the_reason(
    client: httpx.Client,
    lb: LbProcess,
    prom_proxy: CountingProxy,
    vm_proxy: CountingProxy,
    query: str,
    reason: str,
) -> None:
    with nothing_forwarded(prom_proxy, vm_proxy):
        for response in (
            client.get("/api/v1/query", params={"query": query}, headers=ALICE),
            client.post("/api/v1/query", data={"query": query}, headers=ALICE),
        ):
            error = error_of(response, 400, "bad_data")
            assert error.startswith(reason)
            assert len(error) > len(reason)  # the parser's own words follow
    good_query(lb.url, prom_proxy)


def test_a_query_over_256_kib_is_refused(
    client: httpx.Client, lb: LbProcess, prom_proxy: CountingProxy, vm_proxy: CountingProxy
) -> None:
    query = f'{UNIT_METRIC}{{uuid="a-1"}}' + " + 1" * 70_000
    assert 256 * 1024 < len(query) < 512 * 1024
    with nothing_forwarded(prom_proxy, vm_proxy):
        response = client.post("/api/v1/query", data={"query": query}, headers=ALICE)
        assert "longer than 262144 bytes" in error_of(response, 400, "bad_data")
    good_query(lb.url, prom_proxy)


def test_a_body_over_max_body_bytes_is_413(
    client: httpx.Client, lb: LbProcess, prom_proxy: CountingProxy, vm_proxy: CountingProxy
) -> None:
    body = b"query=" + b"1" * (1 << 20)  # the default max_body_bytes is 1 MiB
    with nothing_forwarded(prom_proxy, vm_proxy):
        for headers in (ALICE, ROOT):  # admins too: the body is read before anything else
            response = client.post(
                "/api/v1/query", content=body, headers={**headers, "Content-Type": FORM}
            )
            assert "larger than 1048576 bytes" in error_of(response, 413, "bad_data")
    good_query(lb.url, prom_proxy)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Ceems-Cluster-Id": "slurm-0"},
        {"X-Grafana-User": "", "X-Ceems-Cluster-Id": "slurm-0"},
        {"X-Webauth-User": "alice", "X-Ceems-Cluster-Id": "slurm-0"},  # not a configured header
        {},  # no cluster either: the user is looked for first
    ],
)
def test_a_request_without_user_is_401(
    client: httpx.Client,
    lb: LbProcess,
    prom_proxy: CountingProxy,
    vm_proxy: CountingProxy,
    headers: dict[str, str],
) -> None:
    with nothing_forwarded(prom_proxy, vm_proxy):
        response = client.get("/api/v1/query", params=GOOD_PARAMS, headers=headers)
        assert error_of(response, 401, "unauthorized") == NO_USER
    good_query(lb.url, prom_proxy)


@pytest.mark.parametrize("cluster", [None, "", "slurm-9", "SLURM-0", "slurm-0,slurm-1"])
@pytest.mark.parametrize("user", ["alice", "root"])
def test_missing_or_unknown_cluster_is_refused_with_ceems_text(
    client: httpx.Client,
    lb: LbProcess,
    prom_proxy: CountingProxy,
    vm_proxy: CountingProxy,
    cluster: str | None,
    user: str,
) -> None:
    headers = {"X-Grafana-User": user}
    if cluster is not None:
        headers["X-Ceems-Cluster-Id"] = cluster
    with nothing_forwarded(prom_proxy, vm_proxy):
        response = client.get("/api/v1/query", params=GOOD_PARAMS, headers=headers)
        assert error_of(response, 400, "bad_data") == INVALID_CLUSTER
    good_query(lb.url, prom_proxy)


# (method, path with query string, content type, body, words of the reason)
BAD_FORMS: list[tuple[str, str, str, bytes, str]] = [
    ("POST", "/api/v1/query", "application/json", b'{"query": "up"}', "must be " + FORM),
    ("POST", "/api/v1/query", "", b"query=up", "not missing"),
    ("POST", "/api/v1/query", "text/plain", b"query=up", "not text/plain"),
    ("POST", "/api/v1/query", FORM, GOOD_QUERY.encode() + b";query=up", "';'"),
    ("POST", "/api/v1/query", FORM, b"query=up&time=1;query=secret", "';'"),
    ("GET", "/api/v1/query?query=up;query=secret", "", b"", "';'"),
    ("GET", "/api/v1/query?query=%ff", "", b"", "percent-escape is not valid UTF-8"),
    ("POST", "/api/v1/query", FORM, b"query=%c3%28", "percent-escape is not valid UTF-8"),
    ("GET", "/api/v1/series?match[]=%80%80", "", b"", "percent-escape is not valid UTF-8"),
    ("POST", "/api/v1/query", FORM, b"query=up\xff", "raw non-ASCII bytes"),
    ("POST", "/api/v1/query", FORM, "query=caf\u00e9".encode(), "raw non-ASCII bytes"),
    ("GET", "/api/v1/query?query=up", FORM, b"query=secret", "a GET request carries no body"),
    ("GET", "/api/v1/labels?match[]=up", "", b"x", "a GET request carries no body"),
]


@pytest.mark.parametrize(("method", "target", "content_type", "body", "reason"), BAD_FORMS)
def test_invalid_forms_are_bad_data(
    client: httpx.Client,
    lb: LbProcess,
    prom_proxy: CountingProxy,
    vm_proxy: CountingProxy,
    method: str,
    target: str,
    content_type: str,
    body: bytes,
    reason: str,
) -> None:
    headers = {**ALICE, **({"Content-Type": content_type} if content_type else {})}
    with nothing_forwarded(prom_proxy, vm_proxy):
        response = client.request(method, target, content=body or None, headers=headers)
        assert reason in error_of(response, 400, "bad_data")
    good_query(lb.url, prom_proxy)


def test_two_content_types_are_refused(
    client: httpx.Client, lb: LbProcess, prom_proxy: CountingProxy
) -> None:
    # the body would be parsed as one type and forwarded declaring another
    headers = [*ALICE.items(), ("Content-Type", "application/x-www-form-urlencoded")]
    headers.append(("Content-Type", "application/json"))
    body = f'query={UNIT_METRIC}{{uuid="a-1"}}'.encode()
    with nothing_forwarded(prom_proxy):
        response = client.post("/api/v1/query", content=body, headers=headers)
        assert "Content-Type" in error_of(response, 400, "bad_data")
    good_query(lb.url, prom_proxy)


def test_raw_non_ascii_in_the_request_line_never_reaches_a_backend(
    lb: LbProcess, prom_proxy: CountingProxy, vm_proxy: CountingProxy
) -> None:
    request = (
        b"GET /api/v1/query?query=up\xff\xfe HTTP/1.1\r\nHost: x\r\n"
        b"X-Grafana-User: alice\r\nX-Ceems-Cluster-Id: slurm-0\r\nConnection: close\r\n\r\n"
    )
    with nothing_forwarded(prom_proxy, vm_proxy):
        host, port = lb.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    good_query(lb.url, prom_proxy)


GARBAGE = [
    ("GET", "/"),
    ("GET", "/graph"),
    ("GET", "/federate?match[]=up"),
    ("GET", "/api/v1/status/config"),
    ("GET", "/api/v1/status/flags"),
    ("GET", "/api/v1/targets"),
    ("GET", "/api/v1/rules"),
    ("GET", "/api/v1/alertmanagers"),
    ("GET", "/api/v1/query_exemplars?query=up"),
    ("GET", "/api/v1/metadata"),
    ("GET", "/api/v1/label/job/values/extra"),
    ("GET", "/api/v1/label//values"),
    ("GET", "/api/v1/label/a%2Fb/values"),
    ("GET", "/api/v1//query?query=up"),
    ("GET", "/api/v1/query/?query=up"),
    ("GET", "/API/V1/QUERY?query=up"),
    ("POST", "/api/v1/admin/tsdb/delete_series?match[]=up"),
    ("POST", "/api/v1/admin/tsdb/snapshot"),
    ("POST", "/api/v1/admin/tsdb/clean_tombstones"),
    ("POST", "/api/v1/write"),
    ("POST", "/api/v1/import/prometheus"),
    ("GET", "/api/v1/export?match[]=up"),
    ("GET", "/-/reload"),
    ("POST", "/-/quit"),
    ("GET", "/%2e%2e/etc/passwd"),
    ("GET", "/%7f%00garbage"),
    ("GET", "/api/v1/query%00?query=up"),
    ("PUT", f"/api/v1/query?query={GOOD_QUERY}"),
    ("DELETE", f"/api/v1/query?query={GOOD_QUERY}"),
    ("DELETE", "/api/v1/series?match[]=up"),
    ("PATCH", f"/api/v1/query?query={GOOD_QUERY}"),
    ("HEAD", f"/api/v1/query?query={GOOD_QUERY}"),
    ("OPTIONS", f"/api/v1/query?query={GOOD_QUERY}"),
    ("PUT", f"/api/v1/label/uuid/values?match[]={GOOD_QUERY}"),
]


@pytest.mark.parametrize(("method", "target"), GARBAGE)
def test_garbage_paths_and_methods_are_forbidden_to_non_admins(
    client: httpx.Client,
    lb: LbProcess,
    prom_proxy: CountingProxy,
    vm_proxy: CountingProxy,
    method: str,
    target: str,
) -> None:
    with nothing_forwarded(prom_proxy, vm_proxy):
        response = client.request(method, target, headers=ALICE)
        if method == "HEAD":
            assert response.status_code == 403
        else:
            assert error_of(response, 403, "forbidden") == NO_RESOURCE_PERMISSION
    good_query(lb.url, prom_proxy)


@pytest.mark.parametrize(
    "encoded",
    [
        "a%20b",
        "caf%C3%A9",
        "a%00b",
        "a%0D%0AX-Injected:%201",
        "x%3Fmatch%5B%5D%3Dnode_secret_info%26y%3D",
        "uuid%23",
        "a%5Cb",
    ],
)
@pytest.mark.parametrize("user", ["alice", "root"])
def test_encoded_label_names_reach_the_backend_encoded(
    client: httpx.Client, prom_proxy: CountingProxy, encoded: str, user: str
) -> None:
    """A label name is forwarded as one encoded path segment: it can neither break the
    request line nor smuggle parameters past the ones that were authorised."""
    before = prom_proxy.count()
    response = client.get(
        f"/api/v1/label/{encoded}/values",
        params={"match[]": GOOD_QUERY},
        headers={**ALICE, "X-Grafana-User": user},
    )
    # Prometheus itself refuses such label names, with its own JSON envelope
    assert "invalid label name" in error_of(response, 400, "bad_data")
    assert prom_proxy.count() == before + 1
    method, path, params, _ = prom_proxy.seen[-1]
    assert (method, params) == ("GET", [("match[]", GOOD_QUERY)])
    # the name exactly as sent (CR and LF too), authorised and forwarded percent-encoded
    name = unquote(encoded)
    assert unquote(path.encode("latin-1").decode()) == f"/api/v1/label/{name}/values"


def test_a_burst_of_bad_requests_leaves_the_lb_answering(
    client: httpx.Client, lb: LbProcess, prom_proxy: CountingProxy, vm_proxy: CountingProxy
) -> None:
    with nothing_forwarded(prom_proxy, vm_proxy):
        for method, target, content_type, body, _ in BAD_FORMS * 5:
            headers = {**ALICE, "Content-Type": content_type or "text/plain"}
            response = client.request(method, target, content=body or None, headers=headers)
            assert response.status_code == 400
        for method, target in GARBAGE:
            assert client.request(method, target, headers=ALICE).status_code == 403
    assert client.get("/health").text == "CEEMS LB is healthy\n"
    good_query(lb.url, prom_proxy)
    good_query(lb.url, vm_proxy, {**ALICE, "X-Ceems-Cluster-Id": "slurm-1"}, "a-9")


# ---- slow, dead, flaky and returning backends ------------------------------------------------


class ProxyOnPort(CountingProxy):
    """A CountingProxy on a chosen port: a backend coming back where it used to be."""

    def __init__(self, backend_url: str, port: int) -> None:
        self._port = port
        super().__init__(backend_url)

    def server_bind(self) -> None:
        """Bind the chosen port instead of any free one."""
        self.server_address = ("127.0.0.1", self._port)
        super().server_bind()


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Healthy to health checks; API requests get `server.answer` (None: connection dropped)."""

    server: FlakyBackend

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.startswith(("/-/healthy", "/api/v1/status/flags")):
            self.send_response(200 if self.path.startswith("/-/") else 404)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        with self.server.lock:
            self.server.requests += 1
        if self.server.answer is None:
            self.close_connection = True  # no status line at all
            return
        self.send_response(self.server.answer)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        """Answer a GET."""
        self._serve()

    def do_POST(self) -> None:
        """Answer a POST."""
        self._serve()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class FlakyBackend(http.server.ThreadingHTTPServer):
    """A replica that passes health checks but fails every query."""

    daemon_threads = True

    def __init__(self, answer: int | None) -> None:
        super().__init__(("127.0.0.1", 0), _FlakyHandler)
        self.answer = answer
        self.requests = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        """Stop serving."""
        self.shutdown()
        self.server_close()


@pytest.fixture
def own_proxy(prometheus: PrometheusService) -> Iterator[CountingProxy]:
    """A counting proxy of this test's own in front of Prometheus (slurm-0's series)."""
    proxy = CountingProxy(prometheus.url)
    yield proxy
    proxy.stop()


def test_a_backend_slower_than_timeout_gives_504_promptly(
    store: Path, own_proxy: CountingProxy, tmp_path: Path
) -> None:
    config = lb_config(store, {"slurm-0": [own_proxy.url]}, timeout_s=0.5)
    with serving(LbProcess(config, tmp_path)) as process:
        good_query(process.url, own_proxy)
        own_proxy.delay_s = 4.0
        started = time.monotonic()
        response = httpx.get(
            process.url + "/api/v1/query",
            params={"query": GOOD_QUERY, "time": AT},
            headers=ALICE,
            timeout=10,
        )
        elapsed = time.monotonic() - started
        assert own_proxy.url in error_of(response, 504, "unavailable")
        assert 0.4 < elapsed < 2.5, elapsed
        own_proxy.delay_s = 0.0
        # slow is not dead: the next request is served again
        good_query(process.url, own_proxy)


def test_a_dead_replica_is_skipped_and_every_request_succeeds(
    store: Path, own_proxy: CountingProxy, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = lb_config(store, {"slurm-0": [dead, own_proxy.url]})
    with serving(LbProcess(config, tmp_path)) as process:
        before = own_proxy.count()
        for _ in range(10):
            good_query(process.url, own_proxy)
        assert own_proxy.count() == before + 10
        metrics = httpx.get(process.url + "/metrics").text
        assert f'backend="{dead}",cluster="slurm-0",frontend="tsdb"}} 0.0' in metrics
        assert f'backend="{own_proxy.url}",cluster="slurm-0",frontend="tsdb"}} 1.0' in metrics


@pytest.mark.parametrize("answer", [503, 502, None], ids=["503", "502", "dropped"])
def test_a_failing_replica_is_retried_on_the_other(
    store: Path, own_proxy: CountingProxy, tmp_path: Path, answer: int | None
) -> None:
    flaky = FlakyBackend(answer)
    try:
        config = lb_config(store, {"slurm-0": [flaky.url, own_proxy.url]})
        with serving(LbProcess(config, tmp_path)) as process:
            for _ in range(6):
                good_query(process.url, own_proxy)
        # round-robin sent it requests (the first one at least), each retried on the other;
        # a dropped connection marks it dead until the next health check
        assert flaky.requests >= (1 if answer is None else 2)
    finally:
        flaky.stop()


def test_all_replicas_dead_is_503_unavailable(store: Path, tmp_path: Path) -> None:
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    config = lb_config(store, {"slurm-0": dead})
    with serving(LbProcess(config, tmp_path)) as process:
        url = process.url + "/api/v1/query"
        params = GOOD_PARAMS
        for headers in (ALICE, ROOT):
            first = httpx.get(url, params=params, headers=headers, timeout=10)
            # before the first health check both may still be tried (502); never a hang
            assert first.status_code in (502, 503)
            assert first.json()["errorType"] == "unavailable"
            started = time.monotonic()
            response = httpx.get(url, params=params, headers=headers, timeout=10)
            assert "no live backend" in error_of(response, 503, "unavailable")
            assert time.monotonic() - started < 1.0
        assert httpx.get(process.url + "/health").status_code == 200


def test_a_backend_that_comes_back_is_used_again(
    store: Path, prometheus: PrometheusService, tmp_path: Path
) -> None:
    port = free_port()
    config = lb_config(store, {"slurm-0": [f"http://127.0.0.1:{port}"]})
    with serving(LbProcess(config, tmp_path)) as process:
        url = process.url + "/api/v1/query"
        params = GOOD_PARAMS
        httpx.get(url, params=params, headers=ALICE)
        error_of(httpx.get(url, params=params, headers=ALICE), 503, "unavailable")
        back = ProxyOnPort(prometheus.url, port)
        try:
            # health checks run every second: within a few the backend is live again
            wait_for(lambda: httpx.get(url, params=params, headers=ALICE).status_code == 200)
            good_query(process.url, back)
        finally:
            back.stop()
        wait_for(lambda: httpx.get(url, params=params, headers=ALICE).status_code == 503)


# ---- filter_labels ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def filtering_lb(
    store: Path,
    prom_proxy: CountingProxy,
    vm_proxy: CountingProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LbProcess]:
    """An LB hiding `instance` from both clusters' answers."""
    config = lb_config(
        store,
        {"slurm-0": [prom_proxy.url], "slurm-1": [vm_proxy.url]},
        filter_labels=["instance"],
    )
    yield from running(LbProcess(config, tmp_path_factory.mktemp("lb-filter")))


UUID_OF = {"slurm-0": "a-1", "slurm-1": "a-9"}


def _read(url: str, endpoint: str, cluster: str, user: str) -> Any:
    selector = f'{UNIT_METRIC}{{uuid="{UUID_OF[cluster]}"}}'
    by_endpoint: dict[str, dict[str, str | int]] = {
        "query": {"query": selector, "time": AT},
        "query_range": {"query": selector, "start": T0, "end": T0 + 300, "step": 60},
        "series": {"match[]": selector, "start": T0, "end": T0 + 600},
        "labels": {"match[]": selector, "start": T0, "end": T0 + 600},
    }
    params = by_endpoint[endpoint]
    headers = {"X-Grafana-User": user, "X-Ceems-Cluster-Id": cluster}
    return answer_of(httpx.get(f"{url}/api/v1/{endpoint}", params=params, headers=headers))


def _label_sets(endpoint: str, data: Any) -> list[set[str]]:
    if endpoint in ("query", "query_range"):
        return [set(r["metric"]) for r in data["result"]]
    if endpoint == "series":
        return [set(s) for s in data]
    return [set(data)]


@pytest.mark.parametrize("endpoint", ["query", "query_range", "series", "labels"])
@pytest.mark.parametrize("cluster", ["slurm-0", "slurm-1"])
@pytest.mark.parametrize("user", ["alice", "root"])
def test_filter_labels_removes_instance(
    lb: LbProcess, filtering_lb: LbProcess, endpoint: str, cluster: str, user: str
) -> None:
    unfiltered = _label_sets(endpoint, _read(lb.url, endpoint, cluster, user))
    filtered = _label_sets(endpoint, _read(filtering_lb.url, endpoint, cluster, user))
    assert unfiltered and all("instance" in labels for labels in unfiltered)
    assert filtered == [labels - {"instance"} for labels in unfiltered]
    assert all({"uuid", "hostname"} <= labels for labels in filtered)


def test_filter_labels_leaves_values_and_label_values_alone(filtering_lb: LbProcess) -> None:
    headers = {"X-Grafana-User": "root", "X-Ceems-Cluster-Id": "slurm-0"}
    response = httpx.get(
        filtering_lb.url + "/api/v1/label/instance/values", headers=headers, params={}
    )
    assert answer_of(response) == ["slurm-0-node:9010"]
    data = _read(filtering_lb.url, "query", "slurm-0", "alice")
    assert float(data["result"][0]["value"][1]) > 0


# ---- credentials -----------------------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_client_authorization_is_never_forwarded(
    store: Path, prometheus: PrometheusService, victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    with_auth, without_auth = CountingProxy(prometheus.url), CountingProxy(victoria.url)
    config = {
        "ceems_lb": {
            "allowed_node_metrics": [NODE_METRIC],
            "health_check_interval": "1s",
            "backends": [
                {
                    "id": "slurm-0",
                    "tsdb": [
                        {
                            "web": {
                                "url": with_auth.url,
                                "basic_auth": {"username": "lb", "password": "backend-secret"},
                            }
                        }
                    ],
                },
                {"id": "slurm-1", "tsdb": [{"web": {"url": without_auth.url}}]},
            ],
        },
        "ceems_api_server": {"data": {"path": str(store)}},
    }
    client_headers = {
        "Authorization": _basic("alice", "client-secret"),
        "Cookie": "grafana_session=stolen",
        "Proxy-Authorization": _basic("alice", "proxy-secret"),
    }
    try:
        with serving(LbProcess(config, tmp_path)) as process:
            for user in ("alice", "root"):
                for cluster, proxy in (("slurm-0", with_auth), ("slurm-1", without_auth)):
                    selector = f'{UNIT_METRIC}{{uuid="{UUID_OF[cluster]}"}}'
                    headers = {
                        **client_headers,
                        "X-Grafana-User": user,
                        "X-Ceems-Cluster-Id": cluster,
                    }
                    response = httpx.get(
                        process.url + "/api/v1/query",
                        params={"query": selector, "time": AT},
                        headers=headers,
                    )
                    answer_of(response)
                    seen = {k.lower(): v for k, v in proxy.seen[-1][3].items()}
                    assert "cookie" not in seen
                    assert "proxy-authorization" not in seen
                    assert "x-ceems-cluster-id" not in seen
                    if proxy is with_auth:
                        assert seen["authorization"] == _basic("lb", "backend-secret")
                    else:
                        assert "authorization" not in seen
        assert with_auth.count() == without_auth.count() == 2
    finally:
        with_auth.stop()
        without_auth.stop()


@contextlib.contextmanager
def lb_with_web_config(config: dict[str, object], workdir: Path) -> Iterator[str]:
    """An LB whose web config requires basic auth (`admin`/`s3cret`); yields its URL."""
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    web_file = workdir / "web.yml"
    web_file.write_text(yaml.safe_dump({"basic_auth_users": {"admin": hashed}}))
    config_file = workdir / "ceems_lb.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    args = [
        sys.executable, "-m", "ceems.lb.cli", "--config.file", str(config_file),
        "--web.listen-address", f"127.0.0.1:{port}", "--web.config.file", str(web_file),
    ]  # fmt: skip
    log = workdir / "ceems_lb.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url + "/health", timeout=1)
                break
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_lb_basic_auth_from_web_config(
    store: Path, own_proxy: CountingProxy, tmp_path: Path
) -> None:
    config = lb_config(store, {"slurm-0": [own_proxy.url]})
    with lb_with_web_config(config, tmp_path) as url:
        params = GOOD_PARAMS
        with nothing_forwarded(own_proxy):
            for auth in (None, _basic("admin", "wrong"), _basic("alice", "s3cret"), "Bearer x"):
                headers = {**ALICE, **({"Authorization": auth} if auth else {})}
                for path in ("/health", "/metrics", "/api/v1/query"):
                    response = httpx.get(url + path, params=params, headers=headers)
                    assert response.status_code == 401, (auth, path)
                    assert response.headers["www-authenticate"].startswith("Basic")
        good = {**ALICE, "Authorization": _basic("admin", "s3cret")}
        assert httpx.get(url + "/health", headers=good).status_code == 200
        good_query(url, own_proxy, good)
        # the LB's own credentials stop at the LB: the backend has none configured
        assert "authorization" not in {k.lower() for k in own_proxy.seen[-1][3]}

        # ceems_tool needs the credentials too
        assert ceems_tool(["check", "lb-healthy", "--url", url]) == 1
        http_config = tmp_path / "http.yml"
        http_config.write_text(
            yaml.safe_dump({"basic_auth": {"username": "admin", "password": "s3cret"}})
        )
        args = ["check", "lb-healthy", "--url", url, "--http.config.file", str(http_config)]
        assert ceems_tool(args) == 0


# ---- operations: ceems_tool and /metrics ----------------------------------------------------


def test_ceems_tool_check_lb_healthy(lb: LbProcess, capsys: pytest.CaptureFixture[str]) -> None:
    assert ceems_tool(["check", "lb-healthy", "--url", lb.url]) == 0
    assert "SUCCESS: CEEMS LB is healthy" in capsys.readouterr().out
    nobody = f"http://127.0.0.1:{free_port()}"
    assert ceems_tool(["check", "lb-healthy", "--url", nobody]) == 1
    assert "FAILED" in capsys.readouterr().err


def test_ceems_tool_check_lb_healthy_as_a_command(lb: LbProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ceems.cli.tool.main", "check", "lb-healthy", "--url", lb.url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("SUCCESS")


def _sample(metrics: str, name: str, default: float | None = None, **labels: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    assert default is not None, f"no {name} with {labels}"
    return default


def test_metrics_expose_requests_and_backend_health(
    client: httpx.Client, lb: LbProcess, prom_proxy: CountingProxy, vm_proxy: CountingProxy
) -> None:
    good_query(lb.url, prom_proxy)
    before = client.get("/metrics").text
    good_query(lb.url, prom_proxy)
    client.get("/api/v1/query", params={"query": "sum("}, headers=ALICE)
    client.get("/api/v1/status/config", headers=ALICE)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    assert "# TYPE ceems_lb_requests_total counter" in after
    assert "# TYPE ceems_lb_backend_up gauge" in after
    for outcome in ("forwarded", "bad_data", "forbidden"):
        old = _sample(before, "ceems_lb_requests_total", 0.0, frontend="tsdb", outcome=outcome)
        new = _sample(after, "ceems_lb_requests_total", frontend="tsdb", outcome=outcome)
        assert new >= old + 1, outcome
    for cluster, proxy in (("slurm-0", prom_proxy), ("slurm-1", vm_proxy)):
        assert _sample(after, "ceems_lb_backend_up", cluster=cluster, backend=proxy.url) == 1.0
