"""A local HTTP server that replays recorded emission-API answers and records the requests."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "emissions"


@dataclass(frozen=True, slots=True)
class Reply:
    """One canned answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay_s: float = 0.0  # wait this long before answering (released at teardown)


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request the server received."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased


@dataclass
class FakeApi:
    """Routes by path; each path answers its queued replies in turn, repeating the last."""

    base_url: str = ""
    routes: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(
        self,
        path: str,
        *,
        fixture: str | None = None,
        body: bytes | str | object = b"",
        status: int = 200,
        content_type: str | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Queue an answer for `path`: a fixture file, raw bytes/text or an object as JSON."""
        if fixture is not None:
            raw = (FIXTURES / fixture).read_bytes()
            kind = "text/html; charset=utf-8" if fixture.endswith(".html") else "application/json"
        elif isinstance(body, bytes):
            raw, kind = body, "application/json"
        elif isinstance(body, str):
            raw, kind = body.encode(), "application/json"
        else:
            raw, kind = json.dumps(body).encode(), "application/json"
        with self.lock:
            self.routes.setdefault(path, []).append(
                Reply(status, raw, content_type or kind, delay_s)
            )

    def next_reply(self, path: str) -> Reply:
        """The answer for this request of `path`."""
        with self.lock:
            queue = self.routes.get(path)
            if not queue:
                return Reply(404, b'{"message": "not found"}')
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def paths(self) -> list[str]:
        """Paths requested so far, in order."""
        return [request.path for request in self.requests]


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            api.requests.append(
                Recorded(
                    url.path,
                    urllib.parse.parse_qs(url.query, keep_blank_values=True),
                    {name.lower(): value for name, value in self.headers.items()},
                )
            )
            reply = api.next_reply(url.path)
            if reply.delay_s:
                api.release.wait(reply.delay_s)
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting, which is what a hang test wants

        def log_message(self, format: str, *args: object) -> None:
            del format, args  # keep test output quiet

    return Handler


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    """A FakeApi listening on a free loopback port for the duration of one test."""
    # A proxy configured in the environment must not see loopback requests.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    fake = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll keeps shutdown() at teardown from costing half a second per test.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield fake
    fake.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def load_json() -> Callable[[str], object]:
    """Reads a fixture file under tests/fixtures/emissions as JSON."""

    def load(name: str) -> object:
        return json.loads((FIXTURES / name).read_text())

    return load
