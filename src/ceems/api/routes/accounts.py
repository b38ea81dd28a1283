"""`/users`, `/projects` (and their `/admin` variants) and `/clusters/admin`."""

# No `from __future__ import annotations`: FastAPI must see the dependencies of these
# closures, which string annotations would hide (they resolve in module globals only).

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from ceems.api.auth import Auth
from ceems.api.envelope import ApiError, ErrorType, success
from ceems.api.render import render_admin_user, render_cluster, render_project, render_user
from ceems.api.routes.context import ClusterIds, Projects, ServerContext, Users
from ceems.api.schemas import (
    ADMIN_ERROR_RESPONSES,
    ERROR_RESPONSES,
    ClusterModel,
    Envelope,
    ProjectModel,
    UserModel,
)
from ceems.api.store.queries import (
    fetch_admin_users,
    fetch_clusters,
    fetch_projects,
    fetch_users,
)

Role = Annotated[str | None, Query(description="`admin`: list the admins and their sources")]


def build_router(ctx: ServerContext, auth: Auth) -> APIRouter:
    """Routes about users, projects and clusters."""
    router = APIRouter()

    @router.get(
        "/users",
        tags=["users"],
        response_model=Envelope[UserModel],
        responses=ERROR_RESPONSES,
        summary="The current user and their projects, per cluster",
    )
    def users(
        user: Annotated[str, Depends(auth.current_user)], cluster_id: ClusterIds = None
    ) -> Response:
        with ctx.engine.connect() as conn:
            found = fetch_users(conn, [user], cluster_id or ())
        return success(render_user(u) for u in found)

    @router.get(
        "/users/admin",
        tags=["users"],
        response_model=Envelope[UserModel],
        responses=ADMIN_ERROR_RESPONSES,
        summary="Any user and their projects (admins); all users without `user`",
    )
    def users_admin(
        _: Annotated[str, Depends(auth.admin_user)],
        user: Users = None,
        cluster_id: ClusterIds = None,
        role: Role = None,
    ) -> Response:
        if role not in (None, "admin"):
            raise ApiError(ErrorType.BAD_DATA, f"query parameter 'role': {role!r} is not admin")
        with ctx.engine.connect() as conn:
            if role == "admin":
                admins = fetch_admin_users(conn)
                return success(render_admin_user(n, s) for n, s in admins.items())
            found = fetch_users(conn, user or None, cluster_id or ())
        return success(render_user(u) for u in found)

    @router.get(
        "/projects",
        tags=["projects"],
        response_model=Envelope[ProjectModel],
        responses=ERROR_RESPONSES,
        summary="Projects of the current user with their members",
    )
    def projects(
        user: Annotated[str, Depends(auth.current_user)],
        project: Projects = None,
        cluster_id: ClusterIds = None,
    ) -> Response:
        with ctx.engine.connect() as conn:
            found = fetch_projects(conn, [user], project or (), cluster_id or ())
        return success(render_project(p) for p in found)

    @router.get(
        "/projects/admin",
        tags=["projects"],
        response_model=Envelope[ProjectModel],
        responses=ADMIN_ERROR_RESPONSES,
        summary="Any project with its members (admins); `user` limits to their projects",
    )
    def projects_admin(
        _: Annotated[str, Depends(auth.admin_user)],
        project: Projects = None,
        cluster_id: ClusterIds = None,
        user: Users = None,
    ) -> Response:
        with ctx.engine.connect() as conn:
            found = fetch_projects(conn, user or None, project or (), cluster_id or ())
        return success(render_project(p) for p in found)

    @router.get(
        "/clusters/admin",
        tags=["clusters"],
        response_model=Envelope[ClusterModel],
        responses=ADMIN_ERROR_RESPONSES,
        summary="Clusters in the store and in the config (admins)",
    )
    def clusters_admin(_: Annotated[str, Depends(auth.admin_user)]) -> Response:
        with ctx.engine.connect() as conn:
            known = dict(fetch_clusters(conn))
        for cluster in ctx.config.clusters:
            known[cluster.id] = known.get(cluster.id) or cluster.manager
        return success(render_cluster(i, m) for i, m in sorted(known.items()))

    return router
