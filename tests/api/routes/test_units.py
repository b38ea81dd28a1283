"""`/units`: the window, `running`, `uuid`, `field`, `timezone`, and the exact JSON of a unit."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from ceems.api.app import create_app
from ceems.api.rendercache import UnitTexts
from tests.api.routes.conftest import Api, make_config
from tests.api.routes.scenario import T0, Scenario

pytestmark = pytest.mark.anyio

# Unit 1001 as CEEMS would write it, in the config's zone (Europe/Paris), then `provenance`.
UNIT_1001 = (
    '{"cluster_id":"slurm-0","resource_manager":"slurm","uuid":"1001","name":"job-1001",'
    '"project":"p1","groupname":"grp-alice","username":"alice",'
    '"created_at":"2023-11-14T22:13:15+0100","started_at":"2023-11-14T22:13:20+0100",'
    '"ended_at":"2023-11-14T23:03:20+0100","created_at_ts":1699996395000,'
    '"started_at_ts":1699996400000,"ended_at_ts":1699999400000,"elapsed":"00:50:00",'
    '"state":"COMPLETED","allocation":{"cpus":8,"gpus":2,"mem":34359738368,"nodes":1},'
    '"total_time_seconds":{"alloc_cpumemtime":98304000,"alloc_cputime":24000,'
    '"alloc_gpumemtime":6000,"alloc_gputime":6000,"walltime":3000},'
    '"avg_cpu_usage":{"global":50.25000000},"avg_cpu_mem_usage":{"global":20},'
    '"total_cpu_energy_usage_kwh":{"total":1.50000000},'
    '"total_cpu_emissions_gms":{"emaps_total":42.25000000,"rte_total":30},'
    '"avg_gpu_usage":{"global":75.12345679},"avg_gpu_mem_usage":{"global":0},'
    '"total_gpu_energy_usage_kwh":{"total":2},'
    '"total_gpu_emissions_gms":{"emaps_total":56.50000000,"rte_total":40},'
    '"total_io_write_stats":{"bytes":2972084252,"requests":29720842520},'
    '"total_io_read_stats":{"bytes":1000,"requests":10},'
    '"total_ingress_stats":{"bytes":0,"packets":0},'
    '"total_egress_stats":{"bytes":100,"packets":1},'
    '"tags":{"partition":"gpu","qos":"normal","uid":1000,"workdir":"/home/x\\u0026\\u003cy\\u003e"},'
    '"provenance":{"attribution":"cgroup","factor":"owid","power":"rapl","pue":"1.0"}}'
)


async def test_unit_json_is_ceems_byte_for_byte(api: Api) -> None:
    response = await api.get("units", "alice", {"uuid": "1001"})
    assert response.text == '{"status":"success","data":[' + UNIT_1001 + "]}\n"
    assert response.headers["content-type"] == "application/json"


async def test_the_envelope_around_none_one_and_several_units(api: Api) -> None:
    none = await api.get("units", "alice", {"uuid": "no-such-unit"})
    assert none.text == '{"status":"success","data":[]}\n'
    several = await api.get("units", "alice", {"uuid": ["1001", "1002"], "field": "uuid"})
    assert several.text == '{"status":"success","data":[{"uuid":"1001"},{"uuid":"1002"}]}\n'
    # again, now from the kept texts: the same bytes
    again = await api.get("units", "alice", {"uuid": ["1001", "1002"], "field": "uuid"})
    assert again.text == several.text


async def test_long_answers_are_gzipped_for_clients_that_ask(api: Api) -> None:
    params = {"uuid": "1001"}
    for _ in range(2):  # made, then kept
        packed = await api.get("units", "alice", params, {"Accept-Encoding": "gzip"})
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.headers["vary"] == "Accept-Encoding"
        assert int(packed.headers["content-length"]) < len(packed.content)  # inflated by httpx
        assert packed.text == '{"status":"success","data":[' + UNIT_1001 + "]}\n"
        plain = await api.get("units", "alice", params, {"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.text == packed.text
    gzip = {"Accept-Encoding": "gzip"}
    short = await api.get("units", "alice", {**params, "field": "uuid"}, gzip)
    assert "content-encoding" not in short.headers  # under GZIP_MINIMUM_BYTES


async def test_running_unit_has_no_end_and_elapsed_until_now(api: Api) -> None:
    response = await api.get("units", "alice", {"uuid": "vm-a"})
    (unit,) = response.json()["data"]
    assert unit["ended_at"] == "N/A"
    assert "ended_at_ts" not in unit  # 0 is left out, as Go's omitempty does
    assert unit["elapsed"] == "2-01:01:01"


@pytest.mark.parametrize(
    ("timezone", "started_at"),
    [(None, "2023-11-14T22:13:20+0100"), ("Europe/Athens", "2023-11-14T23:13:20+0200"),
     ("UTC", "2023-11-14T21:13:20+0000"), ("America/New_York", "2023-11-14T16:13:20-0500")],
)  # fmt: skip
async def test_time_strings_follow_the_requested_zone(
    api: Api, timezone: str | None, started_at: str
) -> None:
    params = {"uuid": "1001", "field": ["started_at", "started_at_ts"]}
    if timezone:
        params["timezone"] = timezone
    response = await api.get("units", "alice", params)
    assert response.json()["data"] == [
        {"uuid": "", "started_at": started_at, "started_at_ts": 1699996400000}
    ]


async def test_selected_fields_come_in_ceems_order_with_uuid(api: Api) -> None:
    params = {"uuid": "1002", "field": ["tags", "state", "uuid", "started_at"]}
    response = await api.get("units", "alice", params)
    assert list(response.json()["data"][0]) == ["uuid", "started_at", "state", "tags"]


async def test_window_holds_units_that_ended_in_it(api: Api) -> None:
    # 1001 ended at T0-600, 1005 ten days ago, 1002 runs: [T0-900, T0] holds only 1001.
    params = {"from": str(T0 - 900), "to": str(T0), "field": "uuid"}
    response = await api.get("units", "alice", params)
    assert response.json()["data"] == [{"uuid": "1001"}]


async def test_window_is_inclusive_at_both_ends(api: Api) -> None:
    params = {"from": str(T0 - 600), "to": str(T0 - 600), "field": "uuid"}
    response = await api.get("units", "alice", params)
    assert response.json()["data"] == [{"uuid": "1001"}]


async def test_missing_from_means_a_day_before_to(api: Api) -> None:
    params = {"to": str(T0 - 10 * 86400 + 3600), "field": "uuid"}
    response = await api.get("units", "alice", params)
    assert response.json()["data"] == [{"uuid": "1005"}]


async def test_missing_to_means_a_day_after_from(api: Api) -> None:
    params = {"from": str(T0 - 11 * 86400), "field": "uuid"}
    response = await api.get("units", "alice", params)
    assert response.json()["data"] == [{"uuid": "1005"}]


async def test_a_window_from_the_epoch_does_not_take_running_units(api: Api) -> None:
    response = await api.get("units/admin", "root", {"from": "0", "field": "uuid"})
    assert response.json()["data"] == []


async def test_uuid_lookup_ignores_the_window(api: Api) -> None:
    response = await api.get("units", "alice", {"uuid": "1005", "field": "uuid"})
    assert response.json()["data"] == [{"uuid": "1005"}]


async def test_ignored_units_are_never_listed(api: Api) -> None:
    response = await api.get("units/admin", "root", {"uuid": "1006"})
    assert response.json()["data"] == []


async def test_units_are_sorted_by_cluster_and_uuid(api: Api) -> None:
    params = {"running": "", "field": ["cluster_id", "uuid"]}
    response = await api.get("units/admin", "root", params)
    keys = [(u["cluster_id"], u["uuid"]) for u in response.json()["data"]]
    assert keys == sorted(keys)
    assert len(keys) == 7


async def test_the_app_uses_the_cache_it_is_given(scenario: Scenario) -> None:
    registry = CollectorRegistry()
    off = UnitTexts(0, registry)  # empty, and so falsy: it must still be the one used
    api = Api(create_app(make_config(), scenario.engine, clock=lambda: float(T0), unit_texts=off))
    for _ in range(2):
        assert (await api.get("units", "alice", {"uuid": "1001"})).status_code == 200
    assert registry.get_sample_value("ceems_api_server_units_cache_misses_total") == 2
    assert len(off) == 0
