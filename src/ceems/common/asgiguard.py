"""ASGI middleware every server shares: basic auth from the web config, a concurrency cap."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from ceems.common.webconfig import BasicAuth


@dataclass(frozen=True, slots=True)
class Guard:
    """ASGI middleware: basic auth from the web config and a cap on concurrent requests."""

    app: ASGIApp
    auth: BasicAuth
    slots: threading.BoundedSemaphore | None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.auth:
            headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
            if not self.auth.check(headers.get("authorization")):
                await _plain(
                    send, 401, b"Unauthorized\n", [(b"www-authenticate", b'Basic realm="ceems"')]
                )
                return
        if self.slots is not None and not self.slots.acquire(blocking=False):
            await _plain(send, 503, b"Too many concurrent requests\n", [])
            return
        try:
            await self.app(scope, receive, send)
        finally:
            if self.slots is not None:
                self.slots.release()


async def _plain(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), *headers]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
