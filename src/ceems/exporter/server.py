"""The exporter's HTTP(S) server: /metrics, /health and a landing page, on stdlib http.server.

The exporter runs on every compute node, so it serves with the standard library rather than
a web framework: a thread per connection, TLS handshakes done in that thread (a slow client
cannot stall `accept`), basic auth from the web config and a cap on parallel scrapes.
"""

from __future__ import annotations

import gzip
import html
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from ceems.common.webconfig import BasicAuth, WebConfig

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 30.0


def parse_listen_address(address: str) -> tuple[str, int]:
    """`:9010` -> ("", 9010) (all interfaces); `127.0.0.1:9010`; `[::1]:9010`."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(
            f"listen address {address!r} is not HOST:PORT (e.g. :9010, 127.0.0.1:9010)"
        )
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What every request handler needs, fixed at start-up."""

    registry: CollectorRegistry
    telemetry_path: str
    web: WebConfig
    auth: BasicAuth
    scrape_slots: threading.BoundedSemaphore | None
    landing_html: bytes


@dataclass(frozen=True, slots=True)
class _NameFilter:
    """Only the families named in `name[]` parameters, as Prometheus exporters allow.

    prometheus_client's `restricted_registry` needs collectors that describe themselves;
    ours are built fresh each scrape, so the filter applies to the collected families.
    """

    registry: CollectorRegistry
    names: frozenset[str]

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            if family.name in self.names or any(s.name in self.names for s in family.samples):
                yield family


class _Handler(BaseHTTPRequestHandler):
    options: ServeOptions  # set on a subclass per server
    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes; with Nagle's algorithm on, a keep-alive client's
    # delayed ACK would add 40 ms to every scrape.
    disable_nagle_algorithm = True
    timeout = REQUEST_TIMEOUT_S
    server_version = "ceems_exporter"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http request", extra={"client": self.client_address[0], "line": format % args})

    def _send(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**self.options.web.headers, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _text(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8", extra)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        options = self.options
        if options.auth and not options.auth.check(self.headers.get("Authorization")):
            self._text(
                HTTPStatus.UNAUTHORIZED,
                "Unauthorized\n",
                {"WWW-Authenticate": 'Basic realm="ceems_exporter"'},
            )
            return
        url = urlsplit(self.path)
        if url.path == options.telemetry_path:
            self._metrics(parse_qs(url.query))
        elif url.path == "/health":
            self._text(HTTPStatus.OK, "OK\n")
        elif url.path == "/":
            self._send(HTTPStatus.OK, options.landing_html, "text/html; charset=utf-8")
        else:
            self._text(HTTPStatus.NOT_FOUND, f"404 page not found: {url.path}\n")

    def _metrics(self, params: dict[str, list[str]]) -> None:
        slots = self.options.scrape_slots
        if slots is not None and not slots.acquire(blocking=False):
            self._text(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "Too many concurrent scrapes; raise --web.max-requests if this is expected.\n",
            )
            return
        try:
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            registry = self.options.registry
            names = params.get("name[]")
            body = encoder(_NameFilter(registry, frozenset(names)) if names else registry)
        finally:
            if slots is not None:
                slots.release()
        extra: dict[str, str] = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=1)  # scrapes are frequent; favour speed
            extra["Content-Encoding"] = "gzip"
        self._send(HTTPStatus.OK, body, content_type, extra)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    ssl_context: ssl.SSLContext | None = None

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Handshake here, in the connection's own thread, under the request timeout.
        if self.ssl_context is not None:
            request.settimeout(REQUEST_TIMEOUT_S)
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as err:
                log.debug(
                    "tls handshake failed", extra={"client": client_address[0], "err": str(err)}
                )
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection error", extra={"client": str(client_address)}, exc_info=True)


def landing_page(telemetry_path: str, version: str) -> bytes:
    """A small HTML page linking to the metrics and health endpoints."""
    path = html.escape(telemetry_path)
    return (
        "<!DOCTYPE html><html><head><title>CEEMS Exporter</title></head><body>"
        f"<h1>CEEMS Exporter</h1><p>Compute Energy &amp; Emissions Monitoring Stack, version "
        f'{html.escape(version)}</p><ul><li><a href="{path}">Metrics</a></li>'
        '<li><a href="/health">Health</a></li></ul></body></html>'
    ).encode()


class ExporterServer:
    """One HTTP(S) server per listen address, each serving in its own thread."""

    def __init__(self, addresses: list[str], options: ServeOptions) -> None:
        handler = type("Handler", (_Handler,), {"options": options})
        context = options.web.tls.ssl_context() if options.web.tls is not None else None
        self.servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        try:
            for address in addresses:
                server = _Server(parse_listen_address(address), handler)
                server.ssl_context = context
                self.servers.append(server)
        except OSError:
            self.shutdown()
            raise

    @property
    def ports(self) -> list[int]:
        """The bound ports, useful when an address asked for port 0."""
        return [int(s.server_address[1]) for s in self.servers]

    def start(self) -> None:
        """Serve every address in a background thread."""
        for server in self.servers:
            thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self) -> None:
        """Stop serving and close the sockets."""
        if self._threads:  # serve_forever is running: ask it to return first
            for server in self.servers:
                server.shutdown()
        for server in self.servers:
            server.server_close()
