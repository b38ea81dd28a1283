"""The TSDB updater against a real Prometheus holding deterministic unit series."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from ceems.api.config import UpdaterConfig
from ceems.api.models import MetricMap, Unit
from ceems.api.updaters.protocol import UpdaterError
from ceems.api.updaters.queries import DEFAULT_QUERIES
from ceems.api.updaters.tsdb import PROVENANCE_FAMILIES, RANGE_BUCKETS, TsdbUpdater
from ceems.common.httpconfig import HttpClientConfig
from ceems.tsdb.client import TsdbClient
from tests.api.updaters.scenario import (
    PROVIDERS,
    WINDOW,
    WINDOW_END_S,
    WINDOW_START_S,
    UnitSpec,
    all_series,
    at,
    make_specs,
)
from tests.conftest import PrometheusService, free_port
from tests.tsdb.backfill import SCRAPE_S, LoadedPrometheus, start_loaded

pytestmark = pytest.mark.services

SPECS = make_specs(40)
# Prometheus 2.42 has no per-query lookback_delta (2.43+, which the updater sends as CEEMS
# does): the flag stands in for it, and for the staleness markers real scrapes and rule
# evaluations write when a unit's series end, so an ended unit's last sample is not
# repeated for the default 5 minutes.
LOOKBACK = f"--query.lookback-delta={SCRAPE_S}s"
# one query per sub-key, plus one provenance query each for CPU and GPU energy
N_QUERIES = sum(len(subs) for subs in DEFAULT_QUERIES.values()) + len(PROVENANCE_FAMILIES)


class CountingTransport(httpx.BaseTransport):
    """The real transport, recording each request."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)

    def queries(self) -> int:
        """Instant queries sent so far."""
        return sum(r.url.path == "/api/v1/query" for r in self.requests)


@pytest.fixture
def prometheus(
    prometheus_service: PrometheusService, promtool: str, monkeypatch: pytest.MonkeyPatch
) -> LoadedPrometheus:
    """Prometheus with the series of all SPECS."""
    return start_loaded(prometheus_service, promtool, all_series(SPECS), monkeypatch, args=LOOKBACK)


def make_updater(
    url: str, transport: httpx.BaseTransport | None = None, **extra: object
) -> TsdbUpdater:
    config = UpdaterConfig(
        id="tsdb-0", updater="tsdb", web=HttpClientConfig(url=url), extra_config=extra
    )
    return TsdbUpdater(config, client=TsdbClient(config.web, transport=transport))


def expected_maps(spec: UnitSpec) -> dict[str, tuple[MetricMap, MetricMap]]:
    """metric -> (expected values, tolerances), computed from the unit's constants."""
    seconds = spec.seconds_in_window()
    # Tolerance: strictly less than one scrape interval's worth. A half-open stretch of L
    # seconds holds L / 15 samples rounded up or down; increase() extrapolates at most
    # half an interval at each end. Counting a boundary sample twice (once in this window,
    # once in the previous) would be off by a full interval and fail.
    one = SCRAPE_S
    maps: dict[str, tuple[MetricMap, MetricMap]] = {
        "avg_cpu_usage": ({"global": spec.cpu_ratio}, {"global": 1e-12}),
        "avg_cpu_mem_usage": ({"global": spec.mem_ratio}, {"global": 1e-12}),
        "total_cpu_energy_usage_kwh": (
            {"total": spec.host_watts * seconds / 3.6e6},
            {"total": spec.host_watts * one / 3.6e6},
        ),
        "total_cpu_emissions_gms": (
            {f"{p}_total": spec.host_emissions_g_s(p) * seconds for p in PROVIDERS},
            {f"{p}_total": spec.host_emissions_g_s(p) * one for p in PROVIDERS},
        ),
        "total_io_write_stats": (
            {"bytes_total": spec.write_bytes_s * seconds},
            {"bytes_total": spec.write_bytes_s * one},
        ),
        "total_io_read_stats": ({}, {}),  # no such series: empty maps
        "total_ingress_stats": ({}, {}),
        "total_egress_stats": ({}, {}),
        "avg_gpu_usage": ({}, {}),
        "avg_gpu_mem_usage": ({}, {}),
        "total_gpu_energy_usage_kwh": ({}, {}),
        "total_gpu_emissions_gms": ({}, {}),
    }
    if spec.gpu:
        maps["avg_gpu_usage"] = ({"global": sum(spec.gpu_ratios) / 2}, {"global": 1e-12})
        maps["avg_gpu_mem_usage"] = ({"global": spec.gpu_mem_ratio}, {"global": 1e-12})
        maps["total_gpu_energy_usage_kwh"] = (
            {"total": spec.gpu_watts * seconds / 3.6e6},
            {"total": spec.gpu_watts * one / 3.6e6},
        )
        maps["total_gpu_emissions_gms"] = (
            {f"{p}_total": spec.gpu_emissions_g_s(p) * seconds for p in PROVIDERS},
            {f"{p}_total": spec.gpu_emissions_g_s(p) * one for p in PROVIDERS},
        )
    return maps


