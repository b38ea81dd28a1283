"""The LB's HTTP/1.1 client to its backends: keep-alive connections parsed by httptools.

On the forwarding path aiohttp's client cost about 0.3 ms of Python per request (request
and response objects, multidicts, a writer task, timers), most of what the LB added to a
one-unit query. This client writes the request in one piece and parses the answer with
llhttp (httptools, uvicorn's own parser): about a fifth of that (0.07 against 0.36 ms of
CPU per request, each measured in a proxy doing nothing else). It does only what
forwarding needs: one request at a time per connection, answers read whole, no redirects,
cookies or decompression. Backends behind an HTTP proxy keep using aiohttp (backends.py).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import socket
import ssl
import time
from collections.abc import Sequence
from typing import NamedTuple, cast
from urllib.parse import unquote, urlsplit

import httptools

from ceems.common.httpconfig import HttpClientConfig

# Connections idle longer than this are closed rather than reused: shorter than the idle
# timeouts of Prometheus (5 min), VictoriaMetrics (1 min) and common proxies, so a request
# seldom meets a connection the server is closing. aiohttp's default.
KEEPALIVE_S = 15.0
# RFC 9110 9.2.2: these may be sent again when a reused connection drops before answering.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Methods that always carry a Content-Length, even for an empty body (as aiohttp does).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Answer(NamedTuple):
    """A backend's answer: status, raw header pairs in order, and the whole body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class ConnectError(Exception):
    """No connection could be made (refused, unreachable, TLS handshake failed)."""


