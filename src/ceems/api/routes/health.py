"""`/health`: plain text, no user header needed (CEEMS' answer, for probes)."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import APIRouter
from starlette.responses import PlainTextResponse

from ceems.api.routes.context import ServerContext

log = logging.getLogger(__name__)


def build_router(ctx: ServerContext) -> APIRouter:
    """The health route: 200 when the store answers, 503 `KO` otherwise."""
    router = APIRouter(tags=["health"])

    @router.get(
        "/health",
        response_class=PlainTextResponse,
        responses={503: {"description": "The store does not answer"}},
        summary="Health of the API server",
    )
    def health() -> PlainTextResponse:
        try:
            with ctx.engine.connect() as conn:
                conn.execute(sa.select(1))
        except sa.exc.SQLAlchemyError:
            log.exception("store does not answer")
            return PlainTextResponse("KO", status_code=503)
        return PlainTextResponse("CEEMS API Server is healthy")

    return router
