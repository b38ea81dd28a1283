"""Per-unit CPU, memory, IO and GPU metrics for one resource manager's cgroups."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ceems.exporter.cgroups.discover import Layout, all_pids, discover
from ceems.exporter.cgroups.fs import CgroupFS
from ceems.exporter.cgroups.stats import StatsOptions, UnitStats, read_stats
from ceems.exporter.cgroups.unit import CgroupUnit

if TYPE_CHECKING:
    from ceems.exporter.gpu.mapping import GpuShare

log = logging.getLogger(__name__)

UNIT_LABELS = ["manager", "hostname", "cgrouphostname", "uuid"]
NODE_INFO_TTL_S = 60.0


class GpuMapperLike(Protocol):
    """What a unit collector needs of ceems.exporter.gpu.mapper.UnitGpuMapper.

    A Protocol rather than the class, so the cgroup code does not import the GPU package
    (and its optional NVML/gRPC back ends) unless a manager maps GPUs.
    """

    def refresh(self) -> None:
        """Called once at the start of every scrape."""

    def shares(self, unit: CgroupUnit) -> Sequence[GpuShare]:
        """GPU shares of one unit."""
        ...

    def forget(self, active: set[tuple[str, str]]) -> None:
        """Drop cached mappings of units that are gone."""

    def families(
        self, hostname: str, shares: dict[tuple[str, str, str], Sequence[GpuShare]]
    ) -> list[Metric]:
        """The per-unit GPU metric families."""
        ...


def parse_diskstats(text: str) -> dict[str, str]:
    """`major:minor` -> device name from /proc/diskstats."""
    devices = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            devices[f"{fields[0]}:{fields[1]}"] = fields[2]
    return devices


def read_mem_total_bytes(procfs: Path) -> float:
    """The node's MemTotal, the memory total of a unit without a limit."""
    for line in (procfs / "meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return float(line.split()[1]) * 1024
    raise ValueError(f"{procfs}/meminfo has no MemTotal")


@dataclass(eq=False)
class NodeInfo:
    """Slowly changing node facts, re-read at most every minute."""

    procfs: Path
    _mem_total: float = 0.0
    _devices: dict[str, str] = field(default_factory=dict)
    _read_at: float = -NODE_INFO_TTL_S
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._read_at < NODE_INFO_TTL_S:
            return
        self._mem_total = read_mem_total_bytes(self.procfs)
        try:
            self._devices = parse_diskstats((self.procfs / "diskstats").read_text())
        except FileNotFoundError:
            self._devices = {}
        self._read_at = now

    def mem_total(self) -> float:
        """MemTotal in bytes."""
        with self._lock:
            self._refresh()
            return self._mem_total

    def device_name(self, major_minor: str) -> str:
        """Block device name, or `major:minor` when /proc/diskstats does not list it."""
        with self._lock:
            self._refresh()
            return self._devices.get(major_minor, major_minor)


@dataclass(frozen=True, slots=True)
class UnitCollectorConfig:
    """Everything a unit collector needs, fixed at build time."""

    layout: Layout
    fs: CgroupFS
    hostname: str
    procfs: Path
    active_subsystem: str = "cpuacct"
    stats: StatsOptions = field(default_factory=StatsOptions)
    # Manager-specific CPU count (k8s: from the pod's requests), else cpuset's.
    cpus: Callable[[CgroupFS, CgroupUnit], float | None] | None = None
    on_units: Callable[[list[CgroupUnit]], None] | None = None


class _Families:
    """The per-unit families of one scrape, created on first use."""

    def __init__(self) -> None:
        self.by_name: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}

    def add(
        self,
        name: str,
        help_text: str,
        labels: list[str],
        value: float,
        counter: bool = False,
        extra: Sequence[str] = (),
    ) -> None:
        family = self.by_name.get(name)
        if family is None:
            kind = CounterMetricFamily if counter else GaugeMetricFamily
            family = kind(name, help_text, labels=[*UNIT_LABELS, *extra])
            self.by_name[name] = family
        family.add_metric(labels, value)


