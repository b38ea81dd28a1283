"""`/units`, `/units/admin` and `/units/verify`."""

# No `from __future__ import annotations`: FastAPI must see the dependencies of these
# closures, which string annotations would hide (they resolve in module globals only).

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ceems.api.auth import Auth
from ceems.api.envelope import (
    MISSING_DATA,
    NO_OWNERSHIP,
    ApiError,
    ErrorType,
    json_body,
    success,
)
from ceems.api.render import UNIT_FIELDS, unit_columns
from ceems.api.routes.context import (
    ClusterIds,
    Fields,
    From,
    Projects,
    Running,
    ServerContext,
    Timezone,
    To,
    Users,
    Uuids,
    parse_bool,
    parse_fields,
)
from ceems.api.schemas import ADMIN_ERROR_RESPONSES, ERROR_RESPONSES, Envelope, UnitModel
from ceems.api.store.queries import UnitFilter, fetch_unit_rows, is_admin, verify_ownership

_WINDOW_DOC = (
    "A unit is in the window [`from`, `to`] when it ended in it; `running` adds the units "
    "that have not ended. Without `from`/`to` the window is the last 24 hours; with `uuid` "
    "there is no window. Time strings are in `timezone` (default: `data.time_zone`)."
)


def build_router(ctx: ServerContext, auth: Auth) -> APIRouter:
    """Routes listing units and verifying their ownership."""
    router = APIRouter(tags=["units"])

    def list_units(
        request: Request,
        owners: Sequence[str],
        members_of: Sequence[str],
        cluster_id: Sequence[str],
        uuid: Sequence[str],
        project: Sequence[str],
        running: str | None,
        from_s: int | None,
        to_s: int | None,
        timezone: str | None,
        field: Sequence[str] | None,
    ) -> Response:
        fields = parse_fields(field, UNIT_FIELDS)
        zone = ctx.zone(timezone)
        flt = UnitFilter(
            cluster_ids=cluster_id,
            uuids=uuid,
            projects=project,
            users=owners,
            members_of=members_of,
            window=None if uuid else ctx.window(from_s, to_s),
            running=parse_bool("running", running),
        )
        with ctx.engine.connect() as conn:
            found = fetch_unit_rows(conn, flt, unit_columns(fields))
        # Compressed here, in the request's worker thread, so that a kept answer is kept
        # compressed too (the gzip middleware lets a Content-Encoding through).
        gzip = "gzip" in request.headers.get("accept-encoding", "")
        return json_body(*ctx.unit_texts.answer(found, fields, zone, ctx.now_ms(), gzip))

    @router.get(
        "/units",
        response_model=Envelope[UnitModel],
        responses=ERROR_RESPONSES,
        summary="Compute units of the current user",
        description=_WINDOW_DOC,
    )
    def units(
        request: Request,
        user: Annotated[str, Depends(auth.current_user)],
        cluster_id: ClusterIds = None,
        uuid: Uuids = None,
        project: Projects = None,
        running: Running = None,
        from_: From = None,
        to: To = None,
        timezone: Timezone = None,
        field: Fields = None,
    ) -> Response:
        # A user sees the units of every project they belong to, not only their own.
        return list_units(
            request, (), [user], cluster_id or (), uuid or (), project or (), running, from_, to,
            timezone, field,
        )  # fmt: skip

    @router.get(
        "/units/admin",
        response_model=Envelope[UnitModel],
        responses=ADMIN_ERROR_RESPONSES,
        summary="Compute units of any user (admins)",
        description=_WINDOW_DOC + " `user` selects owners (default: everyone).",
    )
    def units_admin(
        request: Request,
        _: Annotated[str, Depends(auth.admin_user)],
        cluster_id: ClusterIds = None,
        uuid: Uuids = None,
        project: Projects = None,
        user: Users = None,
        running: Running = None,
        from_: From = None,
        to: To = None,
        timezone: Timezone = None,
        field: Fields = None,
    ) -> Response:
        return list_units(
            request, user or (), (), cluster_id or (), uuid or (), project or (), running,
            from_, to, timezone, field,
        )  # fmt: skip

    @router.get(
        "/units/verify",
        response_model=Envelope[None],
        responses={**ERROR_RESPONSES, 403: ADMIN_ERROR_RESPONSES[403]},
        summary="Check the current user may see every given unit",
        description=(
            "200 when, for every `uuid`, the current user owns the unit, is a member of its "
            "project in its cluster, or is an admin; 403 otherwise (also for unknown uuids)."
        ),
    )
    def verify(
        user: Annotated[str, Depends(auth.current_user)],
        uuid: Uuids = None,
        cluster_id: ClusterIds = None,
    ) -> Response:
        if not uuid:
            raise ApiError(ErrorType.BAD_DATA, MISSING_DATA)
        with ctx.engine.connect() as conn:
            allowed = is_admin(conn, user) or verify_ownership(conn, user, uuid, cluster_id or ())
        if not allowed:
            raise ApiError(ErrorType.FORBIDDEN, NO_OWNERSHIP)
        return success(None)

    return router
