"""Ownership from a running API server: `ceems_lb` with `ceems_api_server.web.url`.

The real API server app (`create_app` on a read-only engine over the LB test store, plus
alice's many extra units) is served by uvicorn on a loopback port, behind a wrapper that
records each request and can make it fail. `ceems_lb` runs as a real process in front of
the package's Prometheus (through its counting proxy) and asks that API server who may see
what: `/api/v1/clusters/admin` for admins, `/api/v1/units/verify` in batches for units.
A refused or unanswerable check never lets a query reach Prometheus.

Also unit tests of `CachedOwnership` (over a fake source) and of `ApiOwnership` (over an
httpx mock transport).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from ceems.api.app import create_app
from ceems.api.config import ApiServerConfig, DataConfig
from ceems.api.store.engine import create_store_engine, read_only_engine
from ceems.api.store.writes import StoreWriter
from ceems.lb import ownership as ownership_module
from ceems.lb.config import ApiServerSection
from ceems.lb.ownership import (
    VERIFY_BATCH,
    ApiOwnership,
    CachedOwnership,
    OwnershipUnavailableError,
    build_ownership,
)
from tests.conftest import free_port
from tests.lb.stack import (
    AT,
    SECRET_METRIC,
    T0,
    UNIT_METRIC,
    CountingProxy,
    LbProcess,
    build_store,
    cpu_rate,
    lb_config,
    unit,
)

VERIFY = "/api/v1/units/verify"
ADMIN = "/api/v1/clusters/admin"
NO_UNIT = "user do not have permissions to view unit metrics"
# alice's extra units on slurm-0: 450 to read in three batches, 449 more beside bob's w-1.
MANY = [f"u-{i:03d}" for i in range(450)]
MOSTLY = [f"v-{i:03d}" for i in range(449)]
BOBS_LAST = "w-1"  # sorts after every v-: the refusal is in the last batch
NOBODYS = [f"x-{i:03d}" for i in range(450)]


# ---------------------------------------------------------------- the API server


@dataclass
class Recorder:
    """An ASGI wrapper: records (path, query pairs, user) and may answer `fail_status`."""

    app: Any
    seen: list[tuple[str, list[tuple[str, str]], str]] = field(default_factory=list)
    fail_status: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            query = parse_qsl(scope["query_string"].decode(), keep_blank_values=True)
            with self.lock:
                self.seen.append((scope["path"], query, headers.get("x-grafana-user", "")))
            if self.fail_status is not None:
                await send({"type": "http.response.start", "status": self.fail_status,
                            "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
                await send({"type": "http.response.body", "body": b"failing on purpose"})
                return
        await self.app(scope, receive, send)

    def requests(self, path: str | None = None) -> list[tuple[str, list[tuple[str, str]], str]]:
        """Requests so far (to `path` only when given)."""
        with self.lock:
            return [s for s in self.seen if path is None or s[0] == path]

    def verified(self) -> list[list[str]]:
        """The uuids of each `/units/verify` request so far."""
        return [[v for k, v in q if k == "uuid"] for _, q, _ in self.requests(VERIFY)]

    def clear(self) -> None:
        """Forget what was seen."""
        with self.lock:
            self.seen.clear()


class ApiServer:
    """The API server app (read-only engine on `store`) served by uvicorn in a thread."""

    def __init__(self, store: Path) -> None:
        config = ApiServerConfig.model_validate(
            {
                "ceems_api_server": {"data": {"path": str(store)}},
                "clusters": [
                    {"id": "slurm-0", "manager": "slurm"},
                    {"id": "slurm-1", "manager": "slurm"},
                ],
            }
        )
        self.engine = read_only_engine(config.ceems_api_server.data)
        self.recorder = Recorder(create_app(config, self.engine))
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.recorder, host="127.0.0.1", port=self.port, lifespan="off",
                log_level="warning", access_log=False,
            )
        )  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve, and wait until it answers."""
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        self.recorder.clear()

    def stop(self) -> None:
        """Stop serving (connections are closed) and release the store."""
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.engine.dispose()


