"""Every query parameter is validated: a bad one is a 400 `bad_data` envelope naming it."""

from __future__ import annotations

import pytest

from tests.api.routes.conftest import Api, Params
from tests.api.routes.scenario import T0

pytestmark = pytest.mark.anyio

YEAR_AND_A_DAY = {"from": str(T0 - 366 * 86400), "to": str(T0)}
BACKWARDS = {"from": str(T0), "to": str(T0 - 10)}
MALFORMED_FROM = "query parameter 'from': malformed timestamp"
MALFORMED_TO = "query parameter 'to': malformed timestamp"
TOO_LONG = "maximum query window exceeded"
AFTER = f"query parameter 'from' ({T0}) is after 'to' ({T0 - 10})"


@pytest.mark.parametrize(
    ("path", "user", "params", "error"),
    [
        ("units", "alice", {"from": "yesterday"}, MALFORMED_FROM),
        ("units", "alice", {"from": "1.5"}, MALFORMED_FROM),
        ("units", "alice", {"to": "0x10"}, MALFORMED_TO),
        ("units", "alice", {"running": "maybe"}, "query parameter 'running': invalid boolean"),
        ("units", "alice", {"timezone": "Mars/Olympus"}, "query parameter 'timezone': unknown"),
        ("units", "alice", {"timezone": "../../etc/passwd"}, "query parameter 'timezone'"),
        ("units", "alice", {"field": "uuiid"}, "invalid query fields"),
        ("units", "alice", {"field": ["foo", "bar"]}, "invalid query fields"),
        ("units", "alice", YEAR_AND_A_DAY, TOO_LONG),
        ("units", "alice", BACKWARDS, AFTER),
        ("units/admin", "root", {"running": "2"}, "query parameter 'running'"),
        ("units/admin", "root", {"to": "soon"}, MALFORMED_TO),
        ("units/admin", "root", {"field": "id"}, "invalid query fields"),
        ("units/verify", "alice", {"cluster_id": "slurm-0"}, "missing data in the request"),
        ("usage/current", "alice", {"from": "-"}, MALFORMED_FROM),
        ("usage/current", "alice", YEAR_AND_A_DAY, TOO_LONG),
        ("usage/current", "alice", BACKWARDS, AFTER),
        ("usage/current", "alice", {"experimental": "perhaps"}, "query parameter 'experimental'"),
        ("usage/current", "alice", {"field": "uuid"}, "invalid query fields"),
        ("usage/current/admin", "root", YEAR_AND_A_DAY, TOO_LONG),
        ("usage/global", "alice", {"field": "avg_power"}, "invalid query fields"),
        ("usage/global/admin", "root", {"field": ""}, "invalid query fields"),
        ("stats/current/admin", "root", {"from": "abc"}, MALFORMED_FROM),
        ("stats/current/admin", "root", BACKWARDS, AFTER),
        ("users/admin", "root", {"role": "boss"}, "query parameter 'role'"),
    ],
)
async def test_bad_parameters_are_refused(
    api: Api, path: str, user: str, params: Params, error: str
) -> None:
    response = await api.get(path, user, params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert (body["status"], body["data"], body["errorType"]) == ("error", None, "bad_data")
    assert body["error"].startswith(error)


@pytest.mark.parametrize(
    ("path", "user", "params"),
    [
        ("units", "alice", {"cluster_id": "nope"}),
        ("units/admin", "root", {"cluster_id": "nope", "running": ""}),
        ("units", "alice", {"project": "nope", "running": ""}),
        ("usage/current", "alice", {"cluster_id": "nope"}),
        ("usage/global", "alice", {"cluster_id": "nope"}),
        ("projects", "alice", {"cluster_id": "nope"}),
        ("users", "alice", {"cluster_id": "nope"}),
        ("stats/global/admin", "root", {"cluster_id": "nope"}),
    ],
)
async def test_unknown_cluster_is_empty(api: Api, path: str, user: str, params: Params) -> None:
    response = await api.get(path, user, params)
    assert response.json() == {"status": "success", "data": []}


async def test_unknown_fields_are_dropped_when_one_is_valid(api: Api) -> None:
    params = {"field": ["uuid", "foo"], "uuid": "1001"}
    response = await api.get("units", "alice", params)
    assert response.json()["data"] == [{"uuid": "1001"}]


@pytest.mark.parametrize(
    ("value", "running"),
    [("", True), ("true", True), ("1", True), ("false", False), ("0", False), ("no", False)],
)
async def test_running_is_a_flag(api: Api, value: str, running: bool) -> None:
    response = await api.get("units", "alice", {"running": value, "field": "uuid"})
    uuids = {u["uuid"] for u in response.json()["data"]}
    assert ("1002" in uuids) is running  # alice's running slurm job
    assert "1001" in uuids  # ended in the last 24 hours either way


async def test_window_of_exactly_max_query_is_allowed(api: Api) -> None:
    params = {"from": str(T0 - 365 * 86400), "to": str(T0)}
    response = await api.get("units", "alice", params)
    assert response.status_code == 200


async def test_unknown_path_is_an_envelope(api: Api) -> None:
    response = await api.get("jobs", "alice")
    assert response.status_code == 404
    assert response.json()["errorType"] == "not_found"


async def test_other_methods_are_refused_in_an_envelope(api: Api) -> None:
    response = await api.get("units", "alice", method="POST")
    assert response.status_code == 405
    assert response.json()["status"] == "error"
