"""The LB's HTTP/1.1 client (`ceems.lb.http1`) against scripted servers on loopback.

Each server is an asyncio server whose handler reads requests off the socket and answers
with exactly the bytes a test gives it, so keep-alive, framing (Content-Length, chunked,
end of connection), informational answers, dropped connections and timeouts can each be
produced on purpose. TLS uses a throwaway self-signed certificate.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ceems.cli.tool.webconfig import self_signed_certificate
from ceems.common.httpconfig import HttpClientConfig
from ceems.lb import http1
from ceems.lb.backends import Backend, async_client
from ceems.lb.config import BackendConfig
from ceems.lb.http1 import Answer, ConnectError, DisconnectedError, Http1Pool
from tests.conftest import free_port

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class Request:
    """One request as the server read it."""

    head: list[bytes]  # request line, then header lines
    body: bytes
    connection: int  # which accepted connection carried it

    @property
    def line(self) -> bytes:
        return self.head[0]

    def header(self, name: bytes) -> list[bytes]:
        """Values of `name` (case-insensitive), in order."""
        found = []
        for line in self.head[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower():
                found.append(value.strip())
        return found


Script = Callable[["Server", Request, asyncio.StreamWriter], Awaitable[bool]]


async def answer_ok(server: Server, request: Request, writer: asyncio.StreamWriter) -> bool:
    """200 `{}`, keeping the connection open."""
    writer.write(OK)
    return True


@dataclass
class Server:
    """A loopback server answering each request with `script` (False: close afterwards)."""

    script: Script = answer_ok
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    accepted: int = 0
    holding: int = 0  # requests a script holds right now (`held`)
    most_held: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        connection = self.accepted
        try:
            while True:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n"))[:-4].split(b"\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request = Request(head, b"", connection)
                length = request.header(b"content-length")
                if length:
                    request.body = await reader.readexactly(int(length[0]))
                self.requests.append(request)
                keep = await self.script(self, request, writer)
                await writer.drain()
                if not keep:
                    return
        finally:
            writer.close()


def pool(url: str, **web: Any) -> Http1Pool:
    """A pool for `url` with `web` settings (HttpClientConfig keys)."""
    return Http1Pool(HttpClientConfig(url=url, **web))


async def get(client: Http1Pool, target: bytes = b"/api/v1/query", method: str = "GET") -> Answer:
    return await client.request(method, target, [(b"accept", b"*/*")], b"")


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


# ---- requests ---------------------------------------------------------------------------------


def test_request_carries_prefix_host_credentials_and_the_clients_headers() -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = pool(
                server.url + "/prom/", basic_auth={"username": "lb", "password": "pw"},
                http_headers={"X-Scope-OrgID": {"values": ["tenant-1"]}},
            )  # fmt: skip
            headers = [
                (b"x-grafana-user", b"alice"),
                (b"x-scope-orgid", b"tenant-2"),  # the configured value wins
                (b"x-custom", b"caf\xe9"),
            ]
            body = b"query=up"
            answer = await client.request("POST", b"/api/v1/query?x=1", headers, body)
            assert answer == Answer(200, [(b"Content-Type", b"application/json"),
                                          (b"Content-Length", b"2")], b"{}")  # fmt: skip
            (seen,) = server.requests
            assert seen.line == b"POST /prom/api/v1/query?x=1 HTTP/1.1"
            assert seen.header(b"host") == [f"127.0.0.1:{server.port}".encode()]
            assert seen.header(b"authorization") == [b"Basic bGI6cHc="]
            assert seen.header(b"x-scope-orgid") == [b"tenant-1"]
            assert seen.header(b"x-grafana-user") == [b"alice"]
            assert seen.header(b"x-custom") == [b"caf\xe9"]  # bytes as received
            assert seen.header(b"content-length") == [b"8"] and seen.body == body
            await client.close()

    run(scenario)


def test_credentials_in_the_url_become_basic_auth() -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = pool(f"http://lb:p%40ss@127.0.0.1:{server.port}")
            await get(client)
            assert server.requests[0].header(b"authorization") == [b"Basic bGI6cEBzcw=="]
            assert server.requests[0].header(b"host") == [f"127.0.0.1:{server.port}".encode()]
            await client.close()

    run(scenario)


@pytest.mark.parametrize(("method", "length"), [("GET", []), ("POST", [b"0"]), ("PUT", [b"0"])])
def test_content_length_of_an_empty_body(method: str, length: list[bytes]) -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = pool(server.url)
            await get(client, method=method)
            assert server.requests[0].header(b"content-length") == length
            await client.close()

    run(scenario)


def test_configured_headers_may_not_break_the_request() -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        pool("http://127.0.0.1:1", http_headers={"X-A": {"values": ["a\r\nX-B: b"]}})


# ---- keep-alive -----------------------------------------------------------------------------


def test_connections_are_kept_alive_and_reused() -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = pool(server.url)
            for _ in range(5):
                assert (await get(client)).status == 200
            assert server.accepted == 1
            # concurrent requests each get a connection, all reused afterwards
            await asyncio.gather(*(get(client) for _ in range(3)))
            await asyncio.gather(*(get(client) for _ in range(3)))
            assert server.accepted == 3
            await client.close()

    run(scenario)


def test_backend_connections_set_tcp_nodelay() -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = pool(server.url)
            await get(client)
            (connection,) = client._idle
            assert connection.transport is not None
            sock = connection.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            await client.close()

    run(scenario)


def test_connection_close_is_honoured() -> None:
    async def close_after(server: Server, request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        return False

    async def scenario() -> None:
        async with Server(close_after) as server:
            client = pool(server.url)
            for _ in range(3):
                assert (await get(client)).status == 200
            assert server.accepted == 3
            await client.close()

    run(scenario)


def test_a_connection_idle_too_long_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "KEEPALIVE_S", 0.05)

    async def scenario() -> None:
        async with Server() as server:
            client = pool(server.url)
            await get(client)
            await asyncio.sleep(0.1)
            await get(client)
            assert server.accepted == 2
            await client.close()

    run(scenario)


def test_connections_left_idle_after_a_burst_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "KEEPALIVE_S", 0.2)

    async def scenario() -> None:
        async with Server() as server:
            client = pool(server.url)
            await asyncio.gather(*(get(client) for _ in range(3)))
            oldest = client._idle[0]
            await asyncio.sleep(0.1)
            await get(client)  # the most recent connection, kept warm
            await asyncio.sleep(0.15)
            await get(client)
            assert oldest.closed and len(client._idle) == 2
            await client.close()

    run(scenario)


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def once(server: Server, request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK)  # keep-alive announced, then closed anyway
        return False

    async def scenario() -> None:
        async with Server(once) as server:
            client = pool(server.url)
            await get(client)
            await asyncio.sleep(0.05)  # the close reaches the client
            assert (await get(client, method="POST")).status == 200
            assert server.accepted == 2
            await client.close()

    run(scenario)


@pytest.mark.parametrize(("method", "retried"), [("GET", True), ("POST", False)])
def test_a_reused_connection_dropped_before_answering(method: str, retried: bool) -> None:
    async def drop_second(server: Server, request: Request, writer: asyncio.StreamWriter) -> bool:
        if len(server.requests) == 2:
            return False  # read, then closed without a byte of answer
        writer.write(OK)
        return True

    async def scenario() -> None:
        async with Server(drop_second) as server:
            client = pool(server.url)
            await get(client)
            if retried:  # idempotent: sent again on a new connection, as aiohttp does
                assert (await get(client, method=method)).status == 200
                assert server.accepted == 2
            else:  # a POST could have had an effect: never sent twice
                with pytest.raises(DisconnectedError):
                    await get(client, method=method)
                assert len(server.requests) == 2
            await client.close()

    run(scenario)


# ---- answers ----------------------------------------------------------------------------------


def scripted(*answers: bytes, keep: bool = True) -> Script:
    """Answer the n-th request with the n-th bytes."""

    async def script(server: Server, request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(answers[len(server.requests) - 1])
        return keep

    return script


def test_chunked_answers_are_joined_and_trailers_dropped() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def scenario() -> None:
        async with Server(scripted(chunked, OK)) as server:
            client = pool(server.url)
            answer = await get(client)
            assert answer.body == b"abcdefg"
            assert answer.headers == [(b"Transfer-Encoding", b"chunked"), (b"X-A", b"1")]
            assert (await get(client)).body == b"{}"  # the stream is still in step
            assert server.accepted == 1
            await client.close()

    run(scenario)


def test_an_answer_ended_by_closing_the_connection() -> None:
    async def scenario() -> None:
        answer = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
        async with Server(scripted(answer, keep=False)) as server:
            client = pool(server.url)
            assert (await get(client)).body == b"until the end"
            await client.close()

    run(scenario)


@pytest.mark.parametrize(
    "broken",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # truncated
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # truncated chunk
        b"HTTP/1.1 200 OK\r\nContent-Le",  # head cut
        b"garbage\r\n\r\n",  # not HTTP
        b"",  # nothing at all
    ],
)
def test_broken_answers_raise_disconnected(broken: bytes) -> None:
    async def scenario() -> None:
        async with Server(scripted(broken, keep=False)) as server:
            client = pool(server.url)
            with pytest.raises(DisconnectedError):
                await get(client, method="POST")
            assert not client._idle  # never reused
            await client.close()

    run(scenario)


def test_informational_answers_are_skipped() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n" + OK

    async def scenario() -> None:
        async with Server(scripted(early, OK)) as server:
            client = pool(server.url)
            answer = await get(client, method="POST")
            assert (answer.status, answer.body) == (200, b"{}")
            assert (await get(client)).status == 200
            await client.close()

    run(scenario)


def test_head_answers_have_no_body_and_do_not_hang() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"

    async def scenario() -> None:
        async with Server(scripted(head, OK)) as server:
            client = pool(server.url, timeout=2)
            answer = await get(client, method="HEAD")
            assert (answer.status, answer.body) == (200, b"")
            assert (await get(client)).body == b"{}"
            assert server.accepted == 2  # a HEAD's connection is not reused
            await client.close()

    run(scenario)


# ---- failures ---------------------------------------------------------------------------------


def test_nobody_listening_is_a_connect_error() -> None:
    async def scenario() -> None:
        client = pool(f"http://127.0.0.1:{free_port()}")
        with pytest.raises(ConnectError, match="ConnectionRefusedError"):
            await get(client)

    run(scenario)


def test_a_slow_answer_times_out_and_its_connection_is_dropped() -> None:
    async def slow_first(server: Server, request: Request, writer: asyncio.StreamWriter) -> bool:
        if len(server.requests) == 1:
            await asyncio.sleep(0.5)
        writer.write(OK)
        return True

    async def scenario() -> None:
        async with Server(slow_first) as server:
            client = pool(server.url, timeout=0.2)
            with pytest.raises(TimeoutError):
                await get(client)
            # the late answer must not be read as the next request's
            assert (await get(client)).body == b"{}"
            assert server.accepted == 2
            await client.close()

    run(scenario)


def test_the_limit_queues_requests() -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = Http1Pool(HttpClientConfig(url=server.url), limit=2)
            answers = await asyncio.gather(*(get(client) for _ in range(6)))
            assert all(a.status == 200 for a in answers)
            assert server.accepted <= 2
            await client.close()

    run(scenario)


def held(delay: float) -> Script:
    """Answer 200 after `delay` seconds, counting the requests held at once."""

    async def script(server: Server, request: Request, writer: asyncio.StreamWriter) -> bool:
        server.holding += 1
        server.most_held = max(server.most_held, server.holding)
        try:
            await asyncio.sleep(delay)
        finally:
            server.holding -= 1
        writer.write(OK)
        return True

    return script


def test_the_limit_caps_requests_in_flight() -> None:
    async def scenario() -> None:
        async with Server(held(0.05)) as server:
            client = Http1Pool(HttpClientConfig(url=server.url), limit=2)
            answers = await asyncio.gather(*(get(client) for _ in range(7)))
            assert [a.status for a in answers] == [200] * 7
            assert server.most_held == 2
            assert client._busy == 0 and not client._queue  # every slot given back
            await client.close()

    run(scenario)


def test_waiting_for_a_slot_counts_toward_the_timeout() -> None:
    async def scenario() -> None:
        async with Server(held(0.15)) as server:
            client = Http1Pool(HttpClientConfig(url=server.url, timeout=0.25), limit=1)
            first, second = await asyncio.gather(get(client), get(client), return_exceptions=True)
            # the second waited 0.15 s for the slot, then 0.15 s more for its answer
            assert isinstance(first, Answer) and first.status == 200
            assert isinstance(second, TimeoutError)
            assert client._busy == 0 and not client._queue
            assert (await get(client)).status == 200  # the slot was not lost
            await client.close()

    run(scenario)


def test_a_request_cancelled_in_the_queue_gives_no_slot_away() -> None:
    async def scenario() -> None:
        async with Server(held(0.1)) as server:
            client = Http1Pool(HttpClientConfig(url=server.url), limit=1)
            first = asyncio.ensure_future(get(client))
            await asyncio.sleep(0.02)
            queued = asyncio.ensure_future(get(client))
            await asyncio.sleep(0.02)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            assert (await first).status == 200
            assert client._busy == 0 and not client._queue
            assert (await get(client)).status == 200
            await client.close()

    run(scenario)


def test_a_slot_handed_to_a_cancelled_request_is_passed_on() -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = Http1Pool(HttpClientConfig(url=server.url), limit=1)
            client._busy = 1  # the only slot taken
            queued = asyncio.ensure_future(get(client))
            behind = asyncio.ensure_future(get(client))
            await asyncio.sleep(0)
            assert len(client._queue) == 2
            client._release()  # hands the slot to `queued`...
            queued.cancel()  # ...cancelled before it could run
            with pytest.raises(asyncio.CancelledError):
                await queued
            assert (await behind).status == 200  # it got the slot `queued` passed on
            assert client._busy == 0 and not client._queue
            await client.close()

    run(scenario)


def test_each_request_times_out_after_its_own_deadline() -> None:
    async def never(server: Server, request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    async def timed(client: Http1Pool) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await get(client)
        return loop.time() - started

    async def scenario() -> None:
        async with Server(never) as server:
            client = pool(server.url, timeout=0.2)
            first = asyncio.ensure_future(timed(client))
            await asyncio.sleep(0.1)
            # armed for the first deadline, the timer is armed again for this one
            second = await timed(client)
            assert 0.19 <= await first < 0.35
            assert 0.19 <= second < 0.35
            assert server.accepted == 2  # both connections dropped, none reused
            assert not client._open and not client._idle and not client._deadlines
            await client.close()

    run(scenario)


def test_an_answer_in_time_leaves_its_connection_reusable() -> None:
    async def scenario() -> None:
        async with Server(held(0.05)) as server:
            client = pool(server.url, timeout=0.2)
            for _ in range(3):
                assert (await get(client)).status == 200
                await asyncio.sleep(0.1)  # past earlier requests' deadlines
            assert server.accepted == 1
            assert not client._deadlines
            await client.close()

    run(scenario)


def test_a_closed_pool_times_out_in_another_event_loop() -> None:
    async def never(server: Server, request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(5)
        return False

    client = pool("http://127.0.0.1:1", timeout=0.2)

    async def fast() -> None:
        async with Server() as server:
            client.port = server.port
            assert (await get(client)).status == 200  # arms the timer in this loop
            await client.close()

    async def slow() -> None:
        async with Server(never) as server:
            client.port = server.port
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(get(client), 2)
            assert loop.time() - started < 1  # its own timeout, not wait_for's

    run(fast)
    run(slow)


# ---- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (also its own CA) and its key."""
    pytest.importorskip("cryptography")
    import datetime

    cert, key = self_signed_certificate(["127.0.0.1"], datetime.timedelta(days=1))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    return folder / "cert.pem", folder / "key.pem"


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


