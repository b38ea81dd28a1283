"""CEEMS' response envelope `{"status","data","errorType","error"}` and its error types."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from enum import StrEnum

from starlette.responses import Response

from ceems.api.render import encode

# Bodies shorter than this go out as they are.
GZIP_MINIMUM_BYTES = 1024
# Level 2: a 500-unit list (446 kB) compresses to 35 kB in 1.0 ms, against 30 kB in 2.4 ms
# at level 5 and 27 kB in 5.6 ms at 9; the time is the request's, the bytes few.
GZIP_LEVEL = 2


class ErrorType(StrEnum):
    """CEEMS' `errorType` values (pkg/api/http/error.go) and their HTTP status codes."""

    BAD_DATA = "bad_data"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    INTERNAL = "internal"
    UNAVAILABLE = "unavailable"

    @property
    def status_code(self) -> int:
        """The HTTP status CEEMS answers this error type with."""
        return _STATUS[self]


_STATUS = {
    ErrorType.BAD_DATA: 400,
    ErrorType.UNAUTHORIZED: 401,
    ErrorType.FORBIDDEN: 403,
    ErrorType.NOT_FOUND: 404,
    ErrorType.INTERNAL: 500,
    ErrorType.UNAVAILABLE: 503,
}

# CEEMS' error texts, kept verbatim: clients and the load balancer compare them.
NO_USER = "no user identified"
NO_PRIVILEGES = "current user does not have admin privileges"
INVALID_FIELDS = "invalid query fields"
NO_OWNERSHIP = "user do not have permissions on uuids"
MISSING_DATA = "missing data in the request"
MAX_QUERY_WINDOW = "maximum query window exceeded"


class ApiError(Exception):
    """A request refused with an envelope; raised where the bad input is first seen."""

    def __init__(self, error_type: ErrorType, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def _json_response(body: str | bytes, status_code: int) -> Response:
    return Response(
        content=body.encode() if isinstance(body, str) else body,
        status_code=status_code,
        media_type="application/json",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def success(items: Iterable[str] | None) -> Response:
    """200 with `data` a list of pre-rendered JSON objects (None: `"data":null`)."""
    if items is None:
        return _json_response('{"status":"success","data":null}\n', 200)
    # One join, not `+` on a list of hundreds of kB: each `+` is another large buffer, and
    # those cost ten times the join on a 500-unit list (fresh pages the kernel faults in).
    return _json_response("".join(('{"status":"success","data":[', ",".join(items), "]}\n")), 200)


def success_body(items: Sequence[bytes]) -> bytes:
    """The body of `success` for objects already encoded as UTF-8."""
    if not items:
        return b'{"status":"success","data":[]}\n'
    # The envelope's head and tail go onto the first and last object, so that the body is
    # made in one join: one buffer of the answer's size, not three.
    parts = list(items)
    parts[0] = b'{"status":"success","data":[' + parts[0]
    parts[-1] += b"]}\n"
    return b",".join(parts)


def gzip_body(body: bytes) -> bytes:
    """`body` in the gzip format, as the gzip middleware writes it."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush()


def json_body(body: bytes, gzipped: bool) -> Response:
    """200 with a finished JSON body, gzip'd already when `gzipped` (the gzip middleware
    passes a response with a Content-Encoding through untouched)."""
    response = _json_response(body, 200)
    if gzipped:
        response.headers["Content-Encoding"] = "gzip"
        response.headers["Vary"] = "Accept-Encoding"
    return response


def failure(error_type: ErrorType, message: str, status_code: int | None = None) -> Response:
    """The error envelope CEEMS writes: `data` null, `errorType` and `error` set."""
    body = (
        '{"status":"error","data":null,"errorType":'
        + encode(error_type.value)
        + ',"error":'
        + encode(message)
        + "}\n"
    )
    return _json_response(body, status_code or error_type.status_code)