def assert_unit_matches(unit: Unit, spec: UnitSpec) -> None:
    for metric, (want, tolerance) in expected_maps(spec).items():
        got = unit.metrics[metric]
        assert set(got) == set(want), (spec.uuid, metric, got)
        for key, value in want.items():
            assert abs(got[key] - value) < tolerance[key], (spec.uuid, metric, key, got[key])


def test_update_fills_every_unit_with_its_window_values(prometheus: LoadedPrometheus) -> None:
    specs = SPECS[:20]
    updater = make_updater(prometheus.url)
    updated = updater.update(*WINDOW, [spec.unit() for spec in specs])
    assert [u.uuid for u in updated] == [s.uuid for s in specs]
    for unit, spec in zip(updated, specs, strict=True):
        assert_unit_matches(unit, spec)
    assert not any(u.ignore for u in updated)


def test_units_without_series_get_empty_maps(prometheus: LoadedPrometheus) -> None:
    silent = Unit("slurm-0", "slurm", "silent-1", started_at_ts=WINDOW_START_S * 1000)
    pending = Unit("slurm-0", "slurm", "pending-1")  # not started: not even queried
    updated = make_updater(prometheus.url).update(*WINDOW, [silent, pending])
    for unit in updated:
        assert dict(unit.metrics) == {metric: {} for metric in DEFAULT_QUERIES}


def test_metrics_of_other_updaters_are_kept(prometheus: LoadedPrometheus) -> None:
    spec = SPECS[0]
    earlier = replace(spec.unit(), metrics={"total_io_read_stats": {"bytes_total": 5.0}})
    queries = {"avg_cpu_usage": DEFAULT_QUERIES["avg_cpu_usage"]}
    (unit,) = make_updater(prometheus.url, queries=queries).update(*WINDOW, [earlier])
    assert dict(unit.metrics) == {
        "total_io_read_stats": {"bytes_total": 5.0},
        "avg_cpu_usage": {"global": pytest.approx(spec.cpu_ratio)},
    }


def test_queries_per_update_do_not_grow_with_units(prometheus: LoadedPrometheus) -> None:
    counts = {}
    for count in (5, 20, 40):
        transport = CountingTransport()
        updater = make_updater(prometheus.url, transport)
        updated = updater.update(*WINDOW, [spec.unit() for spec in SPECS[:count]])
        counts[count] = transport.queries()
        for unit, spec in zip(updated, SPECS, strict=False):
            assert_unit_matches(unit, spec)
    # one query per sub-key and range bucket in use: units 20-39 repeat the timings of
    # units 0-19, so doubling the units adds no bucket and no query
    assert counts[20] == counts[40]
    assert all(c % N_QUERIES == 0 and c <= N_QUERIES * RANGE_BUCKETS for c in counts.values())