@pytest.fixture(scope="module")
def api_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LB test store plus alice's MANY and MOSTLY units and bob's w-1 on slurm-0."""
    data_dir = build_store(tmp_path_factory.mktemp("lb-api-store"))
    engine = create_store_engine(DataConfig(path=str(data_dir)))
    writer = StoreWriter(engine)
    units = [unit("slurm-0", u, "alice", "p1") for u in MANY + MOSTLY]
    units.append(unit("slurm-0", BOBS_LAST, "bob", "p2"))
    now_ms = (T0 + 7200) * 1000
    writer.commit_update("slurm-0", now_ms, units, None, None, now_ms)
    writer.close()
    engine.dispose()
    return data_dir


@pytest.fixture(scope="module")
def api(api_store: Path) -> Iterator[ApiServer]:
    """The API server, for the whole module."""
    server = ApiServer(api_store)
    server.start()
    yield server
    server.stop()


def api_lb_config(store: Path, api_url: str, tsdb_url: str, cache_ttl: str) -> dict[str, Any]:
    """An LB config asking the API server at `api_url` instead of reading the store."""
    config = lb_config(store, {"slurm-0": [tsdb_url]})
    section = config["ceems_lb"]
    assert isinstance(section, dict)
    section["cache_ttl"] = cache_ttl
    config["ceems_api_server"] = {"web": {"url": api_url, "timeout": 5}}
    return config


@pytest.fixture(scope="module")
def api_lb(
    api_store: Path,
    api: ApiServer,
    prom_proxy: CountingProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LbProcess]:
    """`ceems_lb` asking the API server, without a cache: every request is checked again."""
    config = api_lb_config(api_store, api.url, prom_proxy.url, "0s")
    process = LbProcess(config, tmp_path_factory.mktemp("lb-api"))
    process.start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _forget(request: pytest.FixtureRequest) -> None:
    """Each test starts with an API server that has seen nothing."""
    if "api" in request.fixturenames:
        request.getfixturevalue("api").recorder.clear()


def query(lb: LbProcess, user: str, promql: str) -> httpx.Response:
    """An instant query at AT, POSTed as Grafana does, for slurm-0."""
    return httpx.post(
        f"{lb.url}/api/v1/query",
        data={"query": promql, "time": str(AT)},
        headers={"X-Grafana-User": user, "X-Ceems-Cluster-Id": "slurm-0"},
        timeout=15,
    )


def alternation(uuids: list[str]) -> str:
    """UNIT_METRIC pinned to `uuids`."""
    return f'count({UNIT_METRIC}{{uuid=~"{"|".join(uuids)}"}})'


def refused(response: httpx.Response, status: int, error_type: str, text: str = "") -> None:
    """Assert an LB error envelope."""
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["status"], body["errorType"]) == ("error", error_type)
    assert text in body["error"]


# ---------------------------------------------------------------- end to end


def test_own_unit_is_allowed(api: ApiServer, api_lb: LbProcess, prom_proxy: CountingProxy) -> None:
    before = prom_proxy.count()
    response = query(api_lb, "alice", f'rate({UNIT_METRIC}{{uuid="a-1"}}[5m])')
    assert response.status_code == 200, response.text
    (series,) = response.json()["data"]["result"]
    assert series["metric"]["uuid"] == "a-1"
    assert float(series["value"][1]) == pytest.approx(cpu_rate("a-1"))
    assert prom_proxy.count() == before + 1
    assert api.recorder.requests() == [
        (ADMIN, [], "alice"),
        (VERIFY, [("cluster_id", "slurm-0"), ("uuid", "a-1")], "alice"),
    ]


def test_project_member_is_allowed(api: ApiServer, api_lb: LbProcess) -> None:
    response = query(api_lb, "carol", f'{UNIT_METRIC}{{uuid=~"a-1|a-2"}}')
    assert response.status_code == 200, response.text
    assert {r["metric"]["uuid"] for r in response.json()["data"]["result"]} == {"a-1", "a-2"}
    assert api.recorder.verified() == [["a-1", "a-2"]]


@pytest.mark.parametrize(
    ("user", "promql"),
    [
        ("alice", f'{UNIT_METRIC}{{uuid="b-1"}}'),
        ("alice", f'{UNIT_METRIC}{{uuid=~"a-1|b-1"}}'),
        ("carol", f'{UNIT_METRIC}{{uuid="b-1"}}'),
        ("bob", f'{UNIT_METRIC}{{uuid="a-1"}}'),
        ("mallory", f'{UNIT_METRIC}{{uuid="a-1"}}'),
        # a-9 is alice's on slurm-1, not on slurm-0: the cluster is part of the question.
        ("alice", f'{UNIT_METRIC}{{uuid="a-9"}}'),
    ],
)
def test_others_units_are_refused(
    api: ApiServer, api_lb: LbProcess, prom_proxy: CountingProxy, user: str, promql: str
) -> None:
    before = prom_proxy.count()
    refused(query(api_lb, user, promql), 403, "forbidden", NO_UNIT)
    assert prom_proxy.count() == before
    (verify,) = api.recorder.requests(VERIFY)
    assert ("cluster_id", "slurm-0") in verify[1]
    assert verify[2] == user


def test_admin_passes_through(api: ApiServer, api_lb: LbProcess, prom_proxy: CountingProxy) -> None:
    before = prom_proxy.count()
    response = query(api_lb, "root", SECRET_METRIC)
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]["result"]) == 1
    assert prom_proxy.count() == before + 1
    assert api.recorder.requests() == [(ADMIN, [], "root")]  # no verify at all


def test_unpinned_query_is_refused_without_asking(
    api: ApiServer, api_lb: LbProcess, prom_proxy: CountingProxy
) -> None:
    before = prom_proxy.count()
    refused(query(api_lb, "alice", SECRET_METRIC), 403, "forbidden")
    assert prom_proxy.count() == before
    assert api.recorder.requests(VERIFY) == []


def test_verify_is_batched(api: ApiServer, api_lb: LbProcess, prom_proxy: CountingProxy) -> None:
    before = prom_proxy.count()
    response = query(api_lb, "alice", alternation(MANY))
    assert response.status_code == 200, response.text
    assert prom_proxy.count() == before + 1
    batches = api.recorder.verified()
    assert [len(b) for b in batches] == [VERIFY_BATCH, VERIFY_BATCH, 450 - 2 * VERIFY_BATCH]
    assert sorted(u for b in batches for u in b) == MANY
    for _, params, user in api.recorder.requests(VERIFY):
        assert params[0] == ("cluster_id", "slurm-0")
        assert user == "alice"


def test_refusal_in_the_first_batch_stops(
    api: ApiServer, api_lb: LbProcess, prom_proxy: CountingProxy
) -> None:
    before = prom_proxy.count()
    refused(query(api_lb, "alice", alternation(NOBODYS)), 403, "forbidden", NO_UNIT)
    assert prom_proxy.count() == before
    assert [len(b) for b in api.recorder.verified()] == [VERIFY_BATCH]


def test_refusal_in_the_last_batch_refuses(
    api: ApiServer, api_lb: LbProcess, prom_proxy: CountingProxy
) -> None:
    before = prom_proxy.count()
    refused(query(api_lb, "alice", alternation([*MOSTLY, BOBS_LAST])), 403, "forbidden", NO_UNIT)
    assert prom_proxy.count() == before
    batches = api.recorder.verified()
    assert len(batches) == 3
    assert batches[-1][-1] == BOBS_LAST
    # bob himself may not read alice's units beside his own either.
    api.recorder.clear()
    refused(query(api_lb, "bob", alternation([*MOSTLY, BOBS_LAST])), 403, "forbidden", NO_UNIT)
    assert len(api.recorder.verified()) == 1


@pytest.mark.parametrize("status", [500, 502, 404, 400])
def test_api_server_errors_answer_503(
    api: ApiServer, api_lb: LbProcess, prom_proxy: CountingProxy, status: int
) -> None:
    before = prom_proxy.count()
    api.recorder.fail_status = status
    try:
        for user in ("alice", "root"):
            response = query(api_lb, user, f'{UNIT_METRIC}{{uuid="a-1"}}')
            refused(response, 503, "unavailable", f"API server answered {status}")
    finally:
        api.recorder.fail_status = None
    assert prom_proxy.count() == before
    assert query(api_lb, "alice", f'{UNIT_METRIC}{{uuid="a-1"}}').status_code == 200


def test_api_server_refusing_the_lb_is_a_refusal(api: ApiServer, api_lb: LbProcess) -> None:
    # 401/403 from the API server mean "no": not an admin, not an owner.
    api.recorder.fail_status = 403
    try:
        refused(query(api_lb, "alice", f'{UNIT_METRIC}{{uuid="a-1"}}'), 403, "forbidden")
        refused(query(api_lb, "root", SECRET_METRIC), 403, "forbidden")
    finally:
        api.recorder.fail_status = None


def test_cached_answers_and_outage(
    api_store: Path, prom_proxy: CountingProxy, tmp_path: Path
) -> None:
    """With the default cache: grants are reused; once the API server is gone, anything
    not already granted is answered 503 and never reaches Prometheus."""
    server = ApiServer(api_store)
    server.start()
    lb = LbProcess(api_lb_config(api_store, server.url, prom_proxy.url, "60s"), tmp_path)
    lb.start()
    try:
        own = f'{UNIT_METRIC}{{uuid="a-1"}}'
        assert query(lb, "alice", own).status_code == 200
        assert query(lb, "alice", own).status_code == 200
        assert query(lb, "root", SECRET_METRIC).status_code == 200
        assert query(lb, "root", SECRET_METRIC).status_code == 200
        # Asked once each: alice's admin status and a-1, root's admin status.
        assert server.recorder.requests() == [
            (ADMIN, [], "alice"),
            (VERIFY, [("cluster_id", "slurm-0"), ("uuid", "a-1")], "alice"),
            (ADMIN, [], "root"),
        ]
        # Refusals are not cached: asked again each time.
        bobs = f'{UNIT_METRIC}{{uuid="b-1"}}'
        for _ in range(2):
            refused(query(lb, "alice", bobs), 403, "forbidden", NO_UNIT)
        assert server.recorder.verified()[-2:] == [["b-1"], ["b-1"]]

        server.stop()
        before = prom_proxy.count()
        for user, promql in [
            ("alice", f'{UNIT_METRIC}{{uuid="a-2"}}'),  # not granted yet
            ("alice", bobs),  # refused before, not cached
            ("carol", own),  # nobody asked about carol
            ("mallory", SECRET_METRIC),
        ]:
            refused(query(lb, user, promql), 503, "unavailable", "cannot check access now")
        assert prom_proxy.count() == before
        # What was granted within the cache's ttl still is.
        assert query(lb, "alice", own).status_code == 200
        assert query(lb, "root", SECRET_METRIC).status_code == 200
        assert prom_proxy.count() == before + 2
        assert "cannot check access" in lb.log()
    finally:
        lb.stop()
        server.stop()


def test_no_cache_means_outage_refuses_everything(
    api_store: Path, prom_proxy: CountingProxy, tmp_path: Path
) -> None:
    server = ApiServer(api_store)
    server.start()
    lb = LbProcess(api_lb_config(api_store, server.url, prom_proxy.url, "0s"), tmp_path)
    lb.start()
    try:
        own = f'{UNIT_METRIC}{{uuid="a-1"}}'
        assert query(lb, "alice", own).status_code == 200
        assert query(lb, "root", SECRET_METRIC).status_code == 200
        server.stop()
        before = prom_proxy.count()
        refused(query(lb, "alice", own), 503, "unavailable", "cannot check access now")
        refused(query(lb, "root", SECRET_METRIC), 503, "unavailable", "cannot check access now")
        assert prom_proxy.count() == before
    finally:
        lb.stop()
        server.stop()


# ---------------------------------------------------------------- CachedOwnership


@dataclass
class FakeOwnership:
    """An ownership source with fixed answers that records every question."""

    admins: set[str] = field(default_factory=lambda: {"root"})
    grants: dict[tuple[str, str], set[str]] = field(
        default_factory=lambda: {("alice", "c0"): {"a-1", "a-2", "a-3"}}
    )
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    down: bool = False
    closed: bool = False

    async def is_admin(self, user: str) -> bool:
        self.calls.append(("is_admin", user))
        if self.down:
            raise OwnershipUnavailableError("down")
        return user in self.admins

    async def owns(self, user: str, cluster_id: str, uuids: frozenset[str]) -> bool:
        self.calls.append(("owns", user, cluster_id, uuids))
        if self.down:
            raise OwnershipUnavailableError("down")
        return bool(uuids) and uuids <= self.grants.get((user, cluster_id), set())

    async def close(self) -> None:
        self.closed = True


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Replaces the clock CachedOwnership reads."""
    fake = Clock()
    monkeypatch.setattr(ownership_module, "time", fake)
    return fake