class DisconnectedError(Exception):
    """The connection dropped, or the answer was not valid HTTP/1.1, before it was whole."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self) -> None:
        # Made by create_connection in the running loop. Kept: get_running_loop() costs a
        # getpid() system call per call on Python 3.11.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Answer] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.head_request = False
        self.headers_done = False
        self.received = False  # any byte of the current answer
        self.framed = False  # Content-Length or Transfer-Encoding: the end is known
        self.reusable = False
        self.closed = False
        self.idle_since = 0.0

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without deriving from it
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # A request goes out in one write; never let Nagle hold it for an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: the stream is out of step
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as err:
            self._fail(DisconnectedError(f"invalid answer: {err}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self.waiter is None or self.waiter.done():
            return
        if self.headers_done and not self.framed:
            self._finish()  # an answer delimited by the end of the connection
        else:
            self._fail(DisconnectedError("connection closed before the answer was whole"))

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        self.headers = []
        self.body = []
        self.headers_done = False
        self.framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # a chunked answer's trailers: not forwarded
        lower = name.lower()
        if lower == b"content-length" or lower == b"transfer-encoding":
            self.framed = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        if self.head_request and self.parser.get_status_code() >= 200:
            # llhttp would wait for the body Content-Length announces; a HEAD answer has
            # none, so take it here and drop the connection (its parser is out of step).
            self._finish()
            self.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:
            return  # informational (103 Early Hints): the answer follows on the same stream
        if self.waiter is not None and not self.waiter.done():
            self.reusable = self.parser.should_keep_alive()
            self._finish()

    # -- used by the pool --

    def _finish(self) -> None:
        assert self.waiter is not None
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.waiter.set_result(Answer(self.parser.get_status_code(), self.headers, body))

    def _fail(self, err: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(err)
        self.close()

    def time_out(self) -> None:
        """Fail the request in flight with TimeoutError; its answer may still come, so the
        connection is closed (unless the answer is whole already: it is returned)."""
        if self.waiter is not None and not self.waiter.done():
            self._fail(TimeoutError())

    def close(self) -> None:
        """Close the connection; it is never reused."""
        self.reusable = False
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def send(self, request: bytes, head_request: bool) -> asyncio.Future[Answer]:
        """Send one request; the future is its whole answer. (A plain function, not a
        coroutine: one frame less to create and resume per request.)"""
        assert self.transport is not None
        self.waiter = waiter = self.loop.create_future()
        self.head_request = head_request
        self.received = False
        self.reusable = False
        self.transport.write(request)
        return waiter


def _tls_context(web: HttpClientConfig) -> ssl.SSLContext:
    verify = web.verify()
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify:
        return ssl.create_default_context()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _header_line(name: str, value: str) -> bytes:
    if any(c in value or c in name for c in "\r\n\0"):
        raise ValueError(f"header {name!r}: a configured value may not hold CR, LF or NUL")
    return f"{name}: {value}\r\n".encode()


class Http1Pool:
    """Keep-alive connections to one backend, with its credentials and headers on each request."""

    def __init__(self, web: HttpClientConfig, limit: int = 256) -> None:
        parts = urlsplit(web.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {web.url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = _tls_context(web) if parts.scheme == "https" else None
        server_name = web.tls_config.server_name if web.tls_config else ""
        self.server_hostname = (server_name or self.host) if self.tls else None
        self.prefix = parts.path.rstrip("/").encode("ascii")
        self.timeout_s = web.timeout
        host = f"[{self.host}]" if ":" in self.host else self.host
        if parts.port is not None:
            host += f":{parts.port}"
        configured = {"Host": host, **web.headers()}
        if web.basic_auth is not None:
            user, password = web.basic_auth.username, web.basic_auth.resolved_password()
        else:  # credentials in the URL, as aiohttp and httpx take them
            user, password = unquote(parts.username or ""), unquote(parts.password or "")
        if (user or password) and "Authorization" not in configured:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            configured["Authorization"] = f"Basic {token}"
        # Configured headers win over a client's of the same name (a tenant header, say).
        self.fixed = b"".join(_header_line(k, v) for k, v in configured.items())
        self.fixed_names = frozenset(k.lower().encode() for k in configured)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        # The concurrency cap: requests holding a slot, and those queued for one (FIFO, as
        # asyncio.Semaphore) once all `limit` are taken.
        self.limit = limit
        self._busy = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        # Deadlines of the exchanges in flight, and the one timer that enforces them. An
        # asyncio.timeout per request cost a Timeout object, a timer made and cancelled
        # (a libuv handle with uvloop) and task bookkeeping: a measurable part of what the
        # LB adds to a request. Here a request costs a dict entry; the timer, armed for the
        # earliest deadline and never cancelled, fires about once per `timeout_s`.
        self._deadlines: dict[_Connection, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def _request(
        self, method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> bytes:
        parts = [method.encode("ascii"), b" ", self.prefix, target, b" HTTP/1.1\r\n", self.fixed]
        fixed = self.fixed_names
        for name, value in headers:
            if name not in fixed:
                parts += (name, b": ", value, b"\r\n")
        if body or method in _BODY_METHODS:
            parts.append(b"content-length: %d\r\n" % len(body))
        parts += (b"\r\n", body)
        return b"".join(parts)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                _Connection, self.host, self.port, ssl=self.tls,
                server_hostname=self.server_hostname,
            )  # fmt: skip
        except OSError as err:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise ConnectError(f"{type(err).__name__}: {err}") from err
        self._open.add(connection)
        return connection

    def _reuse(self) -> _Connection | None:
        now = time.monotonic()
        idle = self._idle
        if idle and now - idle[0].idle_since >= KEEPALIVE_S:
            # The least recently used, left at the bottom after a burst: close it (one per
            # request) rather than hold its socket until the server gives up on it.
            self._discard(idle.pop(0))
        while idle:
            connection = idle.pop()  # the most recently used: least likely to be stale
            if not connection.closed and now - connection.idle_since < KEEPALIVE_S:
                return connection
            self._discard(connection)
        return None

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    async def request(
        self, method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> Answer:
        """One request; `target` is the encoded path and query (the URL's path is prefixed).

        Raises ConnectError, DisconnectedError, or TimeoutError after the backend's timeout
        (waiting for a slot, connecting, sending and reading together, as aiohttp's total
        timeout); a connection that timed out is closed, never reused.
        """
        request = self._request(method, target, headers, body)
        # When the timeout started: now. Read from the loop only when first needed; on the
        # usual path that is the idle connection's loop (asyncio.get_running_loop() costs a
        # getpid() system call on Python 3.11).
        deadline: float | None = None
        if self._busy < self.limit:
            self._busy += 1  # the usual case: a slot is free (none are queued then)
        else:
            deadline = asyncio.get_running_loop().time() + self.timeout_s
            async with asyncio.timeout_at(deadline):
                await self._queued()
        try:
            connection = self._reuse()
            reused = connection is not None
            for _ in range(2):
                if connection is None:
                    if deadline is None:
                        deadline = asyncio.get_running_loop().time() + self.timeout_s
                    async with asyncio.timeout_at(deadline):  # a new connection: rare
                        connection = await self._connect()
                elif deadline is None:
                    deadline = connection.loop.time() + self.timeout_s
                sent = connection
                try:
                    answer = await self._exchange(sent, request, method, deadline)
                except DisconnectedError:
                    self._discard(connection)
                    # A kept-alive connection the server closed as we wrote: send it again
                    # on a new one, when that cannot repeat a side effect (as aiohttp does).
                    if reused and not connection.received and method in IDEMPOTENT:
                        connection, reused = None, False
                        continue
                    raise
                except BaseException:
                    self._discard(connection)  # a timeout or cancel: its answer may still come
                    raise
                finally:
                    self._deadlines.pop(sent, None)
                if connection.reusable:
                    connection.idle_since = time.monotonic()
                    self._idle.append(connection)
                else:
                    self._discard(connection)
                return answer
            raise AssertionError("unreachable")
        finally:
            self._release()

    # -- the concurrency cap --

    async def _queued(self) -> None:
        """Wait for a slot; the one who frees it hands it over (`_busy` stays the same)."""
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # a release may have dropped it
                    self._queue.remove(waiter)
            raise

    def _release(self) -> None:
        # Waiters are queued only while every slot is taken, so a free slot means none wait.
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to the next in line
                return
        self._busy -= 1

    # -- the timeout of exchanges --

    def _exchange(
        self, connection: _Connection, request: bytes, method: str, deadline: float
    ) -> asyncio.Future[Answer]:
        """Send the request; its answer, failed with TimeoutError at `deadline`."""
        answer = connection.send(request, method == "HEAD")
        self._deadlines[connection] = deadline
        loop = connection.loop
        if self._timer is None or deadline < self._timer_at or self._timer_loop is not loop:
            self._arm(loop, deadline)
        return answer

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._expire, loop)
        self._timer_at = when
        self._timer_loop = loop

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the exchanges past their deadline; re-arm for the earliest left."""
        self._timer = None
        now = loop.time()
        earliest: float | None = None
        for connection, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[connection]
                connection.time_out()
            elif earliest is None or deadline < earliest:
                earliest = deadline
        if earliest is not None:
            self._arm(loop, earliest)

    async def close(self) -> None:
        """Close every connection."""
        for connection in list(self._open):
            self._discard(connection)
        self._idle.clear()
        self._deadlines.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
