"""The app around the routes: OpenAPI, gzip, CORS, route prefix, health, headers, failures."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from ceems.api.app import create_app, normalise_prefix, validation_message
from ceems.api.config import DataConfig
from ceems.api.store.engine import read_only_engine, sqlite_path
from tests.api.routes.conftest import Api, make_config
from tests.api.routes.scenario import T0, Scenario, build_store

pytestmark = pytest.mark.anyio

ENDPOINTS = {
    "/health",
    "/api/v1/units",
    "/api/v1/units/admin",
    "/api/v1/units/verify",
    "/api/v1/users",
    "/api/v1/users/admin",
    "/api/v1/projects",
    "/api/v1/projects/admin",
    "/api/v1/clusters/admin",
    "/api/v1/usage/current",
    "/api/v1/usage/global",
    "/api/v1/usage/current/admin",
    "/api/v1/usage/global/admin",
    "/api/v1/stats/current/admin",
    "/api/v1/stats/global/admin",
}
ORIGIN = "https://grafana.example.org"


async def test_openapi_lists_every_endpoint_with_its_model(api: Api) -> None:
    response = await api.get("/openapi.json")
    spec = response.json()
    assert set(spec["paths"]) == ENDPOINTS
    units = spec["paths"]["/api/v1/units"]["get"]
    assert {p["name"] for p in units["parameters"]} >= {
        "cluster_id", "uuid", "project", "running", "from", "to", "timezone", "field",
    }  # fmt: skip
    ok = units["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("Envelope_UnitModel_")
    assert "403" in spec["paths"]["/api/v1/units/admin"]["get"]["responses"]
    assert "X-Grafana-User" in str(spec["components"]["securitySchemes"])


async def test_docs_page_is_served(api: Api) -> None:
    response = await api.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()


def api_routes(routes: list[BaseRoute]) -> list[APIRoute]:
    """Every APIRoute, including those of included routers (FastAPI keeps them nested)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        nested = getattr(route, "original_router", None)
        if nested is not None:
            found += api_routes(nested.routes)
    return found


def test_endpoints_are_sync_so_they_run_in_the_threadpool(api: Api) -> None:
    routes = api_routes(api.app.routes)
    assert len(routes) == len(ENDPOINTS)
    assert [r.path for r in routes if inspect.iscoroutinefunction(r.endpoint)] == []


async def test_large_responses_are_gzipped_when_asked(api: Api) -> None:
    params = {"running": "", "from": str(T0 - 30 * 86400), "to": str(T0)}
    gzipped = await api.get("units/admin", "root", params, {"Accept-Encoding": "gzip"})
    assert gzipped.headers["content-encoding"] == "gzip"
    assert len(gzipped.json()["data"]) == 8
    plain = await api.get("units/admin", "root", params, {"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers


async def test_small_responses_are_not_gzipped(api: Api) -> None:
    response = await api.get("users", "bob", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in response.headers


async def test_no_cors_headers_unless_configured(api: Api) -> None:
    response = await api.get("users", "bob", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers


@pytest.fixture
def cors_api(scenario: Scenario) -> Api:
    config = make_config(cors_origin=r"https://.*\.example\.org")
    return Api(create_app(config, scenario.engine, clock=lambda: float(T0)))


async def test_cors_preflight_allows_the_user_header(cors_api: Api) -> None:
    headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-grafana-user",
    }
    response = await cors_api.get("units", headers=headers, method="OPTIONS")
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "GET" in response.headers["access-control-allow-methods"]
    assert "x-grafana-user" in response.headers["access-control-allow-headers"].lower()


async def test_cors_answers_carry_the_origin(cors_api: Api) -> None:
    response = await cors_api.get("users", "bob", headers={"Origin": ORIGIN})
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["access-control-expose-headers"] == "Date"
    other = await cors_api.get("users", "bob", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize(("prefix", "expected"), [("", ""), ("/", ""), ("ceems/", "/ceems"),
                                                  ("/a/b", "/a/b")])  # fmt: skip
def test_route_prefix_is_normalised(prefix: str, expected: str) -> None:
    assert normalise_prefix(prefix) == expected


async def test_route_prefix_moves_every_path(scenario: Scenario) -> None:
    api = Api(create_app(make_config(), scenario.engine, route_prefix="/ceems/"))
    assert (await api.get("/ceems/api/v1/users", "alice")).status_code == 200
    assert (await api.get("/ceems/health")).status_code == 200
    assert "/ceems/api/v1/units" in (await api.get("/ceems/openapi.json")).json()["paths"]
    assert (await api.get("/api/v1/users", "alice")).status_code == 404


async def test_health_needs_no_user(api: Api) -> None:
    response = await api.get("/health")
    assert (response.status_code, response.text) == (200, "CEEMS API Server is healthy")


async def test_health_is_ko_when_the_store_is_gone(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/missing/dir/db.sqlite")
    response = await Api(create_app(make_config(), engine)).get("/health")
    assert (response.status_code, response.text) == (503, "KO")


async def test_store_failure_is_an_internal_envelope(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/empty.db")  # no tables
    response = await Api(create_app(make_config(), engine)).get("units", "alice")
    assert response.status_code == 500
    assert response.json() == {
        "status": "error",
        "data": None,
        "errorType": "internal",
        "error": "failed to query the store",
    }


async def test_user_comes_from_the_first_configured_header_present(scenario: Scenario) -> None:
    config = make_config(user_header_names=["X-Forwarded-User", "X-Grafana-User"])
    api = Api(create_app(config, scenario.engine))
    headers = {"X-Forwarded-User": "carol", "X-Grafana-User": "alice"}
    response = await api.get("users", headers=headers)
    assert {u["name"] for u in response.json()["data"]} == {"carol"}
    fallback = await api.get("users", headers={"X-Grafana-User": "bob"})
    assert {u["name"] for u in fallback.json()["data"]} == {"bob"}


def test_no_user_header_names_is_a_config_error(scenario: Scenario) -> None:
    with pytest.raises(ValueError, match="user_header_names"):
        create_app(make_config(user_header_names=[]), scenario.engine)


@pytest.mark.parametrize(
    ("errors", "message"),
    [
        ([{"loc": ("query", "from"), "msg": "bad"}], "query parameter 'from': malformed timestamp"),
        ([{"loc": ("query", "field", 0), "msg": "bad"}], "query parameter '0': bad"),
        ([{"loc": ("header", "x"), "msg": "missing"}], "header parameter 'x': missing"),
        ([], "request parameter '': invalid"),
    ],
)
def test_validation_errors_name_the_parameter(
    errors: list[dict[str, object]], message: str
) -> None:
    assert validation_message(errors) == message


async def test_app_reads_through_the_stores_read_only_engine(tmp_path: Path) -> None:
    data = DataConfig(path=str(tmp_path))
    build_store(sqlite_path(data)).engine.dispose()
    api = Api(create_app(make_config(), read_only_engine(data), clock=lambda: float(T0)))
    units = await api.get("units/admin", "root", {"running": "", "field": "uuid"})
    usage = await api.get("usage/current", "alice", {"experimental": ""})
    assert len(units.json()["data"]) == 7
    assert usage.status_code == 200 and usage.json()["data"]
