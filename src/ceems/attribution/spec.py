"""What the recording rules of one site are made from: power sources, policies, emissions.

A `RuleSpec` is everything `ceems_tool tsdb create-recording-rules` learned from Prometheus
(which sensors each scrape job exposes) plus the operator's choices (PUE, emission factors,
how the part of node power that no unit causes is shared). The rule builders read only this,
so rules can be generated and tested without a Prometheus.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from datetime import timedelta


class PowerSource(enum.StrEnum):
    """Where a node's power figure comes from, best first."""

    CRAY = "cray_pm_counters"  # node, cpu, memory and accelerator domains, measured
    REDFISH = "redfish"  # chassis power from the BMC
    IPMI = "ipmi_dcmi"  # node power from the BMC
    HWMON = "hwmon"  # power meters the kernel exposes
    RAPL = "rapl"  # CPU package and DRAM only: the rest of the node is not seen


# Series each source needs, as the exporter names them (docs/exporter.md).
SOURCE_SERIES: dict[PowerSource, str] = {
    PowerSource.CRAY: "ceems_cray_pm_counters_power_watts",
    PowerSource.REDFISH: "ceems_redfish_current_watts",
    PowerSource.IPMI: "ceems_ipmi_dcmi_current_watts",
    PowerSource.HWMON: "ceems_hwmon_power_current_watts",
    PowerSource.RAPL: "ceems_rapl_package_joules_total",
}


class MiscPolicy(enum.StrEnum):
    """Who pays for node power that is neither CPU nor DRAM (fans, disks, NICs, PSU losses)."""

    ALLOCATED = "allocated"  # units in proportion to the CPUs they hold; idle CPUs: the node
    EQUAL = "equal"  # every running unit the same (CEEMS' rule)
    NODE = "node"  # nobody: it stays in the node's unattributed remainder


class GpuSource(enum.StrEnum):
    """GPU exporters whose power series the rules can join to units."""

    DCGM = "dcgm"  # NVIDIA DCGM exporter: UUID, GPU_I_ID labels
    AMD = "amd_device_metrics"  # AMD device metrics exporter: serial_number label


GPU_POWER_SERIES: dict[GpuSource, tuple[str, ...]] = {
    # Newer DCGM exporters export the instant reading; older ones only the averaged one.
    GpuSource.DCGM: ("DCGM_FI_DEV_POWER_USAGE_INSTANT", "DCGM_FI_DEV_POWER_USAGE"),
    GpuSource.AMD: ("gpu_package_power",),
}

_JOB = re.compile(r"^[^\"\\\n]+$")


class SpecError(ValueError):
    """A rule spec that would produce wrong or unloadable rules."""


@dataclass(frozen=True, slots=True)
class GpuJob:
    """A scrape job of a GPU exporter, and which power series it has."""

    job: str
    source: GpuSource
    power_series: str
    # Usage series present in the job (DCGM: GPU_UTIL, FB_USED/FB_FREE, PROF_GR_ENGINE_ACTIVE).
    usage_series: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class HostJob:
    """A scrape job of ceems_exporter and the sensors its nodes expose."""

    job: str
    source: PowerSource
    rapl: bool = False  # RAPL package counters present (splits a node sensor into CPU/DRAM)
    rapl_dram: bool = False  # RAPL DRAM counters present
    cray_accel: bool = False  # Cray accelN domains present (GPU power excluded from host)
    gpus: bool = False  # units have GPUs (ceems_compute_unit_gpu_index_flag present)


@dataclass(frozen=True, slots=True)
class Emissions:
    """Emission factors for the rules: live provider series, or one static value."""

    country_code: str = ""
    providers: tuple[str, ...] = ()  # providers whose ceems_emissions_gCo2_kWh series exist
    static_g_per_kwh: float = 0.0  # used when no provider series exist
    static_provider: str = "static"

    @property
    def enabled(self) -> bool:
        """True when the rules will have emission series."""
        return bool(self.providers) or self.static_g_per_kwh > 0


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """Everything the rule builders need."""

    hosts: tuple[HostJob, ...]
    gpus: tuple[GpuJob, ...] = ()
    pue: float = 1.0
    evaluation_interval: timedelta = timedelta(seconds=30)
    rate_interval: timedelta = timedelta(minutes=2)
    misc_policy: MiscPolicy = MiscPolicy.ALLOCATED
    # Fraction of a node sensor's reading taken as neither CPU nor DRAM when there is no
    # RAPL to measure them (CEEMS assumes 10 %).
    misc_fraction: float = 0.1
    emissions: Emissions = field(default_factory=Emissions)

    def __post_init__(self) -> None:
        if not self.hosts and not self.gpus:
            raise SpecError("no ceems_exporter or GPU exporter job to write rules for")
        if not (math.isfinite(self.pue) and 1.0 <= self.pue <= 5.0):
            raise SpecError(f"PUE must be between 1 and 5, got {self.pue}")
        if not 0.0 <= self.misc_fraction < 1.0:
            raise SpecError(f"misc fraction must be in [0, 1), got {self.misc_fraction}")
        if self.evaluation_interval <= timedelta(0):
            raise SpecError("evaluation interval must be positive")
        if self.rate_interval < 2 * self.evaluation_interval:
            raise SpecError("rate interval must cover at least two evaluation intervals")
        e = self.emissions
        if not (math.isfinite(e.static_g_per_kwh) and 0.0 <= e.static_g_per_kwh < 5000.0):
            raise SpecError(f"emission factor must be in [0, 5000) g/kWh, got {e.static_g_per_kwh}")
        for name in [h.job for h in self.hosts] + [g.job for g in self.gpus]:
            if not _JOB.match(name):
                raise SpecError(f"job name {name!r} cannot be quoted in PromQL")
        for name in (*e.providers, e.static_provider, e.country_code):
            if name and not re.fullmatch(r"[A-Za-z0-9_-]+", name):
                raise SpecError(f"provider or country code {name!r} is not a plain word")