def test_query_batch_size_caps_units_per_query(prometheus: LoadedPrometheus) -> None:
    transport = CountingTransport()
    updater = make_updater(prometheus.url, transport, query_batch_size=4)
    updated = updater.update(*WINDOW, [spec.unit() for spec in SPECS])
    unlimited = CountingTransport()
    make_updater(prometheus.url, unlimited).update(*WINDOW, [spec.unit() for spec in SPECS])
    assert transport.queries() > unlimited.queries()
    for request in transport.requests:
        if request.url.path == "/api/v1/query":
            assert request_query(request).count("|") <= 3  # at most 4 uuids per regex
    for unit, spec in zip(updated, SPECS, strict=True):
        assert_unit_matches(unit, spec)


def request_query(request: httpx.Request) -> str:
    """The PromQL of a GET or form-POST query request."""
    if request.method == "POST":
        return httpx.QueryParams(request.content.decode())["query"]
    return request.url.params["query"]


@pytest.fixture
def small_prometheus(
    prometheus_service: PrometheusService, promtool: str, monkeypatch: pytest.MonkeyPatch
) -> LoadedPrometheus:
    """Prometheus with a query.max-samples that fits only a few units per query."""
    return start_loaded(
        prometheus_service,
        promtool,
        all_series(SPECS),
        monkeypatch,
        args=f"{LOOKBACK} --query.max-samples=200000",
    )


def test_default_batch_size_follows_max_samples(small_prometheus: LoadedPrometheus) -> None:
    transport = CountingTransport()
    updater = make_updater(small_prometheus.url, transport)
    updated = updater.update(*WINDOW, [spec.unit() for spec in SPECS])
    # 200000 x 0.5 / (50 series x 241 samples) = 8 units per full-window query
    assert transport.queries() > N_QUERIES * RANGE_BUCKETS
    for unit, spec in zip(updated, SPECS, strict=True):
        assert_unit_matches(unit, spec)


def short_units() -> tuple[list[Unit], set[str]]:
    """The first 20 units, those of pattern 3 cut to 3 minutes; and the short uuids."""
    units, short = [], set()
    for spec in SPECS[:20]:
        unit = spec.unit()
        if spec.index % 5 == 3:  # started and ended inside the window
            unit = replace(unit, ended_at_ts=unit.started_at_ts + 180_000)
            short.add(unit.uuid)
        units.append(unit)
    return units, short


def test_cutoff_duration_marks_short_units_ignored(prometheus: LoadedPrometheus) -> None:
    units, short = short_units()
    updated = make_updater(prometheus.url, cutoff_duration="5m").update(*WINDOW, units)
    assert {u.uuid for u in updated if u.ignore} == short
    # without delete_ignored their series stay
    with TsdbClient(HttpClientConfig(url=prometheus.url)) as tsdb:
        found = tsdb.series(['{__name__=~"uuid:.+"}'], *WINDOW)
    assert short <= {s["uuid"] for s in found}


def test_delete_ignored_removes_their_series(prometheus: LoadedPrometheus) -> None:
    units, short = short_units()
    updater = make_updater(prometheus.url, cutoff_duration="5m", delete_ignored=True)
    updated = updater.update(*WINDOW, units)
    assert {u.uuid for u in updated if u.ignore} == short
    with TsdbClient(HttpClientConfig(url=prometheus.url)) as tsdb:
        found = {s["uuid"] for s in tsdb.series(["{uuid=~'.+'}"], at(0), at(WINDOW_END_S + 7200))}
    assert not found & short
    assert found == {spec.uuid for spec in SPECS} - short


def test_tsdb_error_raises_updater_error(prometheus: LoadedPrometheus) -> None:
    updater = make_updater(
        prometheus.url, queries={"avg_cpu_usage": {"global": "sum(rate(x{uuid=~`{{.UUIDs}}`}"}}
    )
    with pytest.raises(UpdaterError, match=r"avg_cpu_usage\.global failed: .*bad_data"):
        updater.update(*WINDOW, [SPECS[0].unit()])


def test_unreachable_tsdb_raises_updater_error() -> None:
    updater = make_updater(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UpdaterError, match="cannot reach"):
        updater.update(*WINDOW, [SPECS[0].unit()])


def test_no_units_needs_no_tsdb() -> None:
    updater = make_updater(f"http://127.0.0.1:{free_port()}")
    assert updater.update(*WINDOW, []) == []
