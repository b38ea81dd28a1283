"""A synthetic compute node: procfs/sysfs trees, power sensors and their ground truth.

The node writes the files a real kernel would expose (`/proc/stat`, `/proc/meminfo`,
`/proc/cpuinfo`, powercap RAPL zones that wrap, an hwmon power meter, Cray pm_counters) and a
fake `ipmi-dcmi` command, all under one directory, and keeps the exact energy it consumed so
tests and benchmarks can compare the exporter's figures with the truth.
"""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ceems.sim.workload import Workload

if TYPE_CHECKING:
    from ceems.sim.cgroups import SimCgroups

USER_HZ = 100
# The value most Intel server CPUs report in max_energy_range_uj (about 262 kJ).
REAL_RAPL_RANGE_UJ = 262_143_328_850


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """Hardware of a simulated node; power figures in watts."""

    hostname: str = "sim-node-0"
    sockets: int = 2
    cores_per_socket: int = 4
    threads_per_core: int = 2
    mem_total_bytes: int = 64 * 2**30
    package_idle_w: float = 30.0
    package_max_w: float = 150.0
    dram_idle_w: float = 4.0
    dram_max_w: float = 20.0
    other_w: float = 90.0  # fans, disks, NICs, PSU losses: seen by the BMC, not by RAPL
    # What the OS itself uses outside every compute unit, when units run.
    background_cpus: float = 0.25
    background_memory_bytes: int = 2 * 2**30
    rapl_range_uj: int = REAL_RAPL_RANGE_UJ
    hwmon: bool = True
    ipmi: bool = True
    cray: bool = False

    @property
    def cpus(self) -> int:
        """Logical CPUs."""
        return self.sockets * self.cores_per_socket * self.threads_per_core


