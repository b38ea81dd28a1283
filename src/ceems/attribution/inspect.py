"""Build a `RuleSpec` from the series a Prometheus has: which jobs, sensors, GPUs, factors.

Uses only the label-values API (one call per candidate metric), so inspecting a large
Prometheus costs a few dozen cheap calls, never a scan of every unit's series.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ceems.attribution.spec import (
    GPU_POWER_SERIES,
    SOURCE_SERIES,
    Emissions,
    GpuJob,
    GpuSource,
    HostJob,
    MiscPolicy,
    PowerSource,
    RuleSpec,
    SpecError,
)
from ceems.emissions.owid import load_owid_table
from ceems.tsdb.client import TsdbClient

log = logging.getLogger(__name__)

HOST_MARKER = "ceems_cpu_seconds_total"  # every ceems_exporter job has it (cpu collector)
GPU_FLAG = "ceems_compute_unit_gpu_index_flag"
EMISSIONS = "ceems_emissions_gCo2_kWh"
DCGM_USAGE = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
)


@dataclass(frozen=True, slots=True)
class Choices:
    """What the operator said on the command line."""

    pue: float = 1.0
    evaluation_interval: timedelta | None = None  # None: Prometheus' global one
    misc_policy: MiscPolicy = MiscPolicy.ALLOCATED
    misc_fraction: float = 0.1
    power_source: PowerSource | None = None  # None: the best each job has
    country_code: str = ""
    emission_factor: float = 0.0
    jobs: tuple[str, ...] = field(default=())  # only these ceems_exporter jobs, when given


class Inventory:
    """Which jobs have which metric names in a time window."""

    def __init__(self, client: TsdbClient, start: datetime, end: datetime) -> None:
        self.client, self.start, self.end = client, start, end
        self._cache: dict[str, set[str]] = {}

    def jobs(self, metric: str) -> set[str]:
        if metric not in self._cache:
            values = self.client.label_values("job", [metric], self.start, self.end)
            self._cache[metric] = set(values)
        return self._cache[metric]

    def values(self, label: str, selector: str) -> list[str]:
        return self.client.label_values(label, [selector], self.start, self.end)


def _host_job(inv: Inventory, job: str, choices: Choices) -> HostJob | None:
    present = {s for s, metric in SOURCE_SERIES.items() if job in inv.jobs(metric)}
    if choices.power_source is not None:
        if choices.power_source not in present:
            raise SpecError(f"job {job} has no {SOURCE_SERIES[choices.power_source]} series")
        source = choices.power_source
    else:
        ranked = [s for s in PowerSource if s in present]
        if not ranked:
            log.warning("job %s: no power sensor series; no energy rules for it", job)
            return None
        source = ranked[0]
    accel = False
    if source is PowerSource.CRAY:
        domains = inv.values("domain", f'{SOURCE_SERIES[source]}{{job="{job}"}}')
        accel = any(d.startswith("accel") for d in domains)
    return HostJob(
        job,
        source,
        rapl=PowerSource.RAPL in present,
        rapl_dram=job in inv.jobs("ceems_rapl_dram_joules_total"),
        cray_accel=accel,
        gpus=job in inv.jobs(GPU_FLAG),
    )


def _gpu_jobs(inv: Inventory) -> list[GpuJob]:
    found: dict[str, GpuJob] = {}
    for source, names in GPU_POWER_SERIES.items():
        for name in names:
            for job in sorted(inv.jobs(name)):
                if job in found:
                    continue
                usage = frozenset(u for u in DCGM_USAGE if job in inv.jobs(u))
                found[job] = GpuJob(
                    job, source, name, usage if source is GpuSource.DCGM else frozenset()
                )
    return [found[j] for j in sorted(found)]


def _emissions(inv: Inventory, choices: Choices) -> Emissions:
    if choices.emission_factor > 0:
        return Emissions(
            country_code=choices.country_code, static_g_per_kwh=choices.emission_factor
        )
    countries = sorted(inv.values("country_code", EMISSIONS))
    code = choices.country_code
    if not code:
        if len(countries) > 1:
            raise SpecError(
                f"emission factors exist for several countries ({', '.join(countries)}): "
                "choose one with --country-code"
            )
        if not countries:
            log.warning("no %s series and no --country-code: no emission rules", EMISSIONS)
            return Emissions()
        code = countries[0]
    providers = tuple(sorted(inv.values("provider", f'{EMISSIONS}{{country_code="{code}"}}')))
    if providers:
        return Emissions(country_code=code, providers=providers)
    table = load_owid_table()
    if code not in table:
        raise SpecError(f"no emission factor series for {code} and no OWID figure for it")
    log.warning("no %s series for %s: using OWID's static %.0f g/kWh", EMISSIONS, code,
                table[code].value_g_per_kwh)  # fmt: skip
    return Emissions(
        country_code=code, static_g_per_kwh=table[code].value_g_per_kwh, static_provider="owid"
    )


def inspect(client: TsdbClient, start: datetime, end: datetime, choices: Choices) -> RuleSpec:
    """The spec for what Prometheus scraped between start and end."""
    inv = Inventory(client, start, end)
    jobs = sorted(inv.jobs(HOST_MARKER))
    if choices.jobs:
        missing = sorted(set(choices.jobs) - set(jobs))
        if missing:
            raise SpecError(f"no ceems_exporter series for job(s) {', '.join(missing)}")
        jobs = [j for j in jobs if j in choices.jobs]
    hosts = [h for j in jobs if (h := _host_job(inv, j, choices)) is not None]
    settings = client.settings()
    evaluation = choices.evaluation_interval or settings.evaluation_interval
    rate = max(settings.rate_interval, 2 * evaluation)
    return RuleSpec(
        hosts=tuple(hosts),
        gpus=tuple(_gpu_jobs(inv)),
        pue=choices.pue,
        evaluation_interval=evaluation,
        rate_interval=rate,
        misc_policy=choices.misc_policy,
        misc_fraction=choices.misc_fraction,
        emissions=_emissions(inv, choices),
    )
