"""Resource accounting of one cgroup, from cgroup v1 or v2 files.

Both versions are read into the same `UnitStats`, with CEEMS' mapping: rss = anonymous
memory, cache = page cache, used = current usage, total = the limit (or the node's memory
when unlimited), fail count = v1 `memory.failcnt` / v2 `memory.events` max.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ceems.exporter.cgroups.cpuset import count_cpus
from ceems.exporter.cgroups.fs import CgroupFS

# v1 reports "no limit" as the largest page-aligned 64-bit value.
V1_UNLIMITED = 2**62


@dataclass(slots=True)
class UnitStats:
    """What the collectors export per unit; None means "not available on this node"."""

    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    cpus: float | None = None
    memory_rss: float = 0.0
    memory_cache: float = 0.0
    memory_used: float = 0.0
    memory_total: float | None = None  # None: unlimited, the collector uses MemTotal
    memory_fail_count: float = 0.0
    memsw_used: float | None = None
    memsw_total: float | None = None
    memsw_fail_count: float | None = None
    cpu_psi_s: float | None = None
    memory_psi_s: float | None = None
    blkio: dict[str, dict[str, float]] = field(default_factory=dict)  # "maj:min" -> counters
    rdma: dict[str, dict[str, float]] = field(default_factory=dict)  # device -> counters


def parse_flat_keyed(text: str) -> dict[str, float]:
    """`key value` lines (cpu.stat, memory.stat, memory.events) into a mapping."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key and value:
            values[key] = float(value)
    return values


def parse_psi_total_s(text: str) -> float:
    """Seconds of the `some` line's total (PSI files count microseconds)."""
    for line in text.splitlines():
        if line.startswith("some "):
            for item in line.split()[1:]:
                key, _, value = item.partition("=")
                if key == "total":
                    return int(value) / 1e6
    raise ValueError("pressure file has no 'some ... total=' line")


def parse_io_stat(text: str) -> dict[str, dict[str, float]]:
    """v2 io.stat: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 ...` per device."""
    devices: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        device, *items = line.split()
        counters = {}
        for item in items:
            key, _, value = item.partition("=")
            if key in ("rbytes", "wbytes", "rios", "wios"):
                counters[key] = float(value)
        if counters:
            devices[device] = counters
    return devices


def parse_blkio_throttle(bytes_text: str, ios_text: str) -> dict[str, dict[str, float]]:
    """v1 blkio.throttle.io_service_bytes and io_serviced into io.stat's keys."""
    devices: dict[str, dict[str, float]] = {}
    for text, prefix in ((bytes_text, "bytes"), (ios_text, "ios")):
        for line in text.splitlines():
            fields = line.split()
            if len(fields) != 3 or fields[1] not in ("Read", "Write"):
                continue  # the trailing "Total N" line and Sync/Async/Discard splits
            key = ("r" if fields[1] == "Read" else "w") + prefix
            devices.setdefault(fields[0], {})[key] = float(fields[2])
    return devices


def parse_rdma_current(text: str) -> dict[str, dict[str, float]]:
    """rdma.current: `mlx5_0 hca_handle=2 hca_object=2000` per device."""
    devices: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        device, *items = line.split()
        counters = {}
        for item in items:
            key, _, value = item.partition("=")
            if value.isdigit():  # "max" means no limit, not a count
                counters[key] = float(value)
        devices[device] = counters
    return devices