def write_atomic(path: Path, text: str) -> None:
    """Replace a file in one step, so a concurrent reader never sees it half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


@dataclass
class SimulatedNode:
    """A node evolving in simulated time under `root` (`proc/`, `sys/`, `bin/`, `state/`)."""

    root: Path
    spec: NodeSpec = field(default_factory=NodeSpec)
    seed: int = 0
    workload: Workload = field(init=False)
    elapsed_s: float = 0.0
    cpu_ticks: dict[str, float] = field(default_factory=dict)
    energy_j: dict[str, float] = field(default_factory=dict)
    power_w: dict[str, float] = field(default_factory=dict)
    # Compute units running on the node; when there are any, they set its CPU load.
    cgroups: SimCgroups | None = None
    unit_energy_j: dict[str, float] = field(default_factory=dict)
    unit_attributed_j: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.workload = Workload(self.seed)
        self.cpu_ticks = dict.fromkeys(
            ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"), 0.0
        )
        # Counters of a node that has been up a while: start at a seeded offset, not zero.
        offset_j = 1000.0 + 137.0 * (self.seed % 97)
        for s in range(self.spec.sockets):
            self.energy_j[f"package-{s}"] = offset_j * (s + 1)
            self.energy_j[f"dram-{s}"] = offset_j / 10 * (s + 1)
        self.energy_j["node"] = 0.0
        self._update_power()
        self._layout()
        self._write()

    @property
    def procfs(self) -> Path:
        """The simulated /proc."""
        return self.root / "proc"

    @property
    def sysfs(self) -> Path:
        """The simulated /sys."""
        return self.root / "sys"

    @property
    def bin_dir(self) -> Path:
        """Fake node tools (ipmi-dcmi)."""
        return self.root / "bin"

    @property
    def ipmi_command(self) -> Path:
        """The fake FreeIPMI `ipmi-dcmi` of this node."""
        return self.bin_dir / "ipmi-dcmi"

    def _zone_dir(self, socket: int, dram: bool) -> Path:
        name = f"intel-rapl:{socket}:0" if dram else f"intel-rapl:{socket}"
        return self.sysfs / "class" / "powercap" / name

    def _layout(self) -> None:
        spec = self.spec
        for path in (self.procfs, self.bin_dir, self.root / "state"):
            path.mkdir(parents=True, exist_ok=True)
        cpuinfo = []
        for cpu in range(spec.cpus):
            cpuinfo.append(
                f"processor\t: {cpu}\nvendor_id\t: GenuineIntel\nmodel name\t: Simulated CPU\n"
                f"physical id\t: {cpu // (spec.cores_per_socket * spec.threads_per_core)}\n"
                f"siblings\t: {spec.cores_per_socket * spec.threads_per_core}\n"
                f"cpu cores\t: {spec.cores_per_socket}\n"
            )
        (self.procfs / "cpuinfo").write_text("\n".join(cpuinfo) + "\n")
        for s in range(spec.sockets):
            for dram in (False, True):
                zone = self._zone_dir(s, dram)
                zone.mkdir(parents=True, exist_ok=True)
                (zone / "name").write_text("dram\n" if dram else f"package-{s}\n")
                (zone / "max_energy_range_uj").write_text(f"{spec.rapl_range_uj}\n")
                limit = 0 if dram else int(spec.package_max_w * 1.2e6)
                (zone / "constraint_0_power_limit_uw").write_text(f"{limit}\n")
        if spec.hwmon:
            hwmon = self.sysfs / "class" / "hwmon" / "hwmon0"
            hwmon.mkdir(parents=True, exist_ok=True)
            (hwmon / "name").write_text("power_meter\n")
        if spec.cray:
            (self.sysfs / "cray" / "pm_counters").mkdir(parents=True, exist_ok=True)
        if spec.ipmi:
            # Reads the node power the simulator last wrote, in FreeIPMI's output format.
            self.ipmi_command.write_text(
                "#!/bin/sh\n"
                'p=$(cat "$(dirname "$0")/../state/node_power_watts")\n'
                "cat <<EOF\n"
                "Current Power                        : $p Watts\n"
                "Minimum Power over sampling duration : 60 watts\n"
                "Maximum Power over sampling duration : 700 watts\n"
                "Average Power over sampling duration : $p watts\n"
                "Time Stamp                           : 11/23/2026 - 08:36:29\n"
                "Statistics reporting time period     : 1000 milliseconds\n"
                "Power Measurement                    : Active\n"
                "EOF\n"
            )
            self.ipmi_command.chmod(
                self.ipmi_command.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
            )

    def _update_power(self) -> None:
        spec, load = self.spec, self.workload
        for s in range(spec.sockets):
            self.power_w[f"package-{s}"] = (
                spec.package_idle_w + (spec.package_max_w - spec.package_idle_w) * load.cpu
            )
            self.power_w[f"dram-{s}"] = (
                spec.dram_idle_w + (spec.dram_max_w - spec.dram_idle_w) * load.memory
            )
        self.power_w["node"] = spec.other_w + sum(
            w for zone, w in self.power_w.items() if zone != "node"
        )

    def advance(self, dt_s: float) -> None:
        """Run the node for `dt_s` simulated seconds and rewrite its files."""
        if dt_s <= 0:
            raise ValueError(f"dt_s must be positive, got {dt_s}")
        with self._lock:
            # Energy over the step at the power that held during it, then the new state.
            for zone, watts in self.power_w.items():
                self.energy_j[zone] += watts * dt_s
            with_units = self.cgroups is not None and bool(self.cgroups.units)
            if with_units:
                self._share_energy(dt_s)
                self._unit_ticks(dt_s)
                assert self.cgroups is not None
                self.cgroups.advance(dt_s)
            else:
                load = self.workload.cpu
                cpu_s = self.spec.cpus * dt_s * USER_HZ
                self.cpu_ticks["user"] += cpu_s * load * 0.85
                self.cpu_ticks["system"] += cpu_s * load * 0.12
                self.cpu_ticks["softirq"] += cpu_s * load * 0.01
                self.cpu_ticks["iowait"] += cpu_s * load * 0.02
                self.cpu_ticks["idle"] += cpu_s * (1 - load)
            self.elapsed_s += dt_s
            self.workload.step(dt_s)
            if with_units:
                assert self.cgroups is not None
                busy = sum(self.cgroups.busy_cpus().values()) + self.spec.background_cpus
                self.workload.cpu = min(1.0, busy / self.spec.cpus)
                self.workload.memory = min(
                    1.0, self.memory_used_bytes() / self.spec.mem_total_bytes
                )
            self._update_power()
            self._write()

    def memory_used_bytes(self) -> int:
        """Memory in use on the node: the units' plus the OS's (units running only)."""
        assert self.cgroups is not None
        units = sum(u.memory_bytes for u in self.cgroups.units.values())
        return int(units) + self.spec.background_memory_bytes

    def _unit_ticks(self, dt_s: float) -> None:
        """Node CPU time is the units' (as SimCgroups.advance will count it) plus the OS's."""
        assert self.cgroups is not None
        busy = sum(self.cgroups.busy_cpus().values())
        background = self.spec.background_cpus
        idle = max(0.0, self.spec.cpus - busy - background)
        self.cpu_ticks["user"] += (busy * 0.9 + background * 0.7) * dt_s * USER_HZ
        self.cpu_ticks["system"] += (busy * 0.1 + background * 0.3) * dt_s * USER_HZ
        self.cpu_ticks["idle"] += idle * dt_s * USER_HZ

    def _share_energy(self, dt_s: float) -> None:
        """Ground truth per unit over this step, at the power and shares that hold in it.

        `dynamic`: the package power above idle, split by busy CPUs (what the unit caused).
        `attributed`: the default policy of docs/attribution.md applied exactly: package
        by CPU time, DRAM by memory, the rest of the node by allocated CPUs.
        """
        assert self.cgroups is not None
        busy = self.cgroups.busy_cpus()
        total = sum(busy.values())
        package_w = sum(w for z, w in self.power_w.items() if z.startswith("package"))
        dram_w = sum(w for z, w in self.power_w.items() if z.startswith("dram"))
        misc_w = self.power_w["node"] - package_w - dram_w
        dynamic_w = package_w - self.spec.package_idle_w * self.spec.sockets
        node_busy = total + self.spec.background_cpus
        memory = self.memory_used_bytes()
        for uuid, unit in self.cgroups.units.items():
            if total > 0:
                self.unit_energy_j[uuid] = (
                    self.unit_energy_j.get(uuid, 0.0) + dynamic_w * dt_s * busy[uuid] / total
                )
            watts = (
                package_w * busy[uuid] / node_busy
                + dram_w * unit.memory_bytes / memory
                + misc_w * unit.cpus / self.spec.cpus
            )
            self.unit_attributed_j[uuid] = self.unit_attributed_j.get(uuid, 0.0) + watts * dt_s

    def _write(self) -> None:
        spec = self.spec
        ticks = " ".join(str(int(self.cpu_ticks[m])) for m in self.cpu_ticks)
        per_cpu = {m: int(v / spec.cpus) for m, v in self.cpu_ticks.items()}
        lines = [f"cpu  {ticks} 0 0"]
        lines += [
            f"cpu{i} " + " ".join(map(str, per_cpu.values())) + " 0 0" for i in range(spec.cpus)
        ]
        lines += ["intr 0", "ctxt 0", "btime 1700000000", "processes 1", "procs_running 1"]
        write_atomic(self.procfs / "stat", "\n".join(lines) + "\n")
        total_kb = spec.mem_total_bytes // 1024
        if self.cgroups is not None and self.cgroups.units:
            free_kb = total_kb - self.memory_used_bytes() // 1024
            available_kb = free_kb
        else:
            free_kb = int(total_kb * (1 - self.workload.memory))
            available_kb = int(free_kb * 1.05)
        write_atomic(
            self.procfs / "meminfo",
            f"MemTotal:       {total_kb} kB\nMemFree:        {free_kb} kB\n"
            f"MemAvailable:   {available_kb} kB\nBuffers:        1024 kB\n"
            f"Cached:         {total_kb // 20} kB\nHugePages_Total:       0\n",
        )
        for s in range(spec.sockets):
            for dram in (False, True):
                joules = self.energy_j[f"dram-{s}" if dram else f"package-{s}"]
                raw = int(joules * 1e6) % spec.rapl_range_uj
                write_atomic(self._zone_dir(s, dram) / "energy_uj", f"{raw}\n")
        node_w = self.power_w["node"]
        write_atomic(self.root / "state" / "node_power_watts", f"{node_w:.0f}\n")
        if spec.hwmon:
            hwmon = self.sysfs / "class" / "hwmon" / "hwmon0"
            write_atomic(hwmon / "power1_input", f"{int(node_w * 1e6)}\n")
            write_atomic(hwmon / "power1_average", f"{int(node_w * 1e6)}\n")
            write_atomic(hwmon / "energy1_input", f"{int(self.energy_j['node'] * 1e6)}\n")
        if spec.cray:
            self._write_cray()
        write_atomic(self.root / "state" / "ground_truth.json", json.dumps(self.ground_truth()))
        if self.cgroups is not None:
            write_atomic(
                self.root / "state" / "units_ground_truth.json",
                json.dumps(self.unit_ground_truth()),
            )

    def _write_cray(self) -> None:
        pm = self.sysfs / "cray" / "pm_counters"
        stamp = f"{int(1.7e15 + self.elapsed_s * 1e6)} us"
        cpu_w = sum(w for z, w in self.power_w.items() if z.startswith("package"))
        mem_w = sum(w for z, w in self.power_w.items() if z.startswith("dram"))
        cpu_j = sum(j for z, j in self.energy_j.items() if z.startswith("package"))
        mem_j = sum(j for z, j in self.energy_j.items() if z.startswith("dram"))
        for name, value, unit in (
            ("energy", self.energy_j["node"], "J"),
            ("power", self.power_w["node"], "W"),
            ("cpu_energy", cpu_j, "J"),
            ("cpu_power", cpu_w, "W"),
            ("memory_energy", mem_j, "J"),
            ("memory_power", mem_w, "W"),
        ):
            write_atomic(pm / name, f"{int(value)} {unit} {stamp}\n")
        write_atomic(pm / "power_cap", "0 W\n")

    def ground_truth(self) -> dict[str, float]:
        """Exact joules consumed per RAPL zone and by the whole node, plus elapsed seconds."""
        return {
            **{f"{z}_joules": j for z, j in self.energy_j.items()},
            "elapsed_seconds": self.elapsed_s,
        }

    def unit_ground_truth(self) -> dict[str, dict[str, float]]:
        """Per running unit: exact CPU seconds, the package energy above idle it caused, and
        the node energy the default attribution policy gives it (see `_share_energy`)."""
        if self.cgroups is None:
            return {}
        cpu = self.cgroups.ground_truth()
        return {
            uuid: {
                "cpu_seconds": cpu_s,
                "dynamic_energy_joules": self.unit_energy_j.get(uuid, 0.0),
                "attributed_energy_joules": self.unit_attributed_j.get(uuid, 0.0),
            }
            for uuid, cpu_s in cpu.items()
        }

    def run(
        self,
        stop: threading.Event,
        tick_s: float = 1.0,
        speed: float = 1.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Advance `tick_s * speed` simulated seconds every `tick_s` real seconds until `stop`."""

        now = clock or time.monotonic
        last = now()
        while not stop.wait(tick_s):
            current = now()
            self.advance((current - last) * speed)
            last = current


def start_node(
    root: Path, spec: NodeSpec, seed: int, tick_s: float = 1.0, speed: float = 1.0
) -> tuple[SimulatedNode, threading.Event, threading.Thread]:
    """Create a node under `root` and evolve it in a daemon thread; set the event to stop."""
    root.mkdir(parents=True, exist_ok=True)
    node = SimulatedNode(root, spec, seed)
    stop = threading.Event()
    thread = threading.Thread(
        target=node.run, args=(stop, tick_s, speed), name=f"sim-{spec.hostname}", daemon=True
    )
    thread.start()
    return node, stop, thread
