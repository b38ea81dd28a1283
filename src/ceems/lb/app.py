"""The load balancer's ASGI app: identify, authorise, route, forward.

One app serves every listener; the port a request arrived on says whether it is for the
TSDB or the Pyroscope frontend. For a non-admin the order is: user, cluster, endpoint,
parameters, selectors, ownership; any refusal is answered here and nothing reaches a
backend. The hot path speaks ASGI directly (no Starlette request or response objects):
it runs for every panel of every dashboard, and its own time is what the LB adds.
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
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from ceems.api.envelope import ErrorType, failure
from ceems.lb import pyroscope, tsdb
from ceems.lb.authz import Decision, QueryInvalidError, QueryRefusedError
from ceems.lb.backends import Pools
from ceems.lb.config import LbConfig
from ceems.lb.forward import (
    DROPPED_REQUEST,
    IDENTITY,
    BackendUnavailableError,
    Forwarded,
    forward,
)
from ceems.lb.ownership import Ownership, OwnershipUnavailableError
from ceems.lb.params import BadParamsError, Params, read_params

log = logging.getLogger(__name__)

CLUSTER_HEADER = "x-ceems-cluster-id"
_CLUSTER_HEADER = CLUSTER_HEADER.encode()
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
# Memory the plans of TSDB requests may hold (request texts, parsed and re-encoded).
PLAN_CACHE_BYTES = 16 << 20


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
        self._counted: dict[tuple[str, str], Counter] = {}

    def count(self, frontend: str, outcome: str) -> None:
        """One more request with this outcome (children kept: `labels()` costs a lock)."""
        child = self._counted.get((frontend, outcome))
        if child is None:
            child = self._counted[frontend, outcome] = self.requests.labels(frontend, outcome)
        child.inc()


@dataclass(slots=True)
class Incoming:
    """What the LB reads of a request's head, from one pass over its headers."""

    method: str
    path: str
    query_string: bytes
    user: str
    cluster_header: str
    content_type: str
    content_types: int  # how many Content-Type headers
    forwarded: list[tuple[bytes, bytes]]  # the headers that travel on, as request_headers


@dataclass(slots=True, eq=False)
class Plan:
    """What the text of a TSDB request decides, whoever sends it.

    Its parameters, the clusters its `ceems_id` matchers name, what is forwarded (the pairs
    re-encoded), the oldest time it reads, and, once a non-admin's request was allowed, the
    units it reads. Who asks and what they own are checked for every request; only the
    parsing and the query's own analysis are kept. Parsing, naming clusters, authorising
    and re-encoding cost the LB more than their warm timings suggest: between requests the
    CPU caches go to Prometheus, and each step touches its own code and data again (about
    50 us of the ~100 us the app spent before forwarding, measured under the benchmark).
    """

    params: Params
    named: frozenset[str]
    query_string: bytes
    body: bytes
    requested: float | None  # start, else time; None: now
    decision: Decision | None = None

    @classmethod
    def of(cls, path: str, params: Params) -> Plan:
        """The plan of a request to `path` with these parameters."""
        return cls(
            params, tsdb.named_clusters(path, params), params.query_string(), params.body(),
            tsdb.requested_time(params),
        )  # fmt: skip

    def oldest(self, now: float) -> float:
        """As `tsdb.oldest_time`."""
        return now if self.requested is None else self.requested


PlanKey = tuple[str, str, bytes, str, bytes]  # method, path, query string, content type, body


class PlanCache:
    """Plans by the request's text, the oldest dropped first past a byte budget.

    Keyed by everything `read_params` and the analysis read (method, path, query string,
    Content-Type, body), never by user. Dashboards repeat requests exactly: a panel's refresh
    within the same step, a dashboard with a fixed range (a finished job's).
    """

    def __init__(self, budget_bytes: int = PLAN_CACHE_BYTES) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._plans: dict[PlanKey, tuple[Plan, int]] = {}

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, key: PlanKey) -> Plan | None:
        """The plan of `key`, if kept."""
        entry = self._plans.get(key)
        return entry[0] if entry is not None else None

    def add(self, key: PlanKey, plan: Plan) -> Plan:
        """Keep `plan` (unless larger than the budget); returns it."""
        # The key (query string and body), and their parsed and re-encoded forms. A decision
        # is the one DECISIONS keeps for the query (its uuid set is shared, not copied).
        size = 3 * (len(key[2]) + len(key[4])) + 512
        if size > self.budget:
            return plan
        replaced = self._plans.pop(key, None)
        if replaced is not None:
            self.used -= replaced[1]
        self._plans[key] = (plan, size)
        self.used += size
        while self.used > self.budget:
            oldest = next(iter(self._plans))  # dicts keep insertion order: first in, first out
            self.used -= self._plans.pop(oldest)[1]
        return plan