def read_small_file(path: str | Path) -> str:
    """Whole content of a small kernel file.

    A scrape reads thousands of cgroup files; a raw os.read avoids the buffered text
    wrapper and pathlib work that otherwise cost more than the system calls themselves.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def _read_optional(path: str) -> str | None:
    try:
        return read_small_file(path)
    except FileNotFoundError:
        return None


_read = read_small_file


def _limit(text: str) -> float | None:
    value = text.strip()
    if value == "max":
        return None
    number = float(value)
    return None if number >= V1_UNLIMITED else number


@dataclass(frozen=True, slots=True)
class StatsOptions:
    """Which optional groups of files to read."""

    swap: bool = False
    psi: bool = False
    blkio: bool = False
    rdma: bool = True


def read_stats_v2(unit_dir: Path, options: StatsOptions) -> UnitStats:
    """Stats of a unified-hierarchy cgroup."""
    d = str(unit_dir)
    stats = UnitStats()
    cpu = parse_flat_keyed(_read(f"{d}/cpu.stat"))
    stats.cpu_user_s = cpu.get("user_usec", 0.0) / 1e6
    stats.cpu_system_s = cpu.get("system_usec", 0.0) / 1e6
    if (cpuset := _read_optional(f"{d}/cpuset.cpus.effective")) is not None:
        stats.cpus = count_cpus(cpuset)
    memory = parse_flat_keyed(_read(f"{d}/memory.stat"))
    stats.memory_rss = memory.get("anon", 0.0)
    stats.memory_cache = memory.get("file", 0.0)
    stats.memory_used = float(_read(f"{d}/memory.current"))
    stats.memory_total = _limit(_read(f"{d}/memory.max"))
    events = parse_flat_keyed(_read(f"{d}/memory.events"))
    stats.memory_fail_count = events.get("max", 0.0)
    if options.swap and (swap := _read_optional(f"{d}/memory.swap.current")) is not None:
        stats.memsw_used = float(swap)
        stats.memsw_total = _limit(_read(f"{d}/memory.swap.max"))
        if (swap_events := _read_optional(f"{d}/memory.swap.events")) is not None:
            stats.memsw_fail_count = parse_flat_keyed(swap_events).get("fail", 0.0)
    # Absent on kernels booted with psi=0: then there is nothing to export, not an error.
    if options.psi and (cpu_pressure := _read_optional(f"{d}/cpu.pressure")) is not None:
        stats.cpu_psi_s = parse_psi_total_s(cpu_pressure)
        stats.memory_psi_s = parse_psi_total_s(_read(f"{d}/memory.pressure"))
    if options.blkio and (io := _read_optional(f"{d}/io.stat")) is not None:
        stats.blkio = parse_io_stat(io)
    if options.rdma and (rdma := _read_optional(f"{d}/rdma.current")) is not None:
        stats.rdma = parse_rdma_current(rdma)
    return stats


def read_stats_v1(fs: CgroupFS, rel: str, options: StatsOptions) -> UnitStats:
    """Stats of a cgroup spread over v1 controller hierarchies."""
    stats = UnitStats()
    cpuacct = fs.path("cpuacct", rel)
    if cpuacct is None:
        raise FileNotFoundError(f"no cpuacct hierarchy under {fs.root}")
    if (cpuacct / "cpuacct.usage_user").exists():
        stats.cpu_user_s = int(_read(cpuacct / "cpuacct.usage_user")) / 1e9
        stats.cpu_system_s = int(_read(cpuacct / "cpuacct.usage_sys")) / 1e9
    else:  # older kernels: USER_HZ ticks only
        ticks = parse_flat_keyed(_read(cpuacct / "cpuacct.stat"))
        stats.cpu_user_s = ticks.get("user", 0.0) / 100
        stats.cpu_system_s = ticks.get("system", 0.0) / 100
    cpuset = fs.path("cpuset", rel)
    if cpuset is not None and (cpuset / "cpuset.cpus").exists():
        stats.cpus = count_cpus(_read(cpuset / "cpuset.cpus"))
    memory = fs.path("memory", rel)
    if memory is None:
        raise FileNotFoundError(f"no memory hierarchy under {fs.root}")
    mstat = parse_flat_keyed(_read(memory / "memory.stat"))
    # total_* include descendants (the job's step cgroups); plain keys are this level only.
    stats.memory_rss = mstat.get("total_rss", mstat.get("rss", 0.0))
    stats.memory_cache = mstat.get("total_cache", mstat.get("cache", 0.0))
    stats.memory_used = float(_read(memory / "memory.usage_in_bytes"))
    stats.memory_total = _limit(_read(memory / "memory.limit_in_bytes"))
    stats.memory_fail_count = float(_read(memory / "memory.failcnt"))
    if options.swap and (memory / "memory.memsw.usage_in_bytes").exists():
        stats.memsw_used = float(_read(memory / "memory.memsw.usage_in_bytes"))
        stats.memsw_total = _limit(_read(memory / "memory.memsw.limit_in_bytes"))
        stats.memsw_fail_count = float(_read(memory / "memory.memsw.failcnt"))
    if options.blkio:
        blkio = fs.path("blkio", rel)
        if blkio is not None and (blkio / "blkio.throttle.io_service_bytes").exists():
            stats.blkio = parse_blkio_throttle(
                _read(blkio / "blkio.throttle.io_service_bytes"),
                _read(blkio / "blkio.throttle.io_serviced"),
            )
    if options.rdma:
        rdma = fs.path("rdma", rel)
        if rdma is not None and (rdma / "rdma.current").exists():
            stats.rdma = parse_rdma_current(_read(rdma / "rdma.current"))
    return stats


def read_stats(fs: CgroupFS, rel: str, options: StatsOptions) -> UnitStats:
    """Stats of unit `rel` for whichever cgroup version the node runs."""
    if fs.version == "v2":
        return read_stats_v2(fs.root / rel, options)
    return read_stats_v1(fs, rel, options)