def test_grants_are_cached_for_ttl(clock: Clock) -> None:
    inner = FakeOwnership()
    cached = CachedOwnership(inner, ttl_s=60)

    async def scenario() -> None:
        assert await cached.owns("alice", "c0", frozenset({"a-1", "a-2"}))
        assert await cached.owns("alice", "c0", frozenset({"a-1"}))
        assert await cached.owns("alice", "c0", frozenset({"a-2", "a-1"}))
        assert len(inner.calls) == 1
        # Only what is not cached is asked.
        clock.now += 10
        assert await cached.owns("alice", "c0", frozenset({"a-1", "a-3"}))
        assert inner.calls[-1] == ("owns", "alice", "c0", frozenset({"a-3"}))
        clock.now += 49.9
        assert await cached.owns("alice", "c0", frozenset({"a-1", "a-2"}))
        assert len(inner.calls) == 2
        clock.now += 0.2  # past the ttl of a-1 and a-2, not of a-3
        assert await cached.owns("alice", "c0", frozenset({"a-1", "a-2", "a-3"}))
        assert inner.calls[-1] == ("owns", "alice", "c0", frozenset({"a-1", "a-2"}))

    asyncio.run(scenario())


def test_grants_are_per_user_and_cluster(clock: Clock) -> None:
    inner = FakeOwnership()
    cached = CachedOwnership(inner, ttl_s=60)

    async def scenario() -> None:
        assert await cached.owns("alice", "c0", frozenset({"a-1"}))
        assert not await cached.owns("bob", "c0", frozenset({"a-1"}))
        assert not await cached.owns("alice", "c1", frozenset({"a-1"}))
        assert [c[1:3] for c in inner.calls] == [("alice", "c0"), ("bob", "c0"), ("alice", "c1")]

    asyncio.run(scenario())


