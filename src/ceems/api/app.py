"""The API server's ASGI app: CEEMS' HTTP API under `{prefix}/api/v1`, errors in its envelope."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response

from ceems.api.auth import build_auth
from ceems.api.config import ApiServerConfig
from ceems.api.envelope import GZIP_LEVEL, GZIP_MINIMUM_BYTES, ApiError, ErrorType, failure
from ceems.api.rendercache import UnitTexts
from ceems.api.routes import accounts, health, units, usage
from ceems.api.routes.context import ServerContext

log = logging.getLogger(__name__)

API_VERSION = "v1"
# Parameters CEEMS parses itself and reports as malformed timestamps.
_TIMESTAMPS = ("from", "to")


def normalise_prefix(route_prefix: str) -> str:
    """`/`, `` -> ``; `ceems/` -> `/ceems`."""
    stripped = route_prefix.strip("/")
    return f"/{stripped}" if stripped else ""


def validation_message(errors: Sequence[Any]) -> str:
    """CEEMS-style reason for the first invalid parameter of a request."""
    first = errors[0] if errors else {}
    loc = [str(part) for part in first.get("loc", ())]
    where, name = (loc[0], loc[-1]) if len(loc) >= 2 else ("request", "")
    if where == "query" and name in _TIMESTAMPS:
        return f"query parameter {name!r}: malformed timestamp"
    return f"{where} parameter {name!r}: {first.get('msg', 'invalid')}"


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return failure(exc.error_type, exc.message)


async def _validation_error(_: Request, exc: Exception) -> Response:
    # FastAPI answers 422 with its own body; CEEMS clients expect a 400 envelope.
    assert isinstance(exc, RequestValidationError)
    return failure(ErrorType.BAD_DATA, validation_message(exc.errors()))


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        kind = ErrorType.NOT_FOUND
    elif exc.status_code >= 500:
        kind = ErrorType.INTERNAL
    else:
        kind = ErrorType.BAD_DATA
    return failure(kind, str(exc.detail), status_code=exc.status_code)


async def _store_error(request: Request, exc: Exception) -> Response:
    log.error("store query failed", extra={"path": request.url.path, "err": str(exc)})
    return failure(ErrorType.INTERNAL, "failed to query the store")


def create_app(
    config: ApiServerConfig,
    engine: sa.Engine,
    *,
    route_prefix: str = "",
    clock: Callable[[], float] = time.time,
    unit_texts: UnitTexts | None = None,
) -> FastAPI:
    """The API app reading from `engine` (the read-only one; the writer has its own).

    Routes live under `{route_prefix}/api/v1`; `/health`, `/docs` and `/openapi.json`
    under `{route_prefix}`. Every request is sync work run in FastAPI's threadpool, so
    a slow query never blocks the event loop. `unit_texts` keeps rendered units between
    requests (a default-sized one when None).
    """
    prefix = normalise_prefix(route_prefix)
    web = config.ceems_api_server.web
    app = FastAPI(
        title="CEEMS API server",
        description="Compute units, users, projects, usage and stats (CEEMS-compatible).",
        version=API_VERSION,
        docs_url=f"{prefix}/docs",
        openapi_url=f"{prefix}/openapi.json",
        redoc_url=None,
    )
    ctx = ServerContext(engine, config, clock, UnitTexts() if unit_texts is None else unit_texts)
    auth = build_auth(web.user_header_names, engine)
    api = f"{prefix}/api/{API_VERSION}"
    app.include_router(health.build_router(ctx), prefix=prefix)
    app.include_router(units.build_router(ctx, auth), prefix=api)
    app.include_router(accounts.build_router(ctx, auth), prefix=api)
    app.include_router(usage.build_router(ctx, auth), prefix=api)

    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(sa.exc.SQLAlchemyError, _store_error)

    # `/units` compresses its own bodies, in its worker thread, and keeps them.
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_BYTES, compresslevel=GZIP_LEVEL)
    if web.cors_origin:
        # CEEMS' `cors_origin` is a regular expression matched against the whole origin.
        app.add_middleware(
            CORSMiddleware,
            allow_origin_regex=web.cors_origin,
            allow_methods=["GET"],
            allow_headers=["Accept", "Authorization", "Content-Type", "Origin",
                           *web.user_header_names],
            expose_headers=["Date"],
        )  # fmt: skip
    return app