@pytest.mark.parametrize(
    ("tls_config", "works"),
    [
        ("ca", True),
        ({"insecure_skip_verify": True}, True),
        (None, False),  # the system's CAs do not know a self-signed certificate
    ],
)
def test_https_backends(certificate: tuple[Path, Path], tls_config: Any, works: bool) -> None:
    if tls_config == "ca":
        tls_config = {"ca_file": str(certificate[0])}

    async def scenario() -> None:
        async with Server(tls=server_tls(certificate)) as server:
            client = pool(server.url, tls_config=tls_config)
            if works:
                assert (await get(client)).body == b"{}"
                assert (await get(client)).body == b"{}"
                assert server.accepted == 1
            else:
                with pytest.raises(ConnectError):
                    await get(client)
            await client.close()

    run(scenario)


# ---- through a proxy (aiohttp) -----------------------------------------------------------------


def test_a_backend_behind_a_proxy_is_reached_through_it() -> None:
    async def as_proxy(server: Server, request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(OK)  # a forward proxy answering for the backend
        return True

    async def scenario() -> None:
        async with Server(as_proxy) as proxy:
            config = BackendConfig(
                web=HttpClientConfig(
                    url="http://backend.invalid:9090/prom",
                    proxy_url=proxy.url,
                    http_headers={"X-Scope-OrgID": {"values": ["tenant-1"]}},
                )
            )
            backend = Backend("tsdb", config, async_client(config.web))
            headers = [(b"x-scope-orgid", b"tenant-2"), (b"x-grafana-user", b"alice")]
            answer = await backend.exchange("GET", b"/api/v1/query?q=1", headers, b"")
            assert (answer.status, answer.body) == (200, b"{}")
            (seen,) = proxy.requests
            # absolute form: the proxy is asked for the backend's URL
            assert seen.line == b"GET http://backend.invalid:9090/prom/api/v1/query?q=1 HTTP/1.1"
            assert seen.header(b"x-scope-orgid") == [b"tenant-1"]
            assert seen.header(b"x-grafana-user") == [b"alice"]
            await backend.close()

    run(scenario)