def add_unit_stats(
    families: _Families,
    labels: list[str],
    stats: UnitStats,
    mem_total: float,
    device_name: Callable[[str], str],
) -> None:
    """Append one unit's series to the scrape's families."""
    f = families.add
    f(
        "ceems_compute_unit_cpu_user_seconds",
        "Total job CPU user seconds",
        labels,
        stats.cpu_user_s,
        counter=True,
    )
    f(
        "ceems_compute_unit_cpu_system_seconds",
        "Total job CPU system seconds",
        labels,
        stats.cpu_system_s,
        counter=True,
    )
    if stats.cpus is not None:
        f("ceems_compute_unit_cpus", "Total number of job CPUs", labels, stats.cpus)
    f("ceems_compute_unit_memory_rss_bytes", "Memory RSS used in bytes", labels, stats.memory_rss)
    f(
        "ceems_compute_unit_memory_cache_bytes",
        "Memory cache used in bytes",
        labels,
        stats.memory_cache,
    )
    f("ceems_compute_unit_memory_used_bytes", "Memory used in bytes", labels, stats.memory_used)
    f(
        "ceems_compute_unit_memory_total_bytes",
        "Memory total in bytes",
        labels,
        stats.memory_total if stats.memory_total is not None else mem_total,
    )
    f("ceems_compute_unit_memory_fail_count", "Memory fail count", labels, stats.memory_fail_count)
    if stats.memsw_used is not None:
        f("ceems_compute_unit_memsw_used_bytes", "Swap used in bytes", labels, stats.memsw_used)
        f(
            "ceems_compute_unit_memsw_total_bytes",
            "Swap total in bytes",
            labels,
            stats.memsw_total if stats.memsw_total is not None else mem_total,
        )
        f(
            "ceems_compute_unit_memsw_fail_count",
            "Swap fail count",
            labels,
            stats.memsw_fail_count or 0.0,
        )
    if stats.cpu_psi_s is not None:
        f("ceems_compute_unit_cpu_psi_seconds", "Total CPU PSI in seconds", labels, stats.cpu_psi_s)
    if stats.memory_psi_s is not None:
        f(
            "ceems_compute_unit_memory_psi_seconds",
            "Total memory PSI in seconds",
            labels,
            stats.memory_psi_s,
        )
    for major_minor, io in sorted(stats.blkio.items()):
        dev = [*labels, device_name(major_minor)]
        for key, name, what in (
            ("rbytes", "read_total_bytes", "Total block IO read bytes"),
            ("wbytes", "write_total_bytes", "Total block IO write bytes"),
            ("rios", "read_total_requests", "Total block IO read requests"),
            ("wios", "write_total_requests", "Total block IO write requests"),
        ):
            if key in io:
                f(f"ceems_compute_unit_blkio_{name}", what, dev, io[key], extra=["device"])
    for device, counters in sorted(stats.rdma.items()):
        dev = [*labels, device]
        if "hca_handle" in counters:
            f(
                "ceems_compute_unit_rdma_hca_handles",
                "Current number of RDMA HCA handles",
                dev,
                counters["hca_handle"],
                extra=["device"],
            )
        if "hca_object" in counters:
            f(
                "ceems_compute_unit_rdma_hca_objects",
                "Current number of RDMA HCA objects",
                dev,
                counters["hca_object"],
                extra=["device"],
            )


@dataclass(eq=False)
class CgroupUnitCollector:
    """Discovers one manager's units at every scrape and exports their usage.

    A unit whose files vanish mid-scrape (it just ended) is left out silently; one whose
    files cannot be read or parsed gets `ceems_compute_unit_collect_error 1` and the other
    units are still exported.
    """

    config: UnitCollectorConfig
    gpu: GpuMapperLike | None = None
    _node: NodeInfo = field(init=False)

    def __post_init__(self) -> None:
        self._node = NodeInfo(self.config.procfs)

    def units(self) -> list[CgroupUnit]:
        """This scrape's live units."""
        config = self.config
        return discover(config.fs, config.layout, config.active_subsystem)

    def collect(self) -> Iterator[Metric]:
        """Yield the unit count, per-unit usage, collection errors and GPU mapping."""
        config = self.config
        units = self.units()
        if config.on_units is not None:
            config.on_units(units)
        mem_total = self._node.mem_total()
        families = _Families()
        errors = GaugeMetricFamily(
            "ceems_compute_unit_collect_error",
            "1 when the unit's cgroup files could not be read or parsed",
            labels=UNIT_LABELS,
        )
        exported: list[CgroupUnit] = []
        for unit in units:
            labels = [unit.manager, config.hostname, unit.cgrouphostname, unit.uuid]
            try:
                stats = read_stats(config.fs, unit.rel, config.stats)
                if config.cpus is not None:
                    stats.cpus = config.cpus(config.fs, unit)
            except FileNotFoundError:
                if self._still_exists(unit):
                    log.warning("unit files missing", extra={"uuid": unit.uuid, "rel": unit.rel})
                    errors.add_metric(labels, 1)
                continue  # else: the unit ended during this scrape
            except (OSError, ValueError) as err:
                log.warning("unit collect failed", extra={"uuid": unit.uuid, "err": str(err)})
                errors.add_metric(labels, 1)
                continue
            add_unit_stats(families, labels, stats, mem_total, self._node.device_name)
            exported.append(unit)
        count = GaugeMetricFamily(
            "ceems_compute_units", "Total number of jobs", labels=["manager", "hostname"]
        )
        count.add_metric([config.layout.manager, config.hostname], len(exported))
        yield count
        yield from families.by_name.values()
        if errors.samples:
            yield errors
        if self.gpu is not None:
            yield from self._gpu_families(exported)

    def _still_exists(self, unit: CgroupUnit) -> bool:
        top = self.config.fs.path(self.config.active_subsystem, unit.rel)
        return top is not None and top.is_dir()

    def _gpu_families(self, units: list[CgroupUnit]) -> list[Metric]:
        assert self.gpu is not None
        self.gpu.refresh()
        shares: dict[tuple[str, str, str], Sequence[GpuShare]] = {}
        for unit in units:
            if unit.manager == "slurm":
                top = self.config.fs.path(self.config.active_subsystem, unit.rel)
                unit = replace(unit, pids=all_pids(top) if top is not None else ())
            found = self.gpu.shares(unit)
            if found:
                shares[(unit.manager, unit.cgrouphostname, unit.uuid)] = found
        self.gpu.forget({(u.cgrouphostname, u.uuid) for u in units})
        return self.gpu.families(self.config.hostname, shares)