@dataclass
class LbApp:
    """Both frontends; `frontends` maps a listening port to `tsdb` or `pyroscope`."""

    config: LbConfig
    ownership: Ownership
    pools: dict[str, Pools]
    frontends: dict[int, str] = field(default_factory=dict)
    metrics: LbMetrics = field(default_factory=LbMetrics)
    plans: PlanCache = field(default_factory=PlanCache)

    def __post_init__(self) -> None:
        section = self.config.ceems_lb
        self.user_headers = [h.lower().encode("latin-1") for h in section.user_header_names]
        self.allowed = frozenset(section.allowed_node_metrics)
        self.max_body = section.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        frontend = self._frontend(scope)
        path: str = scope["path"]
        if path == "/health":
            await PlainTextResponse(HEALTHY)(scope, receive, send)
            return
        if path == "/metrics":
            self._refresh_backend_gauges()
            metrics = Response(
                generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST
            )
            await metrics(scope, receive, send)
            return
        answer = await self.respond(scope, receive, frontend)
        if isinstance(answer, Response):
            await answer(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
        )
        await send({"type": "http.response.body", "body": answer.body})

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

    async def respond(self, scope: Scope, receive: Receive, frontend: str) -> Forwarded | Response:
        """The answer to one proxied request on `frontend`: the backend's, or a refusal."""
        response: Forwarded | Response
        try:
            response = await self._proxy(scope, receive, frontend)
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
        self.metrics.count(frontend, outcome)
        return response

    def _refresh_backend_gauges(self) -> None:
        for frontend, pools in self.pools.items():
            for cluster, pool in pools.by_cluster.items():
                for backend in pool.backends:
                    self.metrics.backend_up.labels(frontend, cluster, backend.name).set(
                        1 if backend.alive else 0
                    )

    async def _body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RefusedError(ErrorType.BAD_DATA, "client disconnected while sending")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise RefusedError(
                    ErrorType.BAD_DATA, f"request body larger than {self.max_body} bytes", 413
                )
            if not message.get("more_body", False):
                if not chunks:
                    return chunk  # the usual case: one message, no copy
                chunks.append(chunk)
                return b"".join(chunks)
            chunks.append(chunk)

    def _incoming(self, scope: Scope) -> Incoming:
        named: dict[bytes, bytes] = {}
        forwarded: list[tuple[bytes, bytes]] = []
        content_types = 0
        for name, value in scope["headers"]:
            lower = name.lower()
            if lower == b"content-type":
                content_types += 1
            # the first of each, as Starlette's Headers.get
            if lower not in named:
                named[lower] = value
            if lower not in DROPPED_REQUEST:
                forwarded.append((lower, value))
        forwarded.append(IDENTITY)
        user = ""
        for header in self.user_headers:
            user = named.get(header, b"").decode("latin-1").strip()
            if user:
                break
        return Incoming(
            method=scope["method"],
            path=scope["path"],
            query_string=scope.get("query_string", b""),
            user=user,
            cluster_header=named.get(_CLUSTER_HEADER, b"").decode("latin-1").strip(),
            content_type=named.get(b"content-type", b"").decode("latin-1"),
            content_types=content_types,
            forwarded=forwarded,  # as request_headers() keeps them, in the same pass
        )

    async def _proxy(self, scope: Scope, receive: Receive, frontend: str) -> Forwarded:
        request = self._incoming(scope)
        user = request.user
        if not user:
            raise RefusedError(ErrorType.UNAUTHORIZED, NO_USER)
        if request.content_types > 1:
            # the body would be read by one and forwarded with another
            raise RefusedError(ErrorType.BAD_DATA, "more than one Content-Type header")
        body = await self._body(receive)
        path, method = request.path, request.method
        content_type = request.content_type
        plan: Plan | None = None
        params_error: BadParamsError | None = None
        if frontend == "tsdb":
            key = (method, path, request.query_string, content_type, body)
            plan = self.plans.get(key)
            if plan is None:
                try:
                    params = read_params(request.query_string, method, content_type, body)
                except BadParamsError as err:
                    params_error = err
                else:
                    plan = self.plans.add(key, Plan.of(path, params))
            named = plan.named if plan is not None else frozenset()
        else:
            named = self._pyroscope_clusters(request, body)
        cluster = self._cluster(request, frontend, named)
        pool = self.pools[frontend].by_cluster[cluster]
        headers = request.forwarded
        if await self.ownership.is_admin(user):
            oldest = plan.oldest(time.time()) if plan is not None else None
            return await forward(pool, method, path, request.query_string, headers, body, oldest)
        if plan is not None:
            decision = plan.decision
            if decision is None:  # a refusal raises, and is decided again next time
                decision = plan.decision = self._authorise(
                    frontend, method, path, plan.params, None, content_type, body
                )
        else:
            decision = self._authorise(
                frontend, method, path, None, params_error, content_type, body
            )
        if decision.uuids and not await self.ownership.owns(user, cluster, decision.uuids):
            raise RefusedError(ErrorType.FORBIDDEN, NO_UNIT_PERMISSION)
        if frontend != "tsdb":
            return await forward(pool, method, path, request.query_string, headers, body)
        assert plan is not None  # unparsable parameters were refused by _authorise
        # Forward exactly the pairs that were authorised, re-encoded.
        return await forward(
            pool, method, path, plan.query_string, headers, plan.body, plan.oldest(time.time())
        )

    def _pyroscope_clusters(self, request: Incoming, body: bytes) -> frozenset[str]:
        if not pyroscope.is_read_path(request.path):
            return frozenset()
        try:
            return pyroscope.inspect(request.path, request.content_type, body).clusters
        except QueryRefusedError:
            return frozenset()  # refused later, with the reason

    def _cluster(self, request: Incoming, frontend: str, named: frozenset[str]) -> str:
        """The cluster a `ceems_id` matcher names (it wins, as in CEEMS), else the header."""
        if len(named) > 1:
            raise RefusedError(
                ErrorType.BAD_DATA, f"the query names several clusters: {', '.join(sorted(named))}"
            )
        cluster = next(iter(named)) if named else request.cluster_header
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
