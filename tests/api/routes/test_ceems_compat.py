"""Our answers against CEEMS' own expected API outputs (its e2e fixtures, read in place).

Each CEEMS output file answers one request of its `scripts/e2e-test.sh`; we ask the
equivalent of our scenario and compare what must match: key order of every object,
time and number formats, and whole bodies for errors. The files live in the shared
checkout of CEEMS' test data (never copied here); the tests skip when it is absent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ceems.api.app import create_app
from tests.api.routes.conftest import Api, Params, make_config
from tests.api.routes.scenario import T0, build_store
from tests.conftest import ROOT

pytestmark = pytest.mark.anyio

OUTPUTS = (
    ROOT.parent / "shared" / "ceems-testdata" / "04adf47" / "pkg" / "api" / "testdata" / "output"
)
TIME = re.compile(r"^(N/A|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4})$")
# Values inside metric maps: CEEMS' JSONFloat (integer, or exactly 8 decimals).
METRIC_VALUE = re.compile(
    r'"(?:global|total|\w+_total|bytes|requests|packets|walltime|alloc_\w+)":([^,}]+)'
)
JSONFLOAT = re.compile(r"^-?\d+(\.\d{8})?$")
MONTH = {"from": str(T0 - 30 * 86400), "to": str(T0)}


def ceems(name: str) -> str:
    """The body CEEMS answered in e2e scenario `name`."""
    path = OUTPUTS / f"e2e-test-api-{name}.txt"
    if not path.exists():
        pytest.skip(f"CEEMS test data not found at {OUTPUTS}")
    return path.read_text()


def keys(body: str) -> list[list[str]]:
    """Key order of every object in `data`."""
    return [list(item) for item in json.loads(body)["data"]]


# (CEEMS scenario, our user, our request): same shape of answer expected.
SHAPES: list[tuple[str, str, str, Params]] = [
    ("server-uuid-query", "alice", "units", {"uuid": "1001"}),
    ("server-admin-query", "root", "units/admin", {"user": "alice", **MONTH}),
    ("server-admin-query-all-selected-fields", "root", "units/admin",
     {"field": ["uuid", "started_at", "ended_at", "foo"], "running": "", **MONTH}),
    ("server-running-query", "alice", "units",
     {"running": "", "field": ["uuid", "state", "started_at", "allocation", "tags"],
      "timezone": "Europe/Athens"}),
    ("server-current-usage-experimental-query", "alice", "usage/current", MONTH),
    ("server-current-usage-admin-experimental-query", "root", "usage/current/admin",
     {**MONTH, "experimental": ""}),
    ("server-global-usage-query", "alice", "usage/global",
     {"field": ["username", "project", "num_units"]}),
    ("server-global-usage-admin-query", "root", "usage/global/admin",
     {"field": ["username", "project", "num_units"]}),
    ("server-user-query", "alice", "users", {}),
    ("server-user-admin-query", "root", "users/admin", {"user": "alice"}),
    ("server-project-query", "alice", "projects", {"project": "p1", "cluster_id": "slurm-0"}),
    ("server-project-admin-query", "root", "projects/admin",
     {"project": "p3", "cluster_id": "os-0"}),
    ("server-current-stats-admin-query", "root", "stats/current/admin", {}),
    ("server-global-stats-admin-query", "root", "stats/global/admin", {}),
    ("server-cluster-admin-query", "root", "clusters/admin", {}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "user", "path", "params"), SHAPES)
async def test_objects_have_ceems_keys_in_ceems_order(
    api: Api, name: str, user: str, path: str, params: Params
) -> None:
    expected = ceems(name)
    response = await api.get(path, user, params)
    theirs = keys(expected)
    # `provenance` is ours and comes last; CEEMS clients ignore it.
    ours = [[k for k in item if k != "provenance"] for item in keys(response.text)]
    assert ours and theirs
    # Units differ in which maps they hold (CEEMS' slurm-1 has no IO stats): compare each
    # of ours with the CEEMS object holding the most keys, in order.
    widest = max(theirs, key=len)
    for item in ours:
        assert item == [k for k in widest if k in item]
        assert set(item) <= set(widest)
    assert max(ours, key=len) == widest


@pytest.mark.parametrize(("name", "user", "path", "params"), SHAPES)
async def test_times_and_metric_values_are_formatted_as_ceems(
    api: Api, name: str, user: str, path: str, params: Params
) -> None:
    expected = ceems(name)
    response = await api.get(path, user, params)
    for body in (expected, response.text):
        for item in json.loads(body)["data"]:
            for field in ("created_at", "started_at", "ended_at"):
                if field in item:
                    assert TIME.match(item[field]), (field, item[field])
        for value in METRIC_VALUE.findall(body):
            assert JSONFLOAT.match(value), value


# (CEEMS scenario, our user, our request): byte-for-byte the same body.
BODIES: list[tuple[str, str, str, Params]] = [
    ("server-admin--denied-query", "alice", "units/admin", {}),
    (
        "server-current-usage-admin-denied-query",
        "alice",
        "usage/global/admin",
        {"cluster_id": "slurm-0", "user": "bob"},
    ),
    (
        "server-units-invalid-query",
        "bob",
        "units",
        {"cluster_id": "slurm-0", "from": "1676934000", "to": "1677538800", "field": "uuiid"},
    ),
    (
        "verify-pass-query",
        "alice",
        "units/verify",
        {"cluster_id": "slurm-0", "uuid": ["1001", "1003"]},
    ),
    (
        "verify-fail-query",
        "bob",
        "units/verify",
        {"cluster_id": "slurm-0", "uuid": ["1003", "1001"]},
    ),
    ("server-project-empty-query", "alice", "projects", {"project": "p3"}),
]


@pytest.mark.parametrize(("name", "user", "path", "params"), BODIES)
async def test_bodies_are_ceems_byte_for_byte(
    api: Api, name: str, user: str, path: str, params: Params
) -> None:
    response = await api.get(path, user, params)
    assert response.text == ceems(name)


def preflight_headers(text: str) -> dict[str, Any]:
    """Header names and values of CEEMS' recorded `curl -I` answer."""
    lines = [line.split(":", 1) for line in text.splitlines()[1:] if ":" in line]
    return {name.strip().lower(): value.strip() for name, value in lines}


async def test_cors_preflight_answers_what_ceems_answers(tmp_path: Path) -> None:
    theirs = preflight_headers(ceems("preflight-query"))
    scenario = build_store(tmp_path / "db.sqlite")
    api = Api(create_app(make_config(cors_origin="https://reqbin.com"), scenario.engine))
    headers = {
        "Origin": "https://reqbin.com",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-grafana-user",
    }
    response = await api.get("units", headers=headers, method="OPTIONS")
    assert response.status_code == 200
    ours = {k.lower(): v for k, v in response.headers.items()}
    assert ours["access-control-allow-origin"] == theirs["access-control-allow-origin"]
    for name in ("access-control-allow-headers", "access-control-allow-methods"):
        wanted = {v.strip().lower() for v in theirs[name].split(",")}
        assert wanted <= {v.strip().lower() for v in ours[name].split(",")}, name
