"""ceems_api_server's own layer: flag overrides, basic auth and the request cap."""

from __future__ import annotations

import base64
import gc
import threading

import bcrypt
import httpx
import pytest
import sqlalchemy as sa

from ceems.api.app import create_app
from ceems.api.cli import Guard, apply_flags, build_parser, freeze_startup_objects
from ceems.api.config import ApiServerConfig
from ceems.common.config import ConfigError
from ceems.common.webconfig import BasicAuth

pytestmark = pytest.mark.anyio


def guarded(
    slots: threading.BoundedSemaphore | None = None, users: dict[str, str] | None = None
) -> Guard:
    app = create_app(ApiServerConfig(), sa.create_engine("sqlite://"))
    return Guard(app, BasicAuth(users or {}), slots)


async def get(app: Guard, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return await c.get(path, headers=headers)


async def test_basic_auth_protects_every_path() -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    app = guarded(users={"grafana": hashed})
    assert (await get(app, "/health")).status_code == 401
    token = base64.b64encode(b"grafana:pw").decode()
    assert (await get(app, "/health", authorization=f"Basic {token}")).status_code == 200


async def test_requests_over_the_cap_get_503() -> None:
    slots = threading.BoundedSemaphore(1)
    app = guarded(slots=slots)
    slots.acquire()  # one request in flight
    try:
        busy = await get(app, "/health")
        assert busy.status_code == 503
    finally:
        slots.release()
    assert (await get(app, "/health")).status_code == 200


def test_flags_override_the_config() -> None:
    options = build_parser().parse_args(["--web.cors.origin", "https://grafana.example.org",
                                         "--query.max-period", "90d"])  # fmt: skip
    config = apply_flags(ApiServerConfig(), options)
    assert config.ceems_api_server.web.cors_origin == "https://grafana.example.org"
    assert config.ceems_api_server.web.max_query.days == 90
    with pytest.raises(ConfigError, match=r"--query\.max-period"):
        apply_flags(ApiServerConfig(), build_parser().parse_args(["--query.max-period", "ever"]))


def test_units_cache_size_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args([]).unit_texts == 20_000
    assert build_parser().parse_args(["--web.units-cache-size", "0"]).unit_texts == 0
    for bad in ("-1", "many"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--web.units-cache-size", bad])
        assert "--web.units-cache-size" in capsys.readouterr().err


def test_startup_objects_are_kept_out_of_collections() -> None:
    app = create_app(ApiServerConfig(), sa.create_engine("sqlite://"))
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        assert not any(obj is app for obj in gc.get_objects())  # frozen objects are not listed
    finally:
        gc.unfreeze()