def test_refusals_are_not_cached(clock: Clock) -> None:
    inner = FakeOwnership()
    cached = CachedOwnership(inner, ttl_s=60)

    async def scenario() -> None:
        for _ in range(3):
            assert not await cached.owns("alice", "c0", frozenset({"b-1"}))
        assert len(inner.calls) == 3
        # A refused set grants none of its members either.
        assert not await cached.owns("alice", "c0", frozenset({"a-1", "b-1"}))
        assert await cached.owns("alice", "c0", frozenset({"a-1"}))
        assert inner.calls[-1] == ("owns", "alice", "c0", frozenset({"a-1"}))
        # The unit reaches the store a moment later: the next question sees it.
        inner.grants[("alice", "c0")].add("b-1")
        assert await cached.owns("alice", "c0", frozenset({"b-1"}))

    asyncio.run(scenario())


def test_admin_answers_are_cached(clock: Clock) -> None:
    inner = FakeOwnership()
    cached = CachedOwnership(inner, ttl_s=30)

    async def scenario() -> None:
        for _ in range(3):
            assert await cached.is_admin("root")
            assert not await cached.is_admin("alice")
        assert inner.calls == [("is_admin", "root"), ("is_admin", "alice")]
        inner.admins = {"alice"}  # promoted and demoted: seen after the ttl
        clock.now += 29
        assert await cached.is_admin("root")
        assert not await cached.is_admin("alice")
        clock.now += 2
        assert not await cached.is_admin("root")
        assert await cached.is_admin("alice")
        assert len(inner.calls) == 4

    asyncio.run(scenario())


