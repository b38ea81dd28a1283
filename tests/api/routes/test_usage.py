"""Usage (current, daily, global) and stats: what is summed, weighted and counted."""

from __future__ import annotations

from typing import Any

import pytest

from ceems.api.aggregate import UsageRow, aggregate_usage
from ceems.api.models import METRIC_FIELDS
from tests.api.routes.conftest import Api
from tests.api.routes.scenario import T0

MONTH = {"from": str(T0 - 30 * 86400), "to": str(T0)}
LAST_MINUTE = {"from": str(T0 - 60), "to": str(T0)}


def row(
    username: str = "u", project: str = "p", cluster_id: str = "c", **metrics: Any
) -> dict[str, Any]:
    """A unit row as the store returns it; metric maps not given are empty."""
    base: dict[str, Any] = {name: {} for name in METRIC_FIELDS}
    return {
        **base,
        "cluster_id": cluster_id,
        "resource_manager": "slurm",
        "username": username,
        "project": project,
        "groupname": metrics.pop("groupname", ""),
        "total_time_seconds": metrics.pop("times", {}),
        **metrics,
    }


def test_averages_are_weighted_by_allocated_time() -> None:
    (usage,) = aggregate_usage(
        [
            row(avg_cpu_usage={"global": 10.0}, times={"alloc_cputime": 100}),
            row(avg_cpu_usage={"global": 40.0}, times={"alloc_cputime": 300}),
        ]
    )
    assert usage.metrics["avg_cpu_usage"] == {"global": 32.5}
    assert usage.total_time_seconds == {"alloc_cputime": 400}
    assert usage.num_units == 2


def test_averages_without_allocated_time_are_plain_means() -> None:
    (usage,) = aggregate_usage(
        [row(avg_gpu_usage={"global": 10.0}), row(avg_gpu_usage={"global": 30.0})]
    )
    assert usage.metrics["avg_gpu_usage"] == {"global": 20.0}


def test_totals_are_summed_per_key_and_missing_keys_kept() -> None:
    (usage,) = aggregate_usage(
        [
            row(total_cpu_emissions_gms={"rte_total": 1.0, "owid_total": 2.0}),
            row(total_cpu_emissions_gms={"rte_total": 3.0}),
        ]
    )
    assert usage.metrics["total_cpu_emissions_gms"] == {"rte_total": 4.0, "owid_total": 2.0}


def test_groups_are_per_cluster_user_and_project_in_order() -> None:
    rows = [row("b", "p", "c2"), row("a", "q", "c1"), row("a", "p", "c1"), row("a", "p", "c1")]
    keys = [(u.cluster_id, u.username, u.project, u.num_units) for u in aggregate_usage(rows)]
    assert keys == [("c1", "a", "p", 2), ("c1", "a", "q", 1), ("c2", "b", "p", 1)]


def test_pre_aggregated_rows_add_their_unit_counts() -> None:
    (usage,) = aggregate_usage([{**row(), "num_units": 4}, {**row(), "num_units": 3}])
    assert usage == UsageRow("c", "slurm", "p", "u", num_units=7)


def rows_by_key(body: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(r["cluster_id"], r["username"], r["project"]): r for r in body["data"]}


@pytest.mark.anyio
async def test_current_usage_sums_the_units_updated_in_the_window(api: Api) -> None:
    response = await api.get("usage/current", "alice", MONTH)
    rows = rows_by_key(response.json())
    p1 = rows[("slurm-0", "alice", "p1")]  # units 1001 and 1005
    assert p1["num_units"] == 2
    assert p1["total_cpu_energy_usage_kwh"] == {"total": 3}
    assert p1["avg_cpu_usage"] == {"global": 50.25}
    assert p1["groupname"] == "grp-alice"
    assert rows[("slurm-0", "alice", "p2")]["avg_cpu_usage"] == {"global": 100.5}
    assert rows[("slurm-0", "bob", "p2")]["num_units"] == 2  # ignored units count, as in CEEMS


@pytest.mark.anyio
async def test_current_usage_window_is_on_the_last_update(api: Api) -> None:
    response = await api.get("usage/current", "alice", LAST_MINUTE)
    assert set(rows_by_key(response.json())) == {
        ("os-0", "alice", "p1"),  # vm-a, updated a minute ago
        ("slurm-0", "alice", "p2"),  # 1002
    }


@pytest.mark.anyio
async def test_experimental_usage_sums_whole_days(api: Api) -> None:
    response = await api.get("usage/current", "alice", {**LAST_MINUTE, "experimental": ""})
    rows = rows_by_key(response.json())
    assert set(rows) == {
        ("os-0", "alice", "p1"),
        ("slurm-0", "alice", "p1"),
        ("slurm-0", "alice", "p2"),
        ("slurm-0", "bob", "p2"),
    }
    assert rows[("slurm-0", "bob", "p2")]["num_units"] == 2


@pytest.mark.anyio
async def test_global_usage_selected_fields_leave_base_keys_empty(api: Api) -> None:
    params = {"field": ["username", "project", "num_units"], "cluster_id": "slurm-0"}
    response = await api.get("usage/global", "alice", params)
    assert response.json()["data"] == [
        {"cluster_id": "", "resource_manager": "", "num_units": 2, "project": "p1",
         "groupname": "", "username": "alice"},
        {"cluster_id": "", "resource_manager": "", "num_units": 1, "project": "p2",
         "groupname": "", "username": "alice"},
        {"cluster_id": "", "resource_manager": "", "num_units": 2, "project": "p2",
         "groupname": "", "username": "bob"},
    ]  # fmt: skip


@pytest.mark.anyio
async def test_usage_project_filter(api: Api) -> None:
    response = await api.get("usage/global/admin", "root", {"project": "p3"})
    assert set(rows_by_key(response.json())) == {
        ("os-0", "carol", "p3"),
        ("slurm-0", "carol", "p3"),
    }


STAT_KEYS = ("num_units", "num_inactive_units", "num_active_units", "num_projects", "num_users")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        ("stats/current/admin", {}, {"os-0": (3, 2, 1, 3, 3), "slurm-0": (5, 4, 1, 3, 3)}),
        ("stats/global/admin", {}, {"os-0": (3, 2, 1, 3, 3), "slurm-0": (6, 5, 1, 3, 3)}),
        ("stats/global/admin", {"cluster_id": "os-0"}, {"os-0": (3, 2, 1, 3, 3)}),
        # A window in the past still counts what runs now, as CEEMS does.
        ("stats/current/admin", {"from": str(T0 - 10 * 86400 - 60), "to": str(T0 - 9 * 86400)},
         {"os-0": (1, 0, 1, 1, 1), "slurm-0": (2, 1, 1, 2, 1)}),
    ],
)  # fmt: skip
async def test_stats_count_units_projects_and_users(
    api: Api, path: str, params: dict[str, str], expected: dict[str, tuple[int, ...]]
) -> None:
    response = await api.get(path, "root", params)
    got = {s["cluster_id"]: tuple(s[k] for k in STAT_KEYS) for s in response.json()["data"]}
    assert got == expected
