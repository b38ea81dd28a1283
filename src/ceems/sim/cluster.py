"""A simulated SLURM cluster: nodes, a seeded stream of jobs placed on them, and their truth.

Jobs of several users and projects arrive at random (Poisson, `jobs_per_hour`), run for a
random time on a node with free CPUs (GPU jobs on the GPU node with a free GPU), and end.
Each start and end goes into the job log the `sacct`/`sacctmgr` shims read, with wall-clock
times; the exact CPU seconds and energy of each job (docs/attribution.md's default policy,
integrated every tick) are written to `jobs_truth.json` when it ends, and while it runs.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ceems.sim.cgroups import SimCgroups, SimUnit
from ceems.sim.gpus import demo_gpus, write_fake_nvidia_smi
from ceems.sim.node import NodeSpec, SimulatedNode, write_atomic
from ceems.sim.slurm import SimJob, append_jobs, write_shims

# (user, uid, project): alice and carol share p1, so each sees the other's jobs there.
USERS = (("alice", 2001, "p1"), ("bob", 2002, "p2"), ("carol", 2003, "p1"), ("dave", 2004, "p3"))
GPU_SLOTS = ("0", "1", "2", "3")  # two whole GPUs, then the two MIG instances of the third
JOB_CPUS = (1, 2, 4, 8)
JOB_MEMORY = 4 * 2**30
FIRST_JOB_ID = 1000


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """What the cluster runs; durations in seconds."""

    nodes: int = 4
    seed: int = 42
    jobs_per_hour: float = 120.0
    min_job_s: float = 60.0
    max_job_s: float = 600.0
    initial_jobs: int = 2  # per SLURM node, so there is something to see at once
    cluster_id: str = "sim"


def node_role(index: int, count: int) -> str:
    """`cpu`, `gpu` (SLURM nodes) or `slices` (a small-cluster node with user sessions)."""
    if count == 1:
        return "cpu"
    return {1: "gpu", 3: "slices"}.get(index % 4, "cpu")


def power_source(index: int) -> str:
    """Which BMC-level sensor a node has: `cray` on every third node, else `ipmi`."""
    return "cray" if index % 4 == 2 else "ipmi"


@dataclass
class ClusterNode:
    """A simulated node and what runs on it."""

    sim: SimulatedNode
    role: str
    free_gpus: list[str] = field(default_factory=list)
    gpus_of: dict[str, tuple[str, ...]] = field(default_factory=dict)
    exporter_flags: list[str] = field(default_factory=list)

    @property
    def hostname(self) -> str:
        """The node's name, as SLURM and the exporter call it."""
        return self.sim.spec.hostname

    def free_cpus(self) -> int:
        """CPUs no job holds."""
        assert self.sim.cgroups is not None
        return self.sim.spec.cpus - sum(u.cpus for u in self.sim.cgroups.units.values())


@dataclass
class RunningJob:
    """A job on a node, and when it will end."""

    job: SimJob
    node: ClusterNode
    ends_at_s: float