def test_unavailable_is_not_cached(clock: Clock) -> None:
    inner = FakeOwnership(down=True)
    cached = CachedOwnership(inner, ttl_s=60)

    async def scenario() -> None:
        for _ in range(2):
            with pytest.raises(OwnershipUnavailableError):
                await cached.is_admin("root")
            with pytest.raises(OwnershipUnavailableError):
                await cached.owns("alice", "c0", frozenset({"a-1"}))
        inner.down = False
        assert await cached.is_admin("root")
        assert await cached.owns("alice", "c0", frozenset({"a-1"}))
        assert len(inner.calls) == 6

    asyncio.run(scenario())


def test_cache_is_bounded(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ownership_module, "CACHE_LIMIT", 3)
    inner = FakeOwnership(grants={("alice", "c0"): {f"u-{i}" for i in range(10)}})
    cached = CachedOwnership(inner, ttl_s=60)

    async def scenario() -> None:
        for i in range(5):
            assert await cached.owns("alice", "c0", frozenset({f"u-{i}"}))
        assert len(cached._granted) <= 4
        for user in ("a", "b", "c", "d", "e"):
            await cached.is_admin(user)
        assert len(cached._admins) <= 4

    asyncio.run(scenario())


def test_a_whole_set_is_granted_in_one_lookup(clock: Clock) -> None:
    inner = FakeOwnership()
    cached = CachedOwnership(inner, ttl_s=60)
    units = frozenset({"a-1", "a-2"})

    async def scenario() -> None:
        assert await cached.owns("alice", "c0", units)
        assert await cached.owns("alice", "c0", units)
        assert ("alice", "c0", units) in cached._granted_sets
        cached._granted.clear()  # the set answers without its units' entries
        assert await cached.owns("alice", "c0", units)
        assert len(inner.calls) == 1

    asyncio.run(scenario())


