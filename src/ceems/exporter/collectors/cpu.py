"""Node CPU time per mode from /proc/stat, and CPU/core counts, as ceems_cpu_* metrics."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ceems.exporter.collector import NodeContext

# The first eight columns of the `cpu` line; guest time is already counted in user/nice
# (proc(5)), so exporting it too would double-count.
MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
USER_HZ = 100.0  # /proc/stat ticks; fixed at 100 on every Linux ABI the exporter runs on


@dataclass(frozen=True, slots=True)
class CpuStat:
    """Aggregate CPU seconds per mode and the number of CPUs listed in /proc/stat."""

    seconds: dict[str, float]
    cpu_count: int


def parse_proc_stat(text: str) -> CpuStat:
    """Parse /proc/stat's aggregate `cpu` line and count its `cpuN` lines."""
    seconds: dict[str, float] | None = None
    count = 0
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        fields = line.split()
        if fields[0] == "cpu":
            if len(fields) < 5:
                raise ValueError(f"/proc/stat: truncated cpu line {line!r}")
            ticks = [float(v) for v in fields[1 : 1 + len(MODES)]]
            seconds = {mode: t / USER_HZ for mode, t in zip(MODES, ticks, strict=False)}
        elif fields[0][3:].isdigit():
            count += 1
    if seconds is None:
        raise ValueError("/proc/stat: no aggregate cpu line")
    return CpuStat(seconds, count)


def parse_threads_per_core(cpuinfo: str) -> int:
    """Logical CPUs per physical core from /proc/cpuinfo (`siblings` / `cpu cores`), else 1."""
    siblings = cores = 0
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "siblings" and not siblings:
            siblings = int(value)
        elif key == "cpu cores" and not cores:
            cores = int(value)
        if siblings and cores:
            break
    # Architectures without these fields (arm64, ppc64le) report no SMT topology here.
    return siblings // cores if siblings and cores else 1


@dataclass(slots=True, eq=False)  # registered in a registry: hashed by identity
class CpuCollector:
    """Emits ceems_cpu_seconds_total{mode}, ceems_cpu_count and ceems_cpu_per_core_count."""

    procfs: Path
    hostname: str
    _last: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads_per_core: int | None = None

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Read /proc/stat once per scrape; modes never go backwards between scrapes."""
        stat = parse_proc_stat((self.procfs / "stat").read_text())
        if self._threads_per_core is None:
            # SMT topology does not change while the node runs: read cpuinfo once.
            self._threads_per_core = parse_threads_per_core((self.procfs / "cpuinfo").read_text())
        seconds = CounterMetricFamily(
            "ceems_cpu_seconds", "Seconds the CPUs spent in each mode.", labels=["hostname", "mode"]
        )
        with self._lock:
            for mode, value in stat.seconds.items():
                # Kernels can report a smaller iowait (and, on some hypervisors, idle) than
                # before; a counter must not decrease, so keep the highest value seen.
                value = max(value, self._last.get(mode, 0.0))
                self._last[mode] = value
                seconds.add_metric([self.hostname, mode], value)
        yield seconds
        count = GaugeMetricFamily("ceems_cpu_count", "Number of CPUs.", labels=["hostname"])
        count.add_metric([self.hostname], stat.cpu_count)
        yield count
        per_core = GaugeMetricFamily(
            "ceems_cpu_per_core_count",
            "Number of logical CPUs per physical core.",
            labels=["hostname"],
        )
        per_core.add_metric([self.hostname], self._threads_per_core)
        yield per_core


@dataclass(frozen=True, slots=True)
class CpuCollectorFactory:
    """Builds the cpu collector (no options)."""

    name: str = "cpu"
    enabled_by_default: bool = True
    description: str = "Node CPU seconds per mode from /proc/stat, CPU and SMT counts."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """The cpu collector has no options."""

    def build(self, node: NodeContext, options: argparse.Namespace) -> CpuCollector:
        """A collector reading `<procfs>/stat` and `<procfs>/cpuinfo`."""
        return CpuCollector(node.procfs, node.hostname)


FACTORY = CpuCollectorFactory()