@dataclass
class SimCluster:
    """The cluster under `root`: node trees, the SLURM job log and shims, the jobs' truth."""

    root: Path
    spec: ClusterSpec = field(default_factory=ClusterSpec)
    clock: Callable[[], float] = time.time
    nodes: list[ClusterNode] = field(init=False)
    running: dict[int, RunningJob] = field(init=False, default_factory=dict)
    truth: dict[str, dict[str, object]] = field(init=False, default_factory=dict)
    elapsed_s: float = field(init=False, default=0.0)
    _rng: random.Random = field(init=False)  # what each job is, in the order jobs start
    _arrivals: random.Random = field(init=False)  # when they arrive: drawn every tick
    _next_id: int = field(init=False, default=FIRST_JOB_ID)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # Two generators: ticks come at wall-clock times, so arrival draws must not shift
        # which user, size and run time the next job gets.
        self._rng = random.Random(self.spec.seed)
        self._arrivals = random.Random(self.spec.seed + 1)
        self.slurm_dir.mkdir(parents=True, exist_ok=True)
        self.job_log.touch()
        associations = self.slurm_dir / "associations"
        associations.write_text("".join(f"{p}|{u}\n" for u, _, p in USERS))
        write_shims(self.slurm_dir / "bin", self.job_log, associations)
        self.nodes = [self._make_node(i) for i in range(self.spec.nodes)]
        self._write_truth()

    def seed_jobs(self) -> None:
        """Start `initial_jobs` on every SLURM node now (once the monitoring is up)."""
        with self._lock:
            for node in self.nodes:
                if node.role != "slices":
                    for _ in range(self.spec.initial_jobs):
                        self._start_job(node)
            self._write_truth()

    @property
    def slurm_dir(self) -> Path:
        """The job log, associations and the `sacct`/`sacctmgr` shims (in `bin/`)."""
        return self.root / "slurm"

    @property
    def job_log(self) -> Path:
        """One JSON line per job start or end."""
        return self.slurm_dir / "jobs.jsonl"

    @property
    def truth_file(self) -> Path:
        """Per job: node, owner, times, CPU seconds and attributed energy, exact."""
        return self.root / "jobs_truth.json"

    def _make_node(self, index: int) -> ClusterNode:
        hostname = f"sim-node-{index}"
        role = node_role(index, self.spec.nodes)
        spec = NodeSpec(hostname=hostname, cray=power_source(index) == "cray")
        sim = SimulatedNode(self.root / "nodes" / hostname, spec, self.spec.seed + index)
        cgroupfs = sim.root / "cgroup"
        sim.cgroups = SimCgroups(cgroupfs, sim.procfs, "v2", seed=self.spec.seed + index)
        node = ClusterNode(sim, role)
        flags = [f"--path.cgroupfs={cgroupfs}"]
        if role == "slices":
            for user, uid, _ in USERS[:2]:
                unit = SimUnit("userslice", user, 4, None, pid=30000 + uid, uid=uid, load=0.3)
                sim.cgroups.add(unit)
            node.exporter_flags = [*flags, "--collector.userslice"]
            return node
        if role == "gpu":
            nvidia_smi = write_fake_nvidia_smi(sim.bin_dir, demo_gpus())
            node.free_gpus = list(GPU_SLOTS)
            flags += [
                "--collector.gpu.type=nvidia",
                f"--collector.gpu.nvidia-smi-path={nvidia_smi}",
            ]
        else:
            flags.append("--collector.gpu.type=nogpu")
        node.exporter_flags = [*flags, "--collector.slurm"]
        return node

    def _start_job(self, node: ClusterNode | None = None) -> RunningJob | None:
        rng = self._rng
        user, uid, project = rng.choice(USERS)
        cpus = rng.choice(JOB_CPUS)
        wants_gpu = rng.random() < 0.5
        candidates = [n for n in self.nodes if n.role in ("cpu", "gpu")] if node is None else [node]
        placed = [
            n for n in candidates
            if n.free_cpus() >= cpus and (not wants_gpu or n.role != "gpu" or n.free_gpus)
        ]  # fmt: skip
        if not placed:
            return None  # the cluster is full: the job is not submitted
        target = rng.choice(placed)
        gpus: tuple[str, ...] = ()
        if target.role == "gpu" and wants_gpu:
            gpus = (target.free_gpus.pop(0),)
        job_id = self._next_id
        self._next_id += 1
        now_ms = int(self.clock() * 1000)
        job = SimJob(
            job_id=job_id, user=user, account=project, submit_ms=now_ms - 1000,
            start_ms=now_ms, cpus=cpus, mem_bytes=JOB_MEMORY, gpus=len(gpus),
            nodes=(target.hostname,), uid=uid, name=f"sim-{job_id}",
        )  # fmt: skip
        unit = SimUnit(
            "slurm", str(job_id), cpus, JOB_MEMORY, pid=20000 + job_id, uid=uid, gpus=gpus,
            load=rng.uniform(0.2, 0.95),
        )  # fmt: skip
        assert target.sim.cgroups is not None
        with target.sim._lock:
            target.sim.cgroups.add(unit)
        target.gpus_of[str(job_id)] = gpus
        append_jobs(self.job_log, [job])
        duration = rng.uniform(self.spec.min_job_s, self.spec.max_job_s)
        running = RunningJob(job, target, self.elapsed_s + duration)
        self.running[job_id] = running
        self._record(running, now_ms)
        return running

    def _end_job(self, running: RunningJob) -> None:
        node, job = running.node, running.job
        uuid = str(job.job_id)
        now_ms = int(self.clock() * 1000)
        assert node.sim.cgroups is not None
        with node.sim._lock:
            self._record(running, now_ms, ended=True)
            node.sim.cgroups.end(uuid)
        node.free_gpus += node.gpus_of.pop(uuid, ())
        node.free_gpus.sort()
        state = "FAILED" if self._rng.random() < 0.1 else "COMPLETED"
        ended = SimJob(**{**asdict(job), "nodes": job.nodes, "end_ms": now_ms, "state": state,
                          "exit_code": "1:0" if state == "FAILED" else "0:0"})  # fmt: skip
        append_jobs(self.job_log, [ended])
        del self.running[job.job_id]

    def _record(self, running: RunningJob, now_ms: int, ended: bool = False) -> None:
        job, node = running.job, running.node
        unit = node.sim.unit_ground_truth().get(str(job.job_id), {})
        self.truth[str(job.job_id)] = {
            "node": node.hostname, "user": job.user, "project": job.account,
            "cpus": job.cpus, "gpus": list(node.gpus_of.get(str(job.job_id), ())),
            "start_ms": job.start_ms, "end_ms": now_ms if ended else 0,
            "cpu_seconds": unit.get("cpu_seconds", 0.0),
            "attributed_energy_joules": unit.get("attributed_energy_joules", 0.0),
            "dynamic_energy_joules": unit.get("dynamic_energy_joules", 0.0),
        }  # fmt: skip

    def _write_truth(self) -> None:
        write_atomic(self.truth_file, json.dumps(self.truth, indent=1, sort_keys=True))

    def advance(self, dt_s: float) -> None:
        """`dt_s` seconds: jobs end and arrive, every node advances, the truth is rewritten."""
        with self._lock:
            self.elapsed_s += dt_s
            for running in [r for r in self.running.values() if r.ends_at_s <= self.elapsed_s]:
                self._end_job(running)
            arrivals = self._poisson(self.spec.jobs_per_hour / 3600 * dt_s)
            for _ in range(arrivals):
                self._start_job()
            for node in self.nodes:
                node.sim.advance(dt_s)
            now_ms = int(self.clock() * 1000)
            for running in self.running.values():
                self._record(running, now_ms)
            self._write_truth()

    def _poisson(self, mean: float) -> int:
        # Knuth's method: arrivals in one tick are few, so this stays cheap
        if mean <= 0:
            return 0
        limit, count, product = pow(2.718281828459045, -mean), 0, self._arrivals.random()
        while product > limit:
            count += 1
            product *= self._arrivals.random()
        return count

    def run(self, stop: threading.Event, tick_s: float = 1.0) -> None:
        """Advance in wall-clock time every `tick_s` until `stop` is set."""
        last = time.monotonic()
        while not stop.wait(tick_s):
            current = time.monotonic()
            self.advance(current - last)
            last = current

    def stop_all(self) -> None:
        """End every running job now (recorded as completed)."""
        with self._lock:
            for running in list(self.running.values()):
                self._end_job(running)
            self._write_truth()