def test_a_revoked_unit_is_refused_after_the_ttl(clock: Clock) -> None:
    inner = FakeOwnership()
    cached = CachedOwnership(inner, ttl_s=60)
    units = frozenset({"a-1", "a-2"})

    async def scenario() -> None:
        assert await cached.owns("alice", "c0", units)
        inner.grants[("alice", "c0")].discard("a-2")  # alice leaves the project of a-2
        clock.now += 59.9
        assert await cached.owns("alice", "c0", units)  # within the ttl, as documented
        clock.now += 0.2
        assert not await cached.owns("alice", "c0", units)
        assert not await cached.owns("alice", "c0", units)  # refusals are not remembered
        assert await cached.owns("alice", "c0", frozenset({"a-1"}))

    asyncio.run(scenario())


def test_a_set_expires_with_its_oldest_grant(clock: Clock) -> None:
    inner = FakeOwnership()
    cached = CachedOwnership(inner, ttl_s=60)

    async def scenario() -> None:
        assert await cached.owns("alice", "c0", frozenset({"a-1"}))
        clock.now += 50
        # a-1 comes from the cache (granted 50 s ago), a-2 from the source now: the set
        # may not outlive a-1's grant by riding on a-2's.
        assert await cached.owns("alice", "c0", frozenset({"a-1", "a-2"}))
        inner.grants[("alice", "c0")].discard("a-1")
        clock.now += 10.1
        assert not await cached.owns("alice", "c0", frozenset({"a-1", "a-2"}))
        assert inner.calls[-1] == ("owns", "alice", "c0", frozenset({"a-1"}))

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("user", "cluster", "units"),
    [
        ("bob", "c0", {"a-1", "a-2"}),  # another user
        ("alice", "c1", {"a-1", "a-2"}),  # another cluster
        ("alice", "c0", {"a-1", "a-2", "b-1"}),  # a wider set
        ("alice", "c0", {"b-1"}),  # another set
    ],
)
def test_a_granted_set_never_widens(clock: Clock, user: str, cluster: str, units: set[str]) -> None:
    inner = FakeOwnership()
    cached = CachedOwnership(inner, ttl_s=60)

    async def scenario() -> None:
        assert await cached.owns("alice", "c0", frozenset({"a-1", "a-2"}))
        assert not await cached.owns(user, cluster, frozenset(units))
        assert inner.calls[-1][:3] == ("owns", user, cluster)

    asyncio.run(scenario())


def test_granted_sets_are_bounded_by_units(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ownership_module, "CACHE_LIMIT", 5)
    inner = FakeOwnership(grants={("alice", "c0"): {f"u-{i}" for i in range(10)}})
    cached = CachedOwnership(inner, ttl_s=60)

    async def scenario() -> None:
        for i in range(8):
            assert await cached.owns("alice", "c0", frozenset({f"u-{i}", f"u-{i + 1}"}))
            held = sum(len(units) for _, _, units in cached._granted_sets)
            assert held <= 5

    asyncio.run(scenario())


def test_close_closes_the_source() -> None:
    inner = FakeOwnership()
    asyncio.run(CachedOwnership(inner, ttl_s=1).close())
    assert inner.closed


