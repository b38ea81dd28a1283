"""Access control across every endpoint: a user sees others' data only through a shared project.

Units: the user's own and those of projects the user is a member of, in that cluster.
Usage: rows of projects the user is a member of, in that cluster. Projects: the user's own.
Users: the user. Stats, clusters and every `/admin` path: admins only. Verify: own units or
units of the user's projects.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.routes.conftest import Api, Params
from tests.api.routes.scenario import ADMINS, MEMBERSHIPS, T0, UNITS, USERS, Scenario

pytestmark = pytest.mark.anyio

OWNER = {u.uuid: u for u in UNITS}
EVERY_UUID = sorted(OWNER)
MONTH = {"from": str(T0 - 30 * 86400), "to": str(T0)}

# (path, params) a user may ask: each combination is asked by alice, bob and carol.
USER_REQUESTS: list[tuple[str, Params]] = [
    ("units", {}),
    ("units", {"running": ""}),
    ("units", {**MONTH, "running": "true"}),
    ("units", {"cluster_id": "slurm-0", **MONTH}),
    ("units", {"cluster_id": "os-0", "running": ""}),
    ("units", {"project": ["p1", "p2", "p3"], **MONTH, "running": ""}),
    ("units", {"uuid": EVERY_UUID}),
    ("units", {"uuid": EVERY_UUID, "cluster_id": "slurm-0", "project": "p2"}),
    ("units", {"user": ["alice", "bob", "carol"], **MONTH, "running": ""}),  # not for users
    ("units", {"field": ["uuid", "cluster_id"], **MONTH, "running": ""}),
    ("usage/current", {}),
    ("usage/current", MONTH),
    ("usage/current", {**MONTH, "experimental": ""}),
    ("usage/current", {**MONTH, "project": ["p1", "p2", "p3"]}),
    ("usage/current", {**MONTH, "cluster_id": "os-0"}),
    ("usage/current", {**MONTH, "user": ["alice", "bob", "carol"]}),
    ("usage/global", {}),
    ("usage/global", {"project": ["p1", "p2", "p3"], "cluster_id": ["slurm-0", "os-0"]}),
    ("usage/global", {"user": "bob", "field": ["cluster_id", "project", "username"]}),
    ("projects", {}),
    ("projects", {"project": ["p1", "p2", "p3"]}),
    ("projects", {"cluster_id": "os-0"}),
    ("users", {}),
    ("users", {"user": ["alice", "bob", "carol"], "cluster_id": ["slurm-0", "os-0"]}),
]

ADMIN_PATHS = [
    "units/admin",
    "users/admin",
    "projects/admin",
    "clusters/admin",
    "usage/current/admin",
    "usage/global/admin",
    "stats/current/admin",
    "stats/global/admin",
]
USER_PATHS = ["units", "units/verify", "users", "projects", "usage/current", "usage/global"]


def visible(user: str, path: str, item: dict[str, Any]) -> bool:
    """Whether `user` may see `item` of `path` (the rule this module proves)."""
    mine = {(c, p) for c, u, p in MEMBERSHIPS if u == user}
    if path == "units":
        unit = OWNER[item["uuid"]]
        return unit.username == user or (item["cluster_id"], unit.project) in mine
    if path.startswith("usage/"):
        return (item["cluster_id"], item["project"]) in mine
    if path == "projects":
        return (item["cluster_id"], item["name"]) in mine and user in item["users"]
    if path == "users":
        return bool(item["name"] == user)
    raise AssertionError(path)


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize(("path", "params"), USER_REQUESTS)
async def test_users_see_only_what_they_may(
    api: Api, scenario: Scenario, user: str, path: str, params: Params
) -> None:
    response = await api.get(path, user, params)
    assert response.status_code == 200, response.text
    items = response.json()["data"]
    hidden = [item for item in items if not visible(user, path, item)]
    assert hidden == []


@pytest.mark.parametrize(("path", "params"), USER_REQUESTS)
async def test_carol_never_sees_alice_or_bob(api: Api, path: str, params: Params) -> None:
    response = await api.get(path, "carol", params)
    text = response.text
    assert "alice" not in text and "bob" not in text
    assert "p1" not in text and "p2" not in text


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("alice", ["vm-a", "1001", "1002", "1003"]),  # 1003: bob's, in p2 on slurm-0
        ("bob", ["vm-b", "1002", "1003"]),  # 1002: alice's p2 unit; 1006 is ignored
        ("carol", ["vm-c", "1004"]),
    ],
)
async def test_each_user_gets_all_their_units(api: Api, user: str, expected: list[str]) -> None:
    response = await api.get("units", user, {"running": "", "from": str(T0 - 86400)})
    assert [u["uuid"] for u in response.json()["data"]] == expected


async def test_usage_includes_project_members_in_the_same_cluster_only(api: Api) -> None:
    response = await api.get("usage/current", "alice", MONTH)
    rows = {(r["cluster_id"], r["username"], r["project"]) for r in response.json()["data"]}
    assert rows == {
        ("os-0", "alice", "p1"),
        ("slurm-0", "alice", "p1"),
        ("slurm-0", "alice", "p2"),
        ("slurm-0", "bob", "p2"),  # shares p2 with alice on slurm-0
    }  # bob's p2 on os-0 is not alice's: she is in p2 on slurm-0 only


async def test_someone_elses_uuid_returns_nothing(api: Api) -> None:
    response = await api.get("units", "carol", {"uuid": "1003", "cluster_id": "slurm-0"})
    assert response.json() == {"status": "success", "data": []}
    # On os-0 bob's p2 is not alice's: membership counts in the unit's own cluster only.
    response = await api.get("units", "alice", {"uuid": "vm-b"})
    assert response.json() == {"status": "success", "data": []}


async def test_project_mates_see_each_others_units(api: Api) -> None:
    response = await api.get("units", "alice", {"uuid": "1003", "cluster_id": "slurm-0"})
    assert [u["username"] for u in response.json()["data"]] == ["bob"]


@pytest.mark.parametrize(
    ("user", "uuids", "cluster_id", "allowed"),
    [
        ("alice", ["1001"], None, True),  # her own
        ("alice", ["1003"], "slurm-0", True),  # bob's, in p2 which they share
        ("alice", ["1001", "1003", "1002"], "slurm-0", True),
        ("bob", ["1002"], "slurm-0", True),  # alice's p2 unit
        ("carol", ["vm-c", "1004"], None, True),
        ("alice", ["1004"], None, False),  # carol's
        ("alice", ["vm-b"], "os-0", False),  # bob's p2 on os-0, where alice is not in p2
        ("alice", ["1001", "1004"], None, False),  # one refused refuses all
        ("alice", ["1001"], "os-0", False),  # not in that cluster
        ("alice", ["does-not-exist"], None, False),
        ("bob", ["1001"], None, False),  # alice's p1
        ("carol", ["1001"], None, False),
        ("carol", ["1003", "vm-b"], None, False),
        ("root", ["1004", "vm-b"], None, True),  # admins may see everything
    ],
)
async def test_verify_ownership(
    api: Api, user: str, uuids: list[str], cluster_id: str | None, allowed: bool
) -> None:
    params: Params = {"uuid": uuids, **({"cluster_id": cluster_id} if cluster_id else {})}
    response = await api.get("units/verify", user, params)
    if allowed:
        assert (response.status_code, response.json()) == (
            200,
            {"status": "success", "data": None},
        )
    else:
        assert response.status_code == 403
        assert response.json() == {
            "status": "error",
            "data": None,
            "errorType": "forbidden",
            "error": "user do not have permissions on uuids",
        }


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("path", ADMIN_PATHS)
async def test_admin_paths_refuse_other_users(api: Api, user: str, path: str) -> None:
    response = await api.get(path, user, {"user": "alice"})
    assert response.status_code == 403
    assert response.json() == {
        "status": "error",
        "data": None,
        "errorType": "forbidden",
        "error": "current user does not have admin privileges",
    }


@pytest.mark.parametrize("admin", sorted(ADMINS))
@pytest.mark.parametrize("path", ADMIN_PATHS)
async def test_admins_from_any_source_pass(api: Api, admin: str, path: str) -> None:
    response = await api.get(path, admin)
    assert response.status_code == 200, response.text
    assert response.json()["data"]


@pytest.mark.parametrize("path", ADMIN_PATHS + USER_PATHS)
@pytest.mark.parametrize("headers", [{}, {"X-Grafana-User": ""}, {"X-Other-User": "alice"}])
async def test_missing_user_header_is_unauthorized(
    api: Api, path: str, headers: dict[str, str]
) -> None:
    response = await api.get(path, headers=headers, params={"uuid": "1001"})
    assert response.status_code == 401
    assert response.json() == {
        "status": "error",
        "data": None,
        "errorType": "unauthorized",
        "error": "no user identified",
    }


@pytest.mark.parametrize(
    ("path", "params", "owners"),
    [
        ("units/admin", {"user": "bob", "running": "", **MONTH}, {"bob"}),
        ("units/admin", {"running": "", **MONTH}, {"alice", "bob", "carol"}),
        ("units/admin", {"project": "p3", **MONTH}, {"carol"}),
        ("users/admin", {"user": "carol"}, {"carol"}),
        ("users/admin", {}, {"alice", "bob", "carol"}),
        # An admin's `user` shows what that user would see (CEEMS): carol's projects.
        ("usage/current/admin", {"user": "carol", **MONTH}, {"carol"}),
        ("usage/current/admin", {"user": "bob", **MONTH}, {"alice", "bob"}),
        ("usage/global/admin", {}, {"alice", "bob", "carol"}),
        ("usage/global/admin", {"user": "carol"}, {"carol"}),
    ],
)
async def test_admins_select_other_users(
    api: Api, path: str, params: Params, owners: set[str]
) -> None:
    response = await api.get(path, "root", params)
    items = response.json()["data"]
    assert {i.get("username", i.get("name")) for i in items} == owners
