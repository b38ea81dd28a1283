"""What the text of a TSDB request decides is kept (`Plan`), never who may send it.

The app runs in process (httpx's ASGI transport) with a scripted ownership source; the
forwarding itself is recorded instead of sent, so each test sees exactly what would reach
the backend, and how often ownership was asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from ceems.lb import app as app_module
from ceems.lb.app import LbApp, Plan, PlanCache
from ceems.lb.backends import Pools
from ceems.lb.config import LbConfig
from ceems.lb.forward import Forwarded
from ceems.lb.params import Params

FORM = "application/x-www-form-urlencoded"


class Owners:
    """Ownership as a table; counts the questions."""

    def __init__(self) -> None:
        self.admins = {"root"}
        self.units = {("alice", "c"): {"u1", "u2"}, ("bob", "c"): {"u3"}, ("alice", "d"): {"u9"}}
        self.asked = 0

    async def is_admin(self, user: str) -> bool:
        return user in self.admins

    async def owns(self, user: str, cluster_id: str, uuids: frozenset[str]) -> bool:
        self.asked += 1
        return bool(uuids) and uuids <= self.units.get((user, cluster_id), set())

    async def close(self) -> None:
        pass


@pytest.fixture
def lb(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LbApp, Owners, list[dict[str, Any]]]]:
    config = LbConfig.model_validate({
        "ceems_lb": {"backends": [
            {"id": "c", "tsdb": [{"web": {"url": "http://c:9090"}}]},
            {"id": "d", "tsdb": [{"web": {"url": "http://d:9090"}}]},
        ]},
        "ceems_api_server": {"web": {"url": "http://api:9020"}},
    })  # fmt: skip
    section = config.ceems_lb
    pools = Pools.build(
        "tsdb", {b.id: b.tsdb for b in section.backends}, section.strategy,
        section.health_check_interval,
    )  # fmt: skip
    owners = Owners()
    app = LbApp(config, owners, {"tsdb": pools})
    sent: list[dict[str, Any]] = []

    async def forward(pool: Any, method: str, path: str, query_string: bytes, headers: Any,
                      body: bytes, oldest_s: float | None = None) -> Forwarded:  # fmt: skip
        sent.append({"cluster": pool.cluster_id, "query": query_string, "body": body,
                     "oldest": oldest_s})  # fmt: skip
        return Forwarded(200, [(b"content-type", b"application/json")], b"{}")

    monkeypatch.setattr(app_module, "forward", forward)
    yield app, owners, sent
    asyncio.run(app.close())


def ask(app: LbApp, user: str, form: dict[str, str] | str, path: str = "/api/v1/query") -> int:
    """POST `form` (a mapping to encode, or the body) to `path` as `user` of cluster c."""

    async def send() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://lb") as client:
            headers = {"X-Grafana-User": user, "X-Ceems-Cluster-Id": "c", "Content-Type": FORM}
            body = form if isinstance(form, str) else urlencode(form)
            response = await client.post(path, content=body, headers=headers)
            return response.status_code

    return asyncio.run(send())


def test_a_plan_is_shared_but_ownership_is_checked_for_every_request(
    lb: tuple[LbApp, Owners, list[dict[str, Any]]],
) -> None:
    app, owners, sent = lb
    form = {"query": 'up{uuid="u1"}', "time": "1767225900"}
    assert ask(app, "alice", form) == 200
    assert ask(app, "bob", form) == 403  # the same text: bob does not own u1
    assert ask(app, "bob", form) == 403
    assert ask(app, "alice", form) == 200
    assert len(app.plans) == 1 and owners.asked == 4
    # what was forwarded is the same, planned or not
    assert sent[0] == sent[1] == {
        "cluster": "c", "query": b"", "body": urlencode(form).encode(), "oldest": 1767225900.0,
    }  # fmt: skip


def test_a_refused_query_is_refused_every_time(
    lb: tuple[LbApp, Owners, list[dict[str, Any]]],
) -> None:
    app, owners, sent = lb
    form = {"query": "up", "time": "1767225900"}  # pinned to no unit
    for _ in range(3):
        assert ask(app, "alice", form) == 403
    assert not sent and owners.asked == 0
    (plan,) = (entry[0] for entry in app.plans._plans.values())
    assert plan.decision is None  # only an allowed decision is kept


def test_without_start_or_time_the_oldest_sample_is_now(
    lb: tuple[LbApp, Owners, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _, sent = lb
    form = {"query": 'up{uuid="u2"}'}
    for now in (1000.0, 2000.0):  # the plan keeps no time of its own
        monkeypatch.setattr(app_module.time, "time", lambda now=now: now)
        assert ask(app, "alice", form) == 200
        assert sent[-1]["oldest"] == now


def test_a_planned_cluster_matcher_still_routes_and_is_still_checked(
    lb: tuple[LbApp, Owners, list[dict[str, Any]]],
) -> None:
    app, _, sent = lb
    form = {"query": 'up{uuid="u9",ceems_id="d"}', "time": "5"}
    for _ in range(2):
        assert ask(app, "alice", form) == 200  # alice owns u9 in d, not in c
        assert sent[-1]["cluster"] == "d"
    assert ask(app, "bob", form) == 403
    assert ask(app, "root", form) == 200  # admins skip the check, not the routing
    assert sent[-1]["cluster"] == "d"


def test_unparsable_parameters_are_never_planned(
    lb: tuple[LbApp, Owners, list[dict[str, Any]]],
) -> None:
    app, _, sent = lb
    for _ in range(2):  # `;` separators are refused by the parser
        assert ask(app, "alice", "query=up%7Buuid%3D%22u1%22%7D;time=5") == 400
    assert len(app.plans) == 0 and not sent


def plan() -> Plan:
    return Plan(Params([], None), frozenset(), b"", b"", None)


def test_the_plan_cache_drops_the_oldest_past_its_budget() -> None:
    cache = PlanCache(budget_bytes=3000)
    keys = [("POST", "/api/v1/query", b"", FORM, b"q=%d" % i) for i in range(6)]
    for key in keys:
        cache.add(key, plan())
    assert cache.used <= 3000 and len(cache) == 5
    assert cache.get(keys[0]) is None and cache.get(keys[-1]) is not None
    again = plan()
    cache.add(keys[-1], again)  # replacing a plan does not count it twice
    assert cache.get(keys[-1]) is again and len(cache) == 5 and cache.used <= 3000
    huge = ("POST", "/api/v1/query", b"", FORM, b"q" * 2000)
    cache.add(huge, plan())  # larger than the whole budget: not kept
    assert cache.get(huge) is None and len(cache) == 5
