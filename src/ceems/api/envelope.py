"""CEEMS' response envelope `{"status","data","errorType","error"}` and its error types."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum

from starlette.responses import Response

from ceems.api.render import encode


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


def success_encoded(items: Sequence[bytes]) -> Response:
    """`success` of objects already encoded as UTF-8."""
    if not items:
        return _json_response(b'{"status":"success","data":[]}\n', 200)
    # The envelope's head and tail go onto the first and last object, so that the body is
    # made in one join: one buffer of the answer's size, not three.
    parts = list(items)
    parts[0] = b'{"status":"success","data":[' + parts[0]
    parts[-1] += b"]}\n"
    return _json_response(b",".join(parts), 200)


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
