"""Deterministic units of two kinds, their series, and what the updater should find.

Times sit hours in the past (backfilled data must be older than Prometheus' head). Every
series has one sample per scrape interval, 7 s past each 15 s step as scrape jitter would
put it; every value is constant per unit (counters grow at a constant rate), so the
expected aggregates follow from the unit's run time inside the window alone:

- averages: the constant itself;
- energies and emissions: rate x seconds run in the window (W x s / 3.6e6 = kWh);
- IO counters: rate x seconds run in the window.

The TSDB sums one sample per scrape interval, so its integrals can differ from the exact
figure by one scrape interval's worth; `increase()` extrapolates at most half an interval
at each end: tolerances are stated per check in the tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from ceems.api.models import Unit
from tests.tsdb.backfill import SCRAPE_S, Series

JITTER_S = 7
BASE_S = (int(time.time()) - 6 * 3600) // 900 * 900
WINDOW_START_S = BASE_S + 2 * 3600
WINDOW_END_S = WINDOW_START_S + 3600
DATA_END_S = BASE_S + 4 * 3600  # running units keep reporting past the window's end
PROVIDERS = ("rte", "owid")


def at(seconds: float) -> datetime:
    """An aware UTC datetime."""
    return datetime.fromtimestamp(seconds, tz=UTC)


WINDOW = (at(WINDOW_START_S), at(WINDOW_END_S))


@dataclass(frozen=True)
class UnitSpec:
    """One unit: timing, kind and the constants its series report."""

    index: int
    uuid: str
    gpu: bool
    started_s: int
    ended_s: int  # 0: still running

    @property
    def cpu_ratio(self) -> float:
        """CPU usage ratio."""
        return 0.05 + 0.01 * self.index

    @property
    def mem_ratio(self) -> float:
        """CPU memory usage ratio."""
        return 0.5 - 0.005 * self.index

    @property
    def host_watts(self) -> float:
        """Host power attributed to the unit."""
        return 100.0 + 10.0 * self.index

    def host_emissions_g_s(self, provider: str) -> float:
        """Emission rate by provider."""
        return (0.01 if provider == "rte" else 0.05) * (self.index + 1)

    @property
    def gpu_ratios(self) -> tuple[float, float]:
        """Usage of the unit's two GPUs."""
        return 0.3 + 0.01 * self.index, 0.7

    @property
    def gpu_mem_ratio(self) -> float:
        """GPU memory usage ratio (both GPUs)."""
        return 0.25

    @property
    def gpu_watts(self) -> float:
        """Power of both GPUs together."""
        return 300.0 + 5.0 * self.index

    def gpu_emissions_g_s(self, provider: str) -> float:
        """GPU emission rate by provider."""
        return (0.02 if provider == "rte" else 0.07) * (self.index + 1)

    @property
    def write_bytes_s(self) -> float:
        """Rate of the unit's write-bytes counter."""
        return 1000.0 * (self.index + 1)

    def seconds_in_window(self) -> float:
        """Seconds the unit ran inside [WINDOW_START_S, WINDOW_END_S)."""
        end = min(WINDOW_END_S, self.ended_s or WINDOW_END_S)
        return max(0.0, end - max(WINDOW_START_S, self.started_s))

    def unit(self) -> Unit:
        """The unit as a resource manager reports it."""
        return Unit(
            cluster_id="slurm-0",
            resource_manager="slurm",
            uuid=self.uuid,
            started_at_ts=self.started_s * 1000,
            ended_at_ts=self.ended_s * 1000,
        )


def timing(index: int) -> tuple[int, int]:
    """(started, ended) of unit `index`: five patterns relative to the window."""
    s, e, k = WINDOW_START_S, WINDOW_END_S, index % 20
    pattern = k % 5
    if pattern == 0:  # running through the whole window
        return s - 3600 + 61 * k, 0
    if pattern == 1:  # started before, ended inside
        return s - 1800 + 37 * k, s + 1200 + 53 * k
    if pattern == 2:  # started inside, still running
        return s + 300 + 71 * k, 0
    if pattern == 3:  # started and ended inside
        return s + 600 + 43 * k, s + 2400 + 29 * k
    return s + 3000 + 13 * k, e + 600  # started near the end, ended after it


def make_specs(count: int, prefix: str = "job") -> list[UnitSpec]:
    """`count` units alternating CPU-only and GPU kinds; unit i and i+20 share a timing."""
    specs = []
    for index in range(count):
        started, ended = timing(index)
        uuid = f"{prefix}-{index}.{index % 3}"  # dots: the updater must escape them
        specs.append(UnitSpec(index, uuid, index % 2 == 1, started, ended))
    return specs


def _times(spec: UnitSpec) -> list[int]:
    last = min(spec.ended_s or DATA_END_S, DATA_END_S)
    first = spec.started_s + (JITTER_S - spec.started_s) % SCRAPE_S
    return list(range(first, last, SCRAPE_S))


def _gauge(name: str, labels: dict[str, str], times: list[int], value: float) -> Series:
    return Series(name, labels, [(float(t), value) for t in times])


def series_of(spec: UnitSpec) -> list[Series]:
    """The recording-rule series (and one eBPF counter) the unit would have."""
    times = _times(spec)
    # GPU units run on two nodes: per-node series that the queries must sum or average
    nodes = [f"node-{spec.index}a", f"node-{spec.index}b"] if spec.gpu else [f"node-{spec.index}"]
    share = 1.0 / len(nodes)
    out = []
    for node in nodes:
        labels = {"uuid": spec.uuid, "instance": node}
        out.append(_gauge("uuid:ceems_cpu_usage:ratio_irate", labels, times, spec.cpu_ratio))
        out.append(_gauge("uuid:ceems_cpu_memory_usage:ratio", labels, times, spec.mem_ratio))
        out.append(
            _gauge("uuid:ceems_host_power_watts:pue", labels, times, spec.host_watts * share)
        )
        for provider in PROVIDERS:
            out.append(
                _gauge(
                    "uuid:ceems_host_emissions_g_s:pue",
                    {**labels, "provider": provider},
                    times,
                    spec.host_emissions_g_s(provider) * share,
                )
            )
    out.append(
        Series(
            "ceems_ebpf_write_bytes_total",
            {"uuid": spec.uuid, "instance": nodes[0]},
            [(float(t), spec.write_bytes_s * (t - spec.started_s)) for t in times],
            kind="counter",
        )
    )
    if spec.gpu:
        for gpu, ratio in enumerate(spec.gpu_ratios):
            labels = {"uuid": spec.uuid, "instance": nodes[gpu], "gpuuuid": f"GPU-{gpu}"}
            out.append(_gauge("uuid:ceems_gpu_usage:ratio", labels, times, ratio))
            memory = spec.gpu_mem_ratio
            out.append(_gauge("uuid:ceems_gpu_memory_usage:ratio", labels, times, memory))
            out.append(_gauge("uuid:ceems_gpu_power_watts:pue", labels, times, spec.gpu_watts / 2))
            for provider in PROVIDERS:
                out.append(
                    _gauge(
                        "uuid:ceems_gpu_emissions_g_s:pue",
                        {**labels, "provider": provider},
                        times,
                        spec.gpu_emissions_g_s(provider) / 2,
                    )
                )
    return out


def all_series(specs: list[UnitSpec]) -> list[Series]:
    """Every series of every unit, grouped by name as OpenMetrics wants."""
    return sorted((s for spec in specs for s in series_of(spec)), key=lambda s: s.name)
