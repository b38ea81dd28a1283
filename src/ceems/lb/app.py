"""The load balancer's ASGI app: identify, authorise, route, forward.

One app serves every listener; the port a request arrived on says whether it is for the
TSDB or the Pyroscope frontend. For a non-admin the order is: user, cluster, endpoint,
parameters, selectors, ownership; any refusal is answered here and nothing reaches a
backend.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from ceems.api.envelope import ErrorType, failure
from ceems.lb import pyroscope, tsdb
from ceems.lb.authz import Decision, QueryInvalidError, QueryRefusedError
from ceems.lb.backends import Pools
from ceems.lb.config import LbConfig
from ceems.lb.forward import BackendUnavailableError, forward, request_headers
from ceems.lb.ownership import Ownership, OwnershipUnavailableError
from ceems.lb.params import BadParamsError, Params, read_params

log = logging.getLogger(__name__)

CLUSTER_HEADER = "x-ceems-cluster-id"
# CEEMS' texts, verbatim: clients and tests compare them.
INVALID_CLUSTER = (
    "invalid cluster ID. Set cluster ID using X-Ceems-Cluster-Id header in Prometheus datasource."
)
NO_USER = (
    "no user header found. Make sure to set send_user_header = true in [dataproxy] section of "
    "Grafana configuration file."
)
NO_RESOURCE_PERMISSION = "user do not have permissions to this resource"
NO_UNIT_PERMISSION = "user do not have permissions to view unit metrics"
HEALTHY = "CEEMS LB is healthy\n"


class RefusedError(Exception):
    """A request answered with an error envelope by the LB itself."""

    def __init__(self, error_type: ErrorType, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status


@dataclass
class LbMetrics:
    """The LB's own metrics, served on /metrics of every listener."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "ceems_lb_requests", "Requests by frontend and outcome.",
            ["frontend", "outcome"], registry=self.registry,
        )  # fmt: skip
        self.backend_up = Gauge(
            "ceems_lb_backend_up", "1 when the last health check or request reached it.",
            ["frontend", "cluster", "backend"], registry=self.registry,
        )  # fmt: skip


