"""Sending an authorised request to a live backend, with one retry on another.

The client's own credentials never leave the LB: the backend's configured ones replace
them. Responses are returned whole (TSDB answers are bounded by the server's sample limit),
optionally with configured labels removed, as ASGI header pairs the app sends as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote

import orjson

from ceems.lb.backends import Backend, Pool
from ceems.lb.http1 import ConnectError, DisconnectedError

# Never forwarded: per-connection headers, the client's credentials, and what httpx sets.
# `expect`: the LB has read the whole body already; a backend's 100 Continue would only
# get in the way of its answer.
DROPPED_REQUEST = frozenset({
    b"host", b"connection", b"keep-alive", b"proxy-authorization", b"proxy-connection", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"authorization", b"cookie",
    b"content-length", b"accept-encoding", b"x-ceems-cluster-id", b"expect",
})  # fmt: skip
_DROPPED_RESPONSE = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"content-encoding",
    b"set-cookie", b"date", b"server",
})  # fmt: skip
# Identity: answers are passed on (or filtered) as they come, never re-encoded.
IDENTITY = (b"accept-encoding", b"identity")
# Answers worth trying elsewhere: the backend is restarting or overloaded.
RETRY_STATUS = frozenset({502, 503})
# Bytes a request line cannot carry as they are (controls, space, `#`, non-ASCII).
_UNSAFE_QUERY = re.compile(rb"[^\x21-\x7e]|#")


class BackendUnavailableError(Exception):
    """No live backend could answer; `status` is 503 (none live), 502 or 504."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Forwarded(NamedTuple):
    """A backend's answer as the client gets it: headers ready for ASGI, body whole."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def request_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's headers that travel on to the backend (names lowercased, values as sent)."""
    kept = [(n, v) for n, v in ((n.lower(), v) for n, v in headers) if n not in DROPPED_REQUEST]
    kept.append(IDENTITY)
    return kept


@lru_cache(maxsize=1024)
def _encoded_path(path: str) -> bytes:
    # The path arrives percent-decoded (as ASGI gives it): encode it again, or a space,
    # control character or non-ASCII byte would break the backend's request line.
    return quote(path, safe="/%:@!$&'()*+,;=~").encode("ascii")


def target_of(path: str, query_string: bytes) -> bytes:
    """The request target for the backend: the encoded path, and the query if any."""
    target = _encoded_path(path)
    if not query_string:
        return target
    # An admin's query string is forwarded as received; escape what a request line cannot hold.
    query = _UNSAFE_QUERY.sub(lambda m: b"%%%02X" % m.group()[0], query_string)
    return target + b"?" + query


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
    backend: Backend, status: int, headers: list[tuple[bytes, bytes]], body: bytes, path: str
) -> Forwarded:
    hidden = backend.hidden_labels
    # /api/v1/label/<name>/values lists values, not label names: a value is never dropped
    values = path.endswith("/values")
    if hidden and backend.kind == "tsdb" and path.startswith("/api/v1/") and not values:
        body = filter_labels(body, hidden)
    kept = [(n, v) for n, v in headers if n.lower() not in _DROPPED_RESPONSE]
    if status >= 200 and status not in (204, 304):  # those never carry one (as Starlette)
        kept.append((b"content-length", b"%d" % len(body)))
    return Forwarded(status, kept, body)


async def forward(
    pool: Pool,
    method: str,
    path: str,
    query_string: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    oldest_s: float | None = None,
) -> Forwarded:
    """The first usable answer of up to two live backends; BackendUnavailableError if none.

    `headers` are the client's, as `request_headers` keeps them.
    """
    tried: list[Backend] = []
    failure: BackendUnavailableError | None = None  # made when needed: most requests succeed
    target = target_of(path, query_string)
    for _ in range(2):
        backend = pool.pick(exclude=tried, oldest_s=oldest_s)
        if backend is None:
            break
        tried.append(backend)
        backend.in_flight += 1
        try:
            status, answer_headers, content = await backend.exchange(method, target, headers, body)
        except TimeoutError:
            # Slow, not necessarily dead: try the other replica, leave this one in the pool.
            failure = BackendUnavailableError(504, f"{backend.name}: no answer in time")
            continue
        except ConnectError as err:
            backend.mark_dead(str(err))
            failure = BackendUnavailableError(502, f"{backend.name}: cannot connect")
            continue
        except DisconnectedError as err:
            # A dropped connection or a broken answer: worth another replica, not a verdict.
            failure = BackendUnavailableError(502, f"{backend.name}: {err}")
            continue
        finally:
            backend.in_flight -= 1
        if status in RETRY_STATUS and pool.pick(exclude=tried) is not None:
            failure = BackendUnavailableError(status, f"{backend.name} unavailable")
            continue
        return _response(backend, status, answer_headers, content, path)
    if failure is None:
        failure = BackendUnavailableError(503, f"no live backend for cluster {pool.cluster_id!r}")
    raise failure
