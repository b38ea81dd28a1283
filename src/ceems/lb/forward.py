"""Sending an authorised request to a live backend, with one retry on another.

The client's own credentials never leave the LB: the backend's configured ones replace
them. Responses are returned whole (TSDB answers are bounded by the server's sample limit),
optionally with configured labels removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import quote

import aiohttp
import orjson
from starlette.responses import Response
from yarl import URL

from ceems.lb.backends import Backend, Pool

# Never forwarded: per-connection headers, the client's credentials, and what httpx sets.
_DROPPED_REQUEST = frozenset({
    "host", "connection", "keep-alive", "proxy-authorization", "proxy-connection", "te",
    "trailer", "transfer-encoding", "upgrade", "authorization", "cookie", "content-length",
    "accept-encoding", "x-ceems-cluster-id",
})  # fmt: skip
_DROPPED_RESPONSE = frozenset({
    "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
    "set-cookie", "date", "server",
})  # fmt: skip
# Answers worth trying elsewhere: the backend is restarting or overloaded.
RETRY_STATUS = frozenset({502, 503})


class BackendUnavailableError(Exception):
    """No live backend could answer; `status` is 503 (none live), 502 or 504."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def request_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The client's headers that travel on to the backend."""
    kept: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if name not in _DROPPED_REQUEST:
            kept[name] = raw_value.decode("latin-1")
    # Identity: answers are passed on (or filtered) as they come, never re-encoded.
    kept["accept-encoding"] = "identity"
    return kept


def _drop_labels(labels: object, hidden: frozenset[str]) -> None:
    if isinstance(labels, dict):
        for name in hidden & labels.keys():
            del labels[name]


def filter_labels(body: bytes, hidden: frozenset[str]) -> bytes:
    """A Prometheus API answer without the `hidden` labels (query, series, labels answers)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    data = document.get("data") if isinstance(document, dict) else None
    if isinstance(data, dict) and isinstance(data.get("result"), list):
        for item in data["result"]:
            if isinstance(item, dict):
                _drop_labels(item.get("metric"), hidden)
    elif isinstance(data, list):
        if all(isinstance(item, str) for item in data):  # /labels: the names themselves
            document["data"] = [name for name in data if name not in hidden]
        for item in data:
            _drop_labels(item, hidden)
    else:
        return body
    return orjson.dumps(document)


def _response(
    backend: Backend, status: int, headers: Mapping[str, str], body: bytes, path: str
) -> Response:
    kept = {k: v for k, v in headers.items() if k.lower() not in _DROPPED_RESPONSE}
    hidden = frozenset(backend.config.filter_labels)
    # /api/v1/label/<name>/values lists values, not label names: a value is never dropped
    values = path.endswith("/values")
    if hidden and backend.kind == "tsdb" and path.startswith("/api/v1/") and not values:
        body = filter_labels(body, hidden)
    return Response(content=body, status_code=status, headers=kept)


async def forward(
    pool: Pool,
    method: str,
    path: str,
    query_string: bytes,
    headers: Mapping[str, str],
    body: bytes,
    oldest_s: float | None = None,
) -> Response:
    """The first usable answer of up to two live backends; BackendUnavailableError if none."""
    tried: list[Backend] = []
    failure = BackendUnavailableError(503, f"no live backend for cluster {pool.cluster_id!r}")
    # The path arrives percent-decoded (Starlette re-escapes only ?, # and \): encode it again,
    # or a space, control character or non-ASCII byte would break the backend's request line.
    target = quote(path, safe="/%:@!$&'()*+,;=~")
    target += ("?" + query_string.decode("latin-1")) if query_string else ""
    for _ in range(2):
        backend = pool.pick(exclude=tried, oldest_s=oldest_s)
        if backend is None:
            break
        tried.append(backend)
        backend.in_flight += 1
        # encoded=True: the query string goes out exactly as authorised, never re-quoted
        url = URL(backend.config.web.url.rstrip("/") + target, encoded=True)
        proxy = backend.config.web.proxy_url or None
        try:
            async with backend.session().request(
                method, url, data=body or None, headers=headers, allow_redirects=False, proxy=proxy
            ) as answer:
                status, answer_headers = answer.status, dict(answer.headers)
                content = await answer.read()
        except TimeoutError:
            # Slow, not necessarily dead: try the other replica, leave this one in the pool.
            failure = BackendUnavailableError(504, f"{backend.name}: no answer in time")
            continue
        except aiohttp.ClientConnectorError as err:
            backend.mark_dead(f"{type(err).__name__}: {err}")
            failure = BackendUnavailableError(502, f"{backend.name}: cannot connect")
            continue
        except aiohttp.ClientError as err:
            # A dropped connection or a broken answer: worth another replica, not a verdict.
            failure = BackendUnavailableError(502, f"{backend.name}: {type(err).__name__}")
            continue
        finally:
            backend.in_flight -= 1
        if status in RETRY_STATUS and pool.pick(exclude=tried) is not None:
            failure = BackendUnavailableError(status, f"{backend.name} unavailable")
            continue
        return _response(backend, status, answer_headers, content, path)
    raise failure
