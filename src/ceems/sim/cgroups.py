"""Simulated compute-unit cgroups: SLURM jobs, VMs, pods and user sessions on a node.

Writes the cgroup files a kernel would (v2 unified or v1 per-controller hierarchies) for
each unit, with CPU time and memory that follow the unit's own seeded load, processes in
`cgroup.procs` and, for SLURM jobs, a `/proc/<pid>/environ` carrying the job's GPUs. The
exact CPU seconds each unit burned are kept as ground truth.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ceems.sim.node import write_atomic

Manager = Literal["slurm", "libvirt", "k8s", "userslice"]
V1_CONTROLLERS = ("cpuacct", "memory", "cpuset", "blkio")
V1_UNLIMITED = 9223372036854771712


@dataclass(slots=True)
class SimUnit:
    """One simulated unit and its running totals."""

    manager: Manager
    uuid: str  # job id, domain UUID, pod UID or user name
    cpus: int
    memory_limit_bytes: int | None
    pid: int
    uid: int = 1000
    gpus: tuple[str, ...] = ()  # SLURM GPU indices, as SLURM_JOB_GPUS lists them
    load: float = 0.5  # fraction of its CPUs the unit keeps busy
    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    memory_bytes: float = 0.0
    instance: str = ""  # libvirt domain name
    cgrouphost: str = ""  # slurmd name for multi-slurmd layouts


def unit_rel(unit: SimUnit, version: str) -> str:
    """The unit's cgroup path relative to the hierarchy root, as each manager creates it."""
    if unit.manager == "slurm":
        if version == "v2":
            scope = f"{unit.cgrouphost}_slurmstepd.scope" if unit.cgrouphost else "slurmstepd.scope"
            return f"system.slice/{scope}/job_{unit.uuid}"
        top = f"slurm_{unit.cgrouphost}" if unit.cgrouphost else "slurm"
        return f"{top}/uid_{unit.uid}/job_{unit.uuid}"
    if unit.manager == "libvirt":
        escaped = unit.instance.replace("-", "\\x2d")
        return f"machine.slice/machine-qemu\\x2d{unit.pid % 1000}\\x2d{escaped}.scope"
    if unit.manager == "k8s":
        pod = unit.uuid.replace("-", "_")  # kubelet's systemd driver cannot use '-'
        return f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice"
    return f"user.slice/user-{unit.uid}.slice"


def _leaf(unit: SimUnit) -> str:
    """Where the unit's processes sit below its cgroup (SLURM: a step task)."""
    return "step_batch/user/task_0" if unit.manager == "slurm" else ""