# ---------------------------------------------------------------- ApiOwnership


def mock_api(
    answer: Any, seen: list[httpx.Request], base_url: str = "http://api"
) -> httpx.AsyncClient:
    """A client whose requests `answer(request)` handles (a status, or raises)."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(answer(request), json={"status": "success", "data": None})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=base_url)


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(1, [1]), (VERIFY_BATCH, [VERIFY_BATCH]), (VERIFY_BATCH + 1, [VERIFY_BATCH, 1]),
     (450, [200, 200, 50])],
)  # fmt: skip
def test_api_ownership_batches(count: int, sizes: list[int]) -> None:
    seen: list[httpx.Request] = []
    source = ApiOwnership(mock_api(lambda _: 200, seen), "X-Grafana-User")
    uuids = frozenset(f"u-{i:04d}" for i in range(count))
    assert asyncio.run(source.owns("alice", "c0", uuids))
    assert [len(r.url.params.get_list("uuid")) for r in seen] == sizes
    asked = [u for r in seen for u in r.url.params.get_list("uuid")]
    assert asked == sorted(uuids)
    for request in seen:
        assert request.url.path == VERIFY
        assert request.url.params.get_list("cluster_id") == ["c0"]
        assert request.headers["X-Grafana-User"] == "alice"
        assert len(str(request.url)) < 16 * 1024


def test_api_ownership_stops_at_a_refused_batch() -> None:
    seen: list[httpx.Request] = []
    source = ApiOwnership(mock_api(lambda r: 403 if len(seen) == 2 else 200, seen), "X-User")
    uuids = frozenset(f"u-{i:04d}" for i in range(3 * VERIFY_BATCH))
    assert not asyncio.run(source.owns("alice", "c0", uuids))
    assert len(seen) == 2
    assert seen[0].headers["X-User"] == "alice"


def test_api_ownership_of_nothing_is_no() -> None:
    seen: list[httpx.Request] = []
    source = ApiOwnership(mock_api(lambda _: 200, seen), "X-Grafana-User")
    assert not asyncio.run(source.owns("alice", "c0", frozenset()))
    assert seen == []


@pytest.mark.parametrize(
    ("status", "answer"), [(200, True), (401, False), (403, False), (400, None), (404, None),
                           (500, None), (503, None)]
)  # fmt: skip
def test_api_ownership_statuses(status: int, answer: bool | None) -> None:
    seen: list[httpx.Request] = []
    source = ApiOwnership(mock_api(lambda _: status, seen, "http://api/ceems/"), "X-Grafana-User")
    for ask in (source.is_admin("root"), source.owns("alice", "c0", frozenset({"a-1"}))):
        if answer is None:
            with pytest.raises(OwnershipUnavailableError, match=f"answered {status}"):
                asyncio.run(ask)
        else:
            assert asyncio.run(ask) is answer
    assert [r.url.path for r in seen] == ["/ceems" + ADMIN, "/ceems" + VERIFY]


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
def test_api_ownership_transport_errors(error: httpx.HTTPError) -> None:
    def fail(_: httpx.Request) -> int:
        raise error

    source = ApiOwnership(mock_api(fail, []), "X-Grafana-User")
    with pytest.raises(OwnershipUnavailableError, match=type(error).__name__):
        asyncio.run(source.is_admin("root"))
    with pytest.raises(OwnershipUnavailableError, match=type(error).__name__):
        asyncio.run(source.owns("alice", "c0", frozenset({"a-1"})))


def test_api_ownership_close() -> None:
    source = ApiOwnership(mock_api(lambda _: 200, []), "X-Grafana-User")
    asyncio.run(source.close())
    assert source.client.is_closed


def test_build_ownership_from_web() -> None:
    section = ApiServerSection.model_validate(
        {"web": {"url": "http://api:9020", "user_header_names": ["X-Remote-User", "X-Other"]}}
    )
    cached = build_ownership(section, 60)
    assert isinstance(cached, CachedOwnership)
    assert isinstance(cached.inner, ApiOwnership)
    assert cached.inner.user_header == "X-Remote-User"
    bare = build_ownership(section, 0)
    assert isinstance(bare, ApiOwnership)
    asyncio.run(cached.close())
    asyncio.run(bare.close())
