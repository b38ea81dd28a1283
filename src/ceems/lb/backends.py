"""Backend pools: one per cluster and kind, with health checks and a pick strategy.

A backend is marked dead when a health check or a request cannot reach it, and alive again
when a health check succeeds; requests only go to live ones. Replicas of a cluster are
interchangeable, so any live one can answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

import aiohttp
import httpx
from yarl import URL

from ceems.common.durations import parse_duration
from ceems.common.httpconfig import HttpClientConfig
from ceems.lb.config import BackendConfig, Strategy
from ceems.lb.http1 import Answer, ConnectError, DisconnectedError, Http1Pool

log = logging.getLogger(__name__)

# Prometheus and VictoriaMetrics both answer /-/healthy; Pyroscope answers /ready.
HEALTH_PATHS = {"tsdb": "/-/healthy", "pyroscope": "/ready"}
HEALTH_TIMEOUT_S = 5.0


def redact(url: str) -> str:
    """`url` without credentials, for logs and error messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def async_client(web: HttpClientConfig) -> httpx.AsyncClient:
    """A pooled client carrying the backend's own credentials, headers and TLS settings."""
    return httpx.AsyncClient(
        **web.client_kwargs(),
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
    )


@dataclass(eq=False)
class Backend:
    """One server and what the LB knows about it right now."""

    kind: str
    config: BackendConfig
    client: httpx.AsyncClient
    alive: bool = True
    in_flight: int = 0
    # Oldest data it holds, from its retention flag; None: unknown (treated as everything).
    retention: timedelta | None = None
    last_error: str = ""
    _pool: Http1Pool | None = field(default=None, init=False, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.hidden_labels = frozenset(self.config.filter_labels)

    @property
    def name(self) -> str:
        """The URL without credentials."""
        return redact(self.config.web.url)

    def exchange(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Awaitable[Answer]:
        """Send one request (`target`: encoded path and query) and read the whole answer.

        Raises ConnectError (cannot connect), DisconnectedError (dropped or broken answer)
        or TimeoutError (no answer within the backend's timeout). Not a coroutine itself:
        it hands over the client's, one frame less per request.
        """
        if self.config.web.proxy_url:
            return self._via_proxy(method, target, headers, body)
        pool = self._pool
        if pool is None:
            pool = self._pool = Http1Pool(self.config.web)
        return pool.request(method, target, headers, body)

    async def _via_proxy(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Answer:
        # Rare, and the proxy's own hop costs more than aiohttp: it does CONNECT and TLS.
        session = self.session()
        configured = {name.lower() for name in session.headers}
        kept = {
            n.decode("latin-1"): v.decode("latin-1")
            for n, v in headers
            if n.decode("latin-1") not in configured  # configured headers win, as Http1Pool
        }
        # encoded=True: the target goes out exactly as authorised, never re-quoted
        url = URL(self.config.web.url.rstrip("/") + target.decode("ascii"), encoded=True)
        try:
            async with session.request(
                method, url, data=body or None, headers=kept, allow_redirects=False,
                proxy=self.config.web.proxy_url,
            ) as answer:  # fmt: skip
                content = await answer.read()
                raw = [(bytes(n), bytes(v)) for n, v in answer.raw_headers]
                return Answer(answer.status, raw, content)
        except aiohttp.ClientConnectorError as err:
            raise ConnectError(f"{type(err).__name__}: {err}") from err
        except aiohttp.ClientError as err:
            raise DisconnectedError(type(err).__name__) from err

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session for a backend behind `proxy_url`, made in the running loop."""
        if self._session is None or self._session.closed:
            web = self.config.web
            auth = None
            if web.basic_auth is not None:
                auth = aiohttp.BasicAuth(
                    web.basic_auth.username, web.basic_auth.resolved_password()
                )
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, ssl=web.verify()),
                auth=auth,
                headers=web.headers(),
                timeout=aiohttp.ClientTimeout(total=web.timeout),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        """Close every client."""
        await self.client.aclose()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._session is not None:
            await self._session.close()

    def mark_dead(self, reason: str) -> None:
        """Skip it until a health check succeeds."""
        if self.alive:
            log.warning("backend down", extra={"backend": self.name, "reason": reason})
        self.alive = False
        self.last_error = reason

    async def check(self) -> None:
        """One health check; also reads a Prometheus' retention for resource-based picking."""
        # the client's base_url already carries the path prefix: paths are relative to it
        path = HEALTH_PATHS[self.kind]
        try:
            response = await self.client.get(path, timeout=HEALTH_TIMEOUT_S)
        except httpx.HTTPError as err:
            self.mark_dead(f"health check: {type(err).__name__}: {err}")
            return
        if response.status_code != 200:
            self.mark_dead(f"health check answered {response.status_code}")
            return
        if not self.alive:
            log.info("backend up", extra={"backend": self.name})
        self.alive = True
        self.last_error = ""
        if self.kind == "tsdb" and self.retention is None:
            self.retention = await self._retention()

    async def _retention(self) -> timedelta | None:
        try:
            response = await self.client.get("/api/v1/status/flags", timeout=HEALTH_TIMEOUT_S)
            value = response.json()["data"]["storage.tsdb.retention.time"]
            return parse_duration(str(value))
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None  # VictoriaMetrics has no flags endpoint: assume it holds everything


class Pool:
    """The live backends of one cluster and kind, and the strategy choosing among them."""

    def __init__(self, cluster_id: str, backends: list[Backend], strategy: Strategy) -> None:
        self.cluster_id = cluster_id
        self.backends = backends
        self.strategy = strategy
        self._turn = itertools.count()

    def live(self) -> list[Backend]:
        """Backends currently believed reachable."""
        return [b for b in self.backends if b.alive]

    def pick(
        self, exclude: Iterable[Backend] = (), oldest_s: float | None = None
    ) -> Backend | None:
        """The backend for the next request, None when no live one is left.

        `oldest_s` is the Unix time of the oldest sample a query reads; the resource-based
        strategy prefers backends whose retention reaches back that far.
        """
        skipped = exclude if isinstance(exclude, (list, set, frozenset)) else set(exclude)
        if len(self.backends) == 1:  # the usual deployment: nothing to choose between
            only = self.backends[0]
            return only if only.alive and only not in skipped else None
        live = [b for b in self.backends if b.alive and b not in skipped]
        if not live:
            return None
        start = next(self._turn)
        rotated = live[start % len(live) :] + live[: start % len(live)]
        if self.strategy is Strategy.ROUND_ROBIN:
            return rotated[0]
        if self.strategy is Strategy.RESOURCE_BASED and oldest_s is not None:
            age = timedelta(seconds=max(0.0, time.time() - oldest_s))
            holding = [b for b in rotated if b.retention is None or b.retention >= age]
            if holding:
                rotated = holding
            else:  # nobody holds it all: the one reaching furthest back
                return max(rotated, key=lambda b: b.retention or timedelta.max)
        return min(rotated, key=lambda b: b.in_flight)  # stable: ties keep the rotation


@dataclass
class Pools:
    """Every cluster's pools of one kind, and the task that health-checks them."""

    kind: str
    by_cluster: dict[str, Pool]
    interval_s: float
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    @classmethod
    def build(
        cls,
        kind: str,
        clusters: dict[str, list[BackendConfig]],
        strategy: Strategy,
        interval: timedelta,
    ) -> Pools:
        """Pools for the clusters listing servers of this kind."""
        if kind == "pyroscope" and strategy is Strategy.RESOURCE_BASED:
            strategy = Strategy.LEAST_CONNECTION  # as CEEMS: retention is a TSDB notion
        pools = {
            cluster: Pool(
                cluster, [Backend(kind, c, async_client(c.web)) for c in configs], strategy
            )
            for cluster, configs in clusters.items()
            if configs
        }
        return cls(kind, pools, interval.total_seconds())

    def all_backends(self) -> list[Backend]:
        """Every backend of every cluster."""
        return [b for pool in self.by_cluster.values() for b in pool.backends]

    async def check_all(self) -> None:
        """Health-check every backend at once."""
        await asyncio.gather(*(b.check() for b in self.all_backends()))

    async def _loop(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        """Start checking in the running event loop."""
        if self._task is None and self.by_cluster:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Stop checking and close every client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.gather(*(b.close() for b in self.all_backends()))