@dataclass
class SimCgroups:
    """Unit cgroups under `cgroupfs`, environ files under `procfs`."""

    cgroupfs: Path
    procfs: Path
    version: Literal["v1", "v2"] = "v2"
    seed: int = 0
    units: dict[str, SimUnit] = field(default_factory=dict)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self.cgroupfs.mkdir(parents=True, exist_ok=True)
        if self.version == "v2":
            (self.cgroupfs / "cgroup.controllers").write_text("cpuset cpu io memory pids rdma\n")
        else:
            for controller in V1_CONTROLLERS:
                (self.cgroupfs / controller).mkdir(exist_ok=True)

    def _dirs(self, unit: SimUnit) -> list[Path]:
        rel = unit_rel(unit, self.version)
        if self.version == "v2":
            return [self.cgroupfs / rel]
        return [self.cgroupfs / c / rel for c in V1_CONTROLLERS]

    def add(self, unit: SimUnit) -> None:
        """Start a unit: create its cgroups, put its process in, write its environment."""
        self.units[unit.uuid] = unit
        for directory in self._dirs(unit):
            leaf = directory / _leaf(unit) if _leaf(unit) else directory
            leaf.mkdir(parents=True, exist_ok=True)
            (leaf / "cgroup.procs").write_text(f"{unit.pid}\n")
            if leaf != directory:
                (directory / "cgroup.procs").write_text("")
        if self.version == "v2":
            write_atomic(self._dirs(unit)[0] / "cgroup.events", "populated 1\nfrozen 0\n")
        proc = self.procfs / str(unit.pid)
        proc.mkdir(parents=True, exist_ok=True)
        env = {"PATH": "/usr/bin:/bin", "HOME": f"/home/u{unit.uid}"}
        if unit.manager == "slurm":
            env |= {"SLURM_JOB_ID": unit.uuid, "SLURM_JOB_UID": str(unit.uid)}
            if unit.gpus:
                env["SLURM_JOB_GPUS"] = ",".join(unit.gpus)
        (proc / "environ").write_bytes(
            b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
        )
        self._write(unit)

    def end(self, uuid: str) -> None:
        """The unit ends: its cgroups and process disappear, as the manager removes them."""
        unit = self.units.pop(uuid)
        for directory in self._dirs(unit):
            shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(self.procfs / str(unit.pid), ignore_errors=True)

    def make_stale(self, uuid: str) -> None:
        """The unit's processes are gone but its cgroup is left behind (a stale cgroup)."""
        unit = self.units.pop(uuid)
        for directory in self._dirs(unit):
            for procs in directory.rglob("cgroup.procs"):
                procs.write_text("")
        if self.version == "v2":
            write_atomic(self._dirs(unit)[0] / "cgroup.events", "populated 0\nfrozen 0\n")

    def busy_cpus(self) -> dict[str, float]:
        """CPUs each unit keeps busy right now."""
        return {u.uuid: u.cpus * u.load for u in self.units.values()}

    def advance(self, dt_s: float) -> None:
        """Every unit burns CPU at its current load for `dt_s` seconds, then its load moves."""
        for unit in self.units.values():
            busy = unit.cpus * unit.load * dt_s
            unit.cpu_user_s += busy * 0.9
            unit.cpu_system_s += busy * 0.1
            limit = unit.memory_limit_bytes or 8 * 2**30
            unit.memory_bytes = limit * (0.2 + 0.6 * unit.load)
            self._write(unit)
            unit.load = min(1.0, max(0.02, unit.load + self._rng.gauss(0, 0.05)))

    def _write(self, unit: SimUnit) -> None:
        rss = int(unit.memory_bytes * 0.8)
        cache = int(unit.memory_bytes) - rss
        used = int(unit.memory_bytes)
        cpus = f"0-{unit.cpus - 1}\n"
        if self.version == "v2":
            d = self._dirs(unit)[0]
            usage = int((unit.cpu_user_s + unit.cpu_system_s) * 1e6)
            write_atomic(
                d / "cpu.stat",
                f"usage_usec {usage}\nuser_usec {int(unit.cpu_user_s * 1e6)}\n"
                f"system_usec {int(unit.cpu_system_s * 1e6)}\nnr_periods 0\n",
            )
            write_atomic(d / "cpuset.cpus.effective", cpus)
            write_atomic(d / "memory.current", f"{used}\n")
            write_atomic(d / "memory.stat", f"anon {rss}\nfile {cache}\nkernel_stack 0\n")
            limit = unit.memory_limit_bytes
            write_atomic(d / "memory.max", f"{limit}\n" if limit else "max\n")
            write_atomic(d / "memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
            write_atomic(d / "cpu.weight", f"{1 + ((unit.cpus * 1024 - 2) * 9999) // 262142}\n")
            waited_us = int(unit.cpu_user_s * 1e4)  # about 1 % of CPU time spent waiting
            write_atomic(
                d / "cpu.pressure", f"some avg10=0.00 avg60=0.00 avg300=0.00 total={waited_us}\n"
            )
            write_atomic(d / "memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
            write_atomic(d / "memory.swap.current", "0\n")
            write_atomic(d / "memory.swap.max", "max\n")
            io = int(unit.cpu_user_s * 1e6)
            write_atomic(
                d / "io.stat",
                f"8:0 rbytes={io} wbytes={io // 2} rios={io // 4096} wios={io // 8192}\n",
            )
            return
        cpuacct, memory, cpuset, _ = self._dirs(unit)
        write_atomic(cpuacct / "cpuacct.usage_user", f"{int(unit.cpu_user_s * 1e9)}\n")
        write_atomic(cpuacct / "cpuacct.usage_sys", f"{int(unit.cpu_system_s * 1e9)}\n")
        write_atomic(cpuset / "cpuset.cpus", cpus)
        write_atomic(memory / "memory.usage_in_bytes", f"{used}\n")
        write_atomic(
            memory / "memory.stat",
            f"cache {cache}\nrss {rss}\ntotal_cache {cache}\ntotal_rss {rss}\n",
        )
        write_atomic(
            memory / "memory.limit_in_bytes", f"{unit.memory_limit_bytes or V1_UNLIMITED}\n"
        )
        write_atomic(memory / "memory.failcnt", "0\n")

    def ground_truth(self) -> dict[str, float]:
        """Exact CPU seconds (user + system) per unit."""
        return {u.uuid: u.cpu_user_s + u.cpu_system_s for u in self.units.values()}


def slurm_jobs(
    count: int, first_id: int = 1000, cpus: int = 2, first_pid: int = 20000
) -> Iterable[SimUnit]:
    """`count` SLURM jobs with consecutive ids, 4 GB each."""
    for i in range(count):
        yield SimUnit(
            "slurm", str(first_id + i), cpus, 4 * 2**30, pid=first_pid + i, uid=1000 + i % 7
        )