@dataclass
class LbApp:
    """Both frontends; `frontends` maps a listening port to `tsdb` or `pyroscope`."""

    config: LbConfig
    ownership: Ownership
    pools: dict[str, Pools]
    frontends: dict[int, str] = field(default_factory=dict)
    metrics: LbMetrics = field(default_factory=LbMetrics)

    def __post_init__(self) -> None:
        section = self.config.ceems_lb
        self.user_headers = [h.lower() for h in section.user_header_names]
        self.allowed = frozenset(section.allowed_node_metrics)
        self.max_body = section.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        response = await self.respond(Request(scope, receive), self._frontend(scope))
        await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                for pools in self.pools.values():
                    pools.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def close(self) -> None:
        """Stop health checks and close every connection."""
        for pools in self.pools.values():
            await pools.close()
        await self.ownership.close()

    def _frontend(self, scope: Scope) -> str:
        server = scope.get("server")
        port = server[1] if server else None
        if port in self.frontends:
            return self.frontends[port]
        return next(iter(self.pools))  # a single frontend, or an app under test

    async def respond(self, request: Request, frontend: str) -> Response:
        """The answer to one request on `frontend`."""
        path = request.url.path
        if path == "/health":
            return PlainTextResponse(HEALTHY)
        if path == "/metrics":
            self._refresh_backend_gauges()
            return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)
        try:
            response = await self._proxy(request, frontend)
            outcome = "forwarded"
        except RefusedError as refusal:
            outcome = refusal.error_type.value
            response = failure(refusal.error_type, refusal.message, refusal.status)
        except BackendUnavailableError as err:
            outcome = "backend_unavailable"
            response = failure(ErrorType.UNAVAILABLE, str(err), err.status)
        except OwnershipUnavailableError as err:
            outcome = "ownership_unavailable"
            log.error("cannot check access", extra={"reason": str(err)})
            response = failure(ErrorType.UNAVAILABLE, "cannot check access now: " + str(err))
        self.metrics.requests.labels(frontend, outcome).inc()
        return response

    def _refresh_backend_gauges(self) -> None:
        for frontend, pools in self.pools.items():
            for cluster, pool in pools.by_cluster.items():
                for backend in pool.backends:
                    self.metrics.backend_up.labels(frontend, cluster, backend.name).set(
                        1 if backend.alive else 0
                    )

    async def _body(self, request: Request) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body:
                    raise RefusedError(
                        ErrorType.BAD_DATA, f"request body larger than {self.max_body} bytes", 413
                    )
                chunks.append(chunk)
        except ClientDisconnect:
            raise RefusedError(ErrorType.BAD_DATA, "client disconnected while sending") from None
        return b"".join(chunks)

    def _user(self, request: Request) -> str:
        for name in self.user_headers:
            value = request.headers.get(name, "").strip()
            if value:
                return value
        raise RefusedError(ErrorType.UNAUTHORIZED, NO_USER)

    async def _proxy(self, request: Request, frontend: str) -> Response:
        user = self._user(request)
        if len(request.headers.getlist("content-type")) > 1:
            # the body would be read by one and forwarded with another
            raise RefusedError(ErrorType.BAD_DATA, "more than one Content-Type header")
        body = await self._body(request)
        path = request.url.path
        method = request.method
        content_type = request.headers.get("content-type", "")
        query_string: bytes = request.scope.get("query_string", b"")
        params: Params | None = None
        params_error: BadParamsError | None = None
        if frontend == "tsdb":
            try:
                params = read_params(query_string, method, content_type, body)
            except BadParamsError as err:
                params_error = err
        cluster = self._cluster(request, frontend, path, params, content_type, body)
        pool = self.pools[frontend].by_cluster[cluster]
        headers = request_headers(request.scope["headers"])
        if await self.ownership.is_admin(user):
            oldest = tsdb.oldest_time(path, params, time.time()) if params else None
            return await forward(pool, method, path, query_string, headers, body, oldest)
        decision = self._authorise(frontend, method, path, params, params_error, content_type, body)
        if decision.uuids and not await self.ownership.owns(user, cluster, decision.uuids):
            raise RefusedError(ErrorType.FORBIDDEN, NO_UNIT_PERMISSION)
        if frontend != "tsdb":
            return await forward(pool, method, path, query_string, headers, body)
        assert params is not None
        # Forward exactly the pairs that were authorised, re-encoded.
        return await forward(
            pool, method, path, params.query_string(), headers, params.body(),
            tsdb.oldest_time(path, params, time.time()),
        )  # fmt: skip

    def _cluster(
        self,
        request: Request,
        frontend: str,
        path: str,
        params: Params | None,
        content_type: str,
        body: bytes,
    ) -> str:
        """The cluster a `ceems_id` matcher names (it wins, as in CEEMS), else the header."""
        named: frozenset[str] = frozenset()
        if frontend == "tsdb" and params is not None:
            named = tsdb.named_clusters(path, params)
        elif frontend == "pyroscope" and pyroscope.is_read_path(path):
            try:
                named = pyroscope.inspect(path, content_type, body).clusters
            except QueryRefusedError:
                named = frozenset()  # refused later, with the reason
        if len(named) > 1:
            raise RefusedError(
                ErrorType.BAD_DATA, f"the query names several clusters: {', '.join(sorted(named))}"
            )
        cluster = next(iter(named)) if named else request.headers.get(CLUSTER_HEADER, "").strip()
        if cluster not in self.pools[frontend].by_cluster:
            raise RefusedError(ErrorType.BAD_DATA, INVALID_CLUSTER)
        return cluster

    def _authorise(
        self,
        frontend: str,
        method: str,
        path: str,
        params: Params | None,
        params_error: BadParamsError | None,
        content_type: str,
        body: bytes,
    ) -> Decision:
        """What a non-admin's request reads; Refused unless every part is allowed."""
        reader = tsdb if frontend == "tsdb" else pyroscope
        allowed_methods = ("GET", "POST") if frontend == "tsdb" else ("POST",)
        if method not in allowed_methods or not reader.is_read_path(path):
            raise RefusedError(ErrorType.FORBIDDEN, NO_RESOURCE_PERMISSION)
        try:
            if frontend == "pyroscope":
                return pyroscope.inspect(path, content_type, body)
            if params_error is not None:
                raise RefusedError(ErrorType.BAD_DATA, str(params_error))
            assert params is not None
            return tsdb.inspect(path, params, self.allowed)
        except QueryInvalidError as err:
            raise RefusedError(ErrorType.BAD_DATA, f"invalid query: {err}") from None
        except QueryRefusedError as err:
            raise RefusedError(ErrorType.FORBIDDEN, f"{NO_UNIT_PERMISSION}: {err}") from None
