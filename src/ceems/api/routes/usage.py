"""`/usage/{current,global}` (and `/admin`) and `/stats/{current,global}/admin`."""

# No `from __future__ import annotations`: FastAPI must see the dependencies of these
# closures, which string annotations would hide (they resolve in module globals only).

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from ceems.api.auth import Auth
from ceems.api.envelope import success
from ceems.api.render import USAGE_FIELDS, render_stat, render_usage
from ceems.api.routes.context import (
    ClusterIds,
    Experimental,
    Fields,
    From,
    Projects,
    ServerContext,
    To,
    Users,
    parse_bool,
    parse_fields,
)
from ceems.api.schemas import (
    ADMIN_ERROR_RESPONSES,
    ERROR_RESPONSES,
    Envelope,
    StatModel,
    UsageModel,
)
from ceems.api.store.queries import (
    UsageFilter,
    fetch_current_usage,
    fetch_daily_usage,
    fetch_global_usage,
    fetch_stats,
)

_CURRENT_DOC = (
    "Usage in the window [`from`, `to`] (default: the last 24 hours) per cluster, user and "
    "project: totals summed, averages weighted by allocated time. A unit counts in the "
    "window of its last update; `experimental` sums the daily usage table instead."
)
_GLOBAL_DOC = "Cumulative usage since the first unit per cluster, user and project."
_VISIBILITY = " Rows of every project the current user is a member of."
_ADMIN_VISIBILITY = (
    " Rows of every project; `user` limits them to the projects those users belong to "
    "(what they would see themselves), as CEEMS does."
)


def build_router(ctx: ServerContext, auth: Auth) -> APIRouter:
    """Routes summing usage, and quick stats for admins."""
    router = APIRouter()

    def current(
        members_of: Sequence[str] | None,
        cluster_id: list[str] | None,
        project: list[str] | None,
        from_s: int | None,
        to_s: int | None,
        experimental: str | None,
        field: list[str] | None,
    ) -> Response:
        fields = parse_fields(field, USAGE_FIELDS)
        daily = parse_bool("experimental", experimental)
        flt = UsageFilter(
            cluster_ids=cluster_id or (),
            projects=project or (),
            members_of=members_of,
            window=ctx.window(from_s, to_s),
        )
        with ctx.engine.connect() as conn:
            rows = fetch_daily_usage(conn, flt) if daily else fetch_current_usage(conn, flt)
        return success(render_usage(row, fields) for row in rows)

    def cumulative(
        members_of: Sequence[str] | None,
        cluster_id: list[str] | None,
        project: list[str] | None,
        field: list[str] | None,
    ) -> Response:
        fields = parse_fields(field, USAGE_FIELDS)
        flt = UsageFilter(
            cluster_ids=cluster_id or (), projects=project or (), members_of=members_of
        )
        with ctx.engine.connect() as conn:
            rows = fetch_global_usage(conn, flt)
        return success(render_usage(row, fields) for row in rows)

    @router.get(
        "/usage/current",
        tags=["usage"],
        response_model=Envelope[UsageModel],
        responses=ERROR_RESPONSES,
        summary="Usage in a window",
        description=_CURRENT_DOC + _VISIBILITY,
    )
    def usage_current(
        user: Annotated[str, Depends(auth.current_user)],
        cluster_id: ClusterIds = None,
        project: Projects = None,
        from_: From = None,
        to: To = None,
        experimental: Experimental = None,
        field: Fields = None,
    ) -> Response:
        return current([user], cluster_id, project, from_, to, experimental, field)

    @router.get(
        "/usage/current/admin",
        tags=["usage"],
        response_model=Envelope[UsageModel],
        responses=ADMIN_ERROR_RESPONSES,
        summary="Usage in a window (admins)",
        description=_CURRENT_DOC + _ADMIN_VISIBILITY,
    )
    def usage_current_admin(
        _: Annotated[str, Depends(auth.admin_user)],
        cluster_id: ClusterIds = None,
        project: Projects = None,
        user: Users = None,
        from_: From = None,
        to: To = None,
        experimental: Experimental = None,
        field: Fields = None,
    ) -> Response:
        return current(user or None, cluster_id, project, from_, to, experimental, field)

    @router.get(
        "/usage/global",
        tags=["usage"],
        response_model=Envelope[UsageModel],
        responses=ERROR_RESPONSES,
        summary="Cumulative usage",
        description=_GLOBAL_DOC + _VISIBILITY,
    )
    def usage_global(
        user: Annotated[str, Depends(auth.current_user)],
        cluster_id: ClusterIds = None,
        project: Projects = None,
        field: Fields = None,
    ) -> Response:
        return cumulative([user], cluster_id, project, field)

    @router.get(
        "/usage/global/admin",
        tags=["usage"],
        response_model=Envelope[UsageModel],
        responses=ADMIN_ERROR_RESPONSES,
        summary="Cumulative usage (admins)",
        description=_GLOBAL_DOC + _ADMIN_VISIBILITY,
    )
    def usage_global_admin(
        _: Annotated[str, Depends(auth.admin_user)],
        cluster_id: ClusterIds = None,
        project: Projects = None,
        user: Users = None,
        field: Fields = None,
    ) -> Response:
        return cumulative(user or None, cluster_id, project, field)

    @router.get(
        "/stats/current/admin",
        tags=["stats"],
        response_model=Envelope[StatModel],
        responses=ADMIN_ERROR_RESPONSES,
        summary="Counts per cluster of the units that ended in the window or still run",
    )
    def stats_current(
        _: Annotated[str, Depends(auth.admin_user)],
        cluster_id: ClusterIds = None,
        from_: From = None,
        to: To = None,
    ) -> Response:
        window = ctx.window(from_, to)
        with ctx.engine.connect() as conn:
            found = fetch_stats(conn, cluster_id or (), window)
        return success(render_stat(s) for s in found)

    @router.get(
        "/stats/global/admin",
        tags=["stats"],
        response_model=Envelope[StatModel],
        responses=ADMIN_ERROR_RESPONSES,
        summary="Counts per cluster of all units",
    )
    def stats_global(
        _: Annotated[str, Depends(auth.admin_user)], cluster_id: ClusterIds = None
    ) -> Response:
        with ctx.engine.connect() as conn:
            found = fetch_stats(conn, cluster_id or ())
        return success(render_stat(s) for s in found)

    return router
