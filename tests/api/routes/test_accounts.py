"""`/users`, `/projects`, `/clusters/admin`: members from the memberships table."""

from __future__ import annotations

import pytest

from tests.api.routes.conftest import Api

pytestmark = pytest.mark.anyio


async def test_users_shows_the_current_user_in_each_cluster(api: Api) -> None:
    response = await api.get("users", "alice")
    assert response.json()["data"] == [
        {"cluster_id": "os-0", "resource_manager": "openstack", "name": "alice",
         "projects": ["p1"]},
        {"cluster_id": "slurm-0", "resource_manager": "slurm", "name": "alice",
         "projects": ["p1", "p2"]},
    ]  # fmt: skip


async def test_users_admin_without_user_lists_everyone(api: Api) -> None:
    response = await api.get("users/admin", "root")
    names = [(u["cluster_id"], u["name"]) for u in response.json()["data"]]
    assert names == [(c, n) for c in ("os-0", "slurm-0") for n in ("alice", "bob", "carol")]


async def test_users_admin_role_admin_lists_admins_and_sources(api: Api) -> None:
    response = await api.get("users/admin", "root", {"role": "admin"})
    assert [(u["name"], u["tags"]) for u in response.json()["data"]] == [
        ("ops", ["grafana"]),
        ("root", ["config"]),
    ]


async def test_projects_list_every_member(api: Api) -> None:
    response = await api.get("projects", "bob", {"cluster_id": "slurm-0"})
    assert response.json()["data"] == [
        {"cluster_id": "slurm-0", "resource_manager": "slurm", "name": "p2",
         "users": ["alice", "bob"]},
    ]  # fmt: skip


async def test_projects_of_someone_else_are_empty(api: Api) -> None:
    response = await api.get("projects", "alice", {"project": "p3"})
    assert response.text == '{"status":"success","data":[]}\n'


async def test_projects_admin_shows_any_project_with_its_uid(api: Api) -> None:
    response = await api.get("projects/admin", "root", {"project": "p2"})
    assert response.json()["data"] == [
        {"uid": "uid-p2", "cluster_id": "os-0", "resource_manager": "openstack", "name": "p2",
         "users": ["bob"]},
        {"cluster_id": "slurm-0", "resource_manager": "slurm", "name": "p2",
         "users": ["alice", "bob"]},
    ]  # fmt: skip


async def test_projects_admin_user_limits_to_their_projects(api: Api) -> None:
    response = await api.get("projects/admin", "root", {"user": "carol"})
    assert {(p["cluster_id"], p["name"]) for p in response.json()["data"]} == {
        ("os-0", "p3"),
        ("slurm-0", "p3"),
    }


async def test_clusters_come_from_the_store_and_the_config(api: Api) -> None:
    response = await api.get("clusters/admin", "ops")
    assert response.json()["data"] == [
        {"id": "k8s-0", "manager": "k8s"},  # configured, nothing stored yet
        {"id": "old-0", "manager": ""},  # stored only: its manager is not known any more
        {"id": "os-0", "manager": "openstack"},
        {"id": "slurm-0", "manager": "slurm"},
    ]
