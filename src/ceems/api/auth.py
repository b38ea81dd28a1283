"""Who is asking: the user from the first configured header, admins from the store."""

# No `from __future__ import annotations`: FastAPI must see the dependencies of these
# closures, which string annotations would hide (they resolve in module globals only).

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from ceems.api.envelope import NO_PRIVILEGES, NO_USER, ApiError, ErrorType
from ceems.api.store.queries import is_admin


def user_from_headers(headers: Mapping[str, str], names: Sequence[str]) -> str:
    """The first non-empty value among the configured user headers (CEEMS' order)."""
    for name in names:
        value = headers.get(name, "").strip()
        if value:
            return value
    raise ApiError(ErrorType.UNAUTHORIZED, NO_USER)


@dataclass(frozen=True, slots=True)
class Auth:
    """FastAPI dependencies giving the current user, and the current user if an admin."""

    current_user: Callable[..., Awaitable[str]]
    admin_user: Callable[..., str]


def build_auth(header_names: Sequence[str], engine: sa.Engine) -> Auth:
    """Dependencies reading `header_names` (a trusted proxy sets them) and `admin_users`."""
    names = tuple(header_names)
    if not names:
        raise ValueError("web.user_header_names: at least one header name is needed")
    # Declared for the OpenAPI document only; the value is read from every configured header.
    scheme = APIKeyHeader(name=names[0], auto_error=False, description="Current user name")

    # async: it only reads headers, and a sync dependency costs every request a round trip
    # through the thread pool.
    async def current_user(
        request: Request, _: Annotated[str | None, Security(scheme)] = None
    ) -> str:
        return user_from_headers(request.headers, names)

    def admin_user(user: Annotated[str, Depends(current_user)]) -> str:
        with engine.connect() as conn:
            if not is_admin(conn, user):
                raise ApiError(ErrorType.FORBIDDEN, NO_PRIVILEGES)
        return user

    return Auth(current_user=current_user, admin_user=admin_user)
