"""Fixtures: the scenario store in tmp_path and the app driven in-process through httpx."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ceems.api.app import create_app
from ceems.api.config import ApiServerConfig
from tests.api.routes.scenario import T0, Scenario, build_store

Params = Mapping[str, str | Sequence[str]]


def make_config(**web: Any) -> ApiServerConfig:
    """The tests' config: Paris time, two clusters, `web` overrides."""
    return ApiServerConfig.model_validate(
        {
            "ceems_api_server": {"data": {"time_zone": "Europe/Paris"}, "web": web},
            "clusters": [
                {"id": "slurm-0", "manager": "slurm"},
                {"id": "os-0", "manager": "openstack"},
                {"id": "k8s-0", "manager": "k8s"},
            ],
        }
    )


@dataclass
class Api:
    """Requests to one app, in-process (datasette's `ds_client` pattern)."""

    app: FastAPI
    header: str = "X-Grafana-User"

    async def get(
        self,
        path: str,
        user: str | None = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
    ) -> httpx.Response:
        """`path` relative to /api/v1 unless it starts with `/`; `user` sets the header."""
        url = path if path.startswith("/") else f"/api/v1/{path}"
        sent = dict(headers or {})
        if user is not None:
            sent[self.header] = user
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ceems") as client:
            return await client.request(method, url, params=params, headers=sent)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    """The scenario store, built once per module (tests only read it)."""
    path: Path = tmp_path_factory.mktemp("store") / "ceems_api_server.db"
    return build_store(path)


@pytest.fixture(scope="module")
def api(scenario: Scenario) -> Api:
    """The app on the scenario store, its clock at T0."""
    return Api(create_app(make_config(), scenario.engine, clock=lambda: float(T0)))
