"""The whole stack over this machine's real SLURM: `ceems demo --slurm real` and its e2e test.

SLURM is the single-node cluster `scripts/services.sh start slurm` runs (docs/services.md):
real jobs of the Linux users alice, bob (account research) and carol (account physics), in
real cgroup v1 job cgroups. Only the power sensors are simulated, since the machine has none:
a `SimulatedNode` provides the RAPL zones (through `--path.sysfs`) and `ipmi-dcmi`, and its
load follows the real /proc/stat, so simulated power rises with the real jobs.

One `ceems_exporter` reads the real /proc and the SLURM job cgroups (`--path.cgroupfs`, the
services script's bind mounts), Prometheus evaluates the rules `rule_spec` describes, the API
server reads the real `sacct` (and slurmrestd as a second cluster), and `ceems_lb` stands in
front of Prometheus with ownership from the API server's store.
"""

from __future__ import annotations

import argparse
import fcntl
import math
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import quote

from ceems.cli.demo_stack import (
    ADMIN,
    COUNTRY,
    SCRAPE_JOBS,
    Process,
    Services,
    StackOptions,
    free_port,
    print_up_to_api,
)
from ceems.sim.node import NodeSpec, SimulatedNode
from ceems.sim.prometheus import PrometheusNotFoundError
from ceems.sim.workload import Workload

# Shared with tests/slurm_service.py: one SLURM per machine (ports 6817-6819, /run/munge,
# /etc/slurm), so whoever runs one holds this lock.
SLURM_LOCK = Path("/var/tmp/ceems-slurm.lock")
DEFAULT_SERVICES_DIR = Path("/var/tmp/ceems-services")  # as scripts/services.sh
SERVICES_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "services.sh"
SLURM_BIN = Path("/usr/bin")  # Debian's sacct, sacctmgr, sbatch
JWT_KEY_FILE = Path("/etc/slurm/jwt_hs256.key")  # written by scripts/services.sh
SLURM_CLUSTER = "testcluster"  # ClusterName in the script's slurm.conf
RESTD_CLUSTER = f"{SLURM_CLUSTER}-restd"  # the same jobs, read through slurmrestd
# Users and accounts scripts/services.sh creates.
ACCOUNTS = {"alice": "research", "bob": "research", "carol": "physics"}


def slurm_env() -> dict[str, str]:
    """This process's environment without SLURM_* variables (we may run inside a job)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}


def short_hostname() -> str:
    """This machine's name as `hostname -s` gives it: the SLURM node's name."""
    return socket.gethostname().split(".")[0]


@dataclass(frozen=True, slots=True)
class RealSlurm:
    """A SLURM started by `scripts/services.sh start slurm`: its state and its job cgroups."""

    state_dir: Path  # the script's CEEMS_SERVICES_DIR
    cgroup_mountpoint: Path
    restd_port: int
    node: str = field(default_factory=short_hostname)
    cluster_name: str = SLURM_CLUSTER
    jwt_key_file: Path = JWT_KEY_FILE
    bin_dir: Path = SLURM_BIN

    @classmethod
    def from_state_dir(cls, state_dir: Path) -> RealSlurm:
        """What the services script wrote under `state_dir/slurm` when it started SLURM."""
        slurm = state_dir / "slurm"
        try:
            mountpoint = (slurm / "cgroup_mountpoint").read_text().strip()
            port = int((slurm / "port").read_text())
        except (OSError, ValueError) as err:
            raise RuntimeError(
                f"no SLURM started by scripts/services.sh under {state_dir}: {err}"
            ) from err
        return cls(state_dir, Path(mountpoint), port)

    @property
    def restd_url(self) -> str:
        """slurmrestd's base URL (rest_auth/jwt)."""
        return f"http://127.0.0.1:{self.restd_port}"

    @property
    def cgroup_version(self) -> str:
        """v1 on a hybrid host (controllers bound one by one under the mountpoint), else v2."""
        return "v1" if (self.cgroup_mountpoint / "cpuacct").is_dir() else "v2"


@dataclass(slots=True)
class HostLoad(Workload):
    """The real machine's CPU and memory utilisation, so that simulated power follows it."""

    procfs: Path = Path("/proc")
    _last: tuple[int, int] | None = field(init=False, default=None)

    def step(self, dt_s: float) -> None:
        """Busy fraction of all CPUs since the last step; memory in use from MemAvailable."""
        fields = [int(v) for v in (self.procfs / "stat").read_text().split("\n", 1)[0].split()[1:]]
        # user nice system idle iowait irq softirq steal (guest time is already in user)
        total, idle = sum(fields[:8]), fields[3] + fields[4]
        if self._last is not None and total > self._last[0]:
            busy = (total - self._last[0]) - (idle - self._last[1])
            self.cpu = min(1.0, max(0.0, busy / (total - self._last[0])))
        self._last = (total, idle)
        meminfo = {}
        for line in (self.procfs / "meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            meminfo[name] = int(rest.split()[0]) if rest.split() else 0
        if meminfo.get("MemTotal"):
            used = 1 - meminfo.get("MemAvailable", 0) / meminfo["MemTotal"]
            self.memory = min(1.0, max(0.0, used))


def power_node(root: Path, hostname: str, cpus: int, procfs: Path = Path("/proc")) -> SimulatedNode:
    """Simulated RAPL (one package and its DRAM), hwmon and IPMI for a node of `cpus` CPUs,
    loaded as `procfs` says the machine is."""
    spec = NodeSpec(
        hostname=hostname, sockets=1, cores_per_socket=cpus, threads_per_core=1,
        package_idle_w=15.0, package_max_w=15.0 + 10.0 * cpus,
        dram_idle_w=2.0, dram_max_w=8.0, other_w=40.0,
    )  # fmt: skip
    node = SimulatedNode(root, spec)
    node.workload = HostLoad(0, cpu=0.0, memory=0.0, procfs=procfs)
    node.workload.step(0.0)  # the baseline the first tick's load is measured from
    return node


def run_slurm(*args: str, user: str | None = None, timeout_s: float = 30) -> str:
    """A SLURM command (as `user` through runuser when given); stdout, or RuntimeError."""
    argv = ["runuser", "-u", user, "--", *args] if user else list(args)
    done = subprocess.run(argv, env=slurm_env(), capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def submit_job(
    user: str,
    script: str,
    *,
    account: str = "",
    ntasks: int = 1,
    mem_mb: int = 100,
    time_limit_min: int = 5,
    name: str = "ceems-demo",
) -> str:
    """sbatch `script` (a shell command line) as `user` in `account` (default: theirs).

    Output goes to /dev/null and the job runs in /tmp: a leftover slurm-<id>.out owned by
    someone else would fail the job. One CPU per task. Returns the job id.
    """
    out = run_slurm(
        "sbatch", "--parsable", "-o", "/dev/null", "--chdir=/tmp",
        f"--account={account or ACCOUNTS[user]}", f"--job-name={name}",
        f"--ntasks={ntasks}", "--cpus-per-task=1", f"--mem={mem_mb}M",
        f"--time={time_limit_min}", "--wrap", script,
        user=user,
    )  # fmt: skip
    return out.strip().split(";")[0]


def burn(seconds: float) -> str:
    """A command line that keeps one CPU busy for `seconds` (dash has no $SECONDS)."""
    return f"timeout {seconds:g} sh -c 'while :; do :; done'"


@dataclass
class RealSlurmStack(Services):
    """The real components monitoring the real SLURM `slurm`, with data under `data_dir`."""

    slurm: RealSlurm = field(kw_only=True)
    with_restd: bool = field(default=True, kw_only=True)  # slurmrestd as a second cluster
    node: SimulatedNode = field(init=False)
    exporter: Process = field(init=False)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _ticker: threading.Thread | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.node = power_node(self.data_dir / "power", self.slurm.node, os.cpu_count() or 1)
        self.ports["exporter"] = free_port()
        self.exporter = self._exporter()

    def scrape_targets(self) -> dict[str, list[tuple[str, str]]]:
        """The one exporter, as an IPMI + RAPL node."""
        return {SCRAPE_JOBS["ipmi"]: [(self.slurm.node, f"127.0.0.1:{self.ports['exporter']}")]}

    def api_env(self) -> dict[str, str] | None:
        """Without SLURM_* variables: `sacct` run from inside a job would see only that job."""
        return slurm_env()

    def start(self) -> None:
        """Start the power simulation and every component, in dependency order."""
        self._ticker = threading.Thread(
            target=self.node.run, args=(self._stop, 1.0), name="sim-power", daemon=True
        )
        self._ticker.start()
        self.exporter.start()
        if not self.options.with_prometheus:
            return
        self.start_prometheus()
        if self.options.with_services:
            self.start_services()

    def restart(self, name: str, kill: bool = True) -> None:
        """Stop a component (SIGKILL by default) and start it again: `exporter`,
        `prometheus`, `api_server` or `lb`."""
        if not self.restart_service(name, kill):
            assert name == "exporter", f"unknown component {name}"
            self.exporter.stop(kill=kill)
            self.exporter.start()

    def stop(self) -> None:
        """Stop every component and the power simulation; SLURM and its jobs stay."""
        self.stop_services()
        self.exporter.stop()
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=10)

    # ---- components -------------------------------------------------------------------

    def _exporter(self) -> Process:
        # /proc stays the real one (jobs' processes, node CPU time and memory); only sysfs,
        # where RAPL is read, is the simulated node's. No GPU mapping on this machine.
        interval = f"{max(1, int(self.options.scrape_s))}"
        port = self.ports["exporter"]
        flags = [
            f"--web.listen-address=127.0.0.1:{port}",
            f"--path.sysfs={self.node.sysfs}",
            f"--path.cgroupfs={self.slurm.cgroup_mountpoint}",
            f"--collector.cgroups.force-version={self.slurm.cgroup_version}",
            f"--collector.hostname={self.slurm.node}",
            "--collector.slurm",
            "--collector.gpu.type=nogpu",
            "--collector.ipmi_dcmi",
            f"--collector.ipmi_dcmi.cmd={self.node.ipmi_command}",
            f"--collector.ipmi_dcmi.interval={interval}",
            "--collector.emissions",
            "--collector.emissions.provider=owid",
            f"--collector.emissions.country-code={COUNTRY}",
        ]
        return Process(
            f"exporter {self.slurm.node}",
            [sys.executable, "-m", "ceems.exporter.cli", *flags],
            self.data_dir / "exporter.log",
            f"http://127.0.0.1:{port}/metrics",
        )

    def api_clusters(self) -> list[dict[str, object]]:
        """The real sacct (the server runs as root, so `sacct --allusers` lists everyone's
        jobs) and, with `with_restd`, slurmrestd with tokens minted from SLURM's JWT key."""
        clusters: list[dict[str, object]] = [
            {
                "id": SLURM_CLUSTER,
                "manager": "slurm",
                "updaters": ["tsdb"],
                "cli": {"path": str(self.slurm.bin_dir)},
            }
        ]
        if self.with_restd:
            clusters.append(
                {
                    "id": RESTD_CLUSTER,
                    "manager": "slurm",
                    "updaters": ["tsdb"],
                    "web": {"url": self.slurm.restd_url},
                    "extra_config": {
                        "source": "slurmrestd",
                        "jwt_key_file": str(self.slurm.jwt_key_file),
                        "cluster_name": self.slurm.cluster_name,
                    },
                }
            )
        return clusters


# ---- `ceems demo --slurm real` ---------------------------------------------------------


def example_job(user: str, seconds: float) -> str:
    """What each user runs in the demo: alice burns one CPU; bob runs two tasks with srun,
    one burning and one sleeping (50% of his allocation); carol burns one CPU and fails."""
    if user == "bob":
        task = f"if [ $SLURM_PROCID = 0 ]; then {burn(seconds)}; else sleep {seconds:g}; fi"
        return f"srun -n2 sh -c {shlex.quote(task)}; true"
    if user == "carol":
        return f"{burn(seconds)}; exit 3"
    return f"{burn(seconds)}; true"


@dataclass
class ExampleJobs:
    """Keeps one job of each user queued or running until stopped; then cancels them."""

    seed: int
    min_s: float
    max_s: float
    jobs: dict[str, str] = field(default_factory=dict)  # user -> their latest job id
    submitted: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def submit_missing(self) -> None:
        """Submit a job for every user whose last one has left the queue."""
        active = set(run_slurm("squeue", "-h", "-o", "%A").split())
        for user in ACCOUNTS:
            if self.jobs.get(user) in active:
                continue
            seconds = round(self._rng.uniform(self.min_s, self.max_s))
            ntasks = 2 if user == "bob" else 1
            job = submit_job(
                user, example_job(user, seconds), ntasks=ntasks,
                time_limit_min=math.ceil(seconds / 60) + 1,
            )  # fmt: skip
            self.jobs[user] = job
            self.submitted.append(job)

    def start(self) -> None:
        """Submit the first jobs now, then keep going every 2 s in a thread."""
        self.submit_missing()
        self._thread = threading.Thread(target=self._run, name="example-jobs", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(2.0):
            try:
                self.submit_missing()
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                print(f"ceems demo: submitting example jobs: {err}", file=sys.stderr)

    def stop(self) -> None:
        """Stop submitting and cancel the jobs still queued or running."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.submitted:
            subprocess.run(
                ["scancel", *self.submitted], env=slurm_env(), capture_output=True, timeout=30
            )


def services(action: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    """`scripts/services.sh ACTION slurm` with its state in `state_dir`."""
    env = {**slurm_env(), "CEEMS_SERVICES_DIR": str(state_dir)}
    return subprocess.run(
        [str(SERVICES_SCRIPT), action, "slurm"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def lock_slurm() -> IO[str] | None:
    """The machine-wide SLURM lock, or None when another session holds it."""
    handle = SLURM_LOCK.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def run_real_demo(options: argparse.Namespace) -> int:
    """`ceems demo --slurm real`: this machine's SLURM (started when needed), example jobs
    of alice, bob and carol, the stack; until Ctrl-C or --duration."""
    low, high = options.job_duration
    if not 0 < low <= high:
        return _fail("--job-duration needs 0 < MIN <= MAX", 2)
    if options.scrape_interval < 1 or options.update_interval < options.scrape_interval:
        return _fail("--scrape-interval must be >= 1 and --update-interval >= --scrape-interval", 2)
    if os.geteuid() != 0:
        return _fail(
            "--slurm real needs root: it starts SLURM with scripts/services.sh and submits "
            "jobs as alice, bob and carol (try: sudo .venv/bin/ceems demo --slurm real)"
        )
    if not SERVICES_SCRIPT.is_file():
        return _fail(f"--slurm real needs the repository's {SERVICES_SCRIPT}")
    lock = lock_slurm()
    if lock is None:
        return _fail(
            f"another session (a test run or another demo) is using this machine's SLURM "
            f"({SLURM_LOCK} is locked); try again when it has finished"
        )
    state_dir = Path(os.environ.get("CEEMS_SERVICES_DIR") or DEFAULT_SERVICES_DIR)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started_slurm = False
    stack: RealSlurmStack | None = None
    jobs: ExampleJobs | None = None
    data_dir: Path = options.data_dir or Path(tempfile.mkdtemp(prefix="ceems-demo-real-"))
    try:
        if services("status", state_dir).returncode != 0:
            print(
                f"ceems demo: starting SLURM (scripts/services.sh start slurm, state in "
                f"{state_dir}; the first run installs its packages)...",
                flush=True,
            )
            started_slurm = True
            done = services("start", state_dir)
            if done.returncode != 0:
                return _fail(f"scripts/services.sh start slurm failed:\n{done.stdout}{done.stderr}")
        slurm = RealSlurm.from_state_dir(state_dir)
        stack = RealSlurmStack(
            data_dir,
            StackOptions(options.scrape_interval, options.update_interval, options.prometheus),
            slurm=slurm,
        )
        try:
            stack.start()
        except PrometheusNotFoundError as err:
            return _fail(str(err))
        except RuntimeError as err:  # a component did not come up
            return _fail(f"{err} (logs in {data_dir})")
        jobs = ExampleJobs(options.seed, low, high)
        jobs.start()
        print_real_banner(stack, jobs, started_slurm)
        stop.wait(options.duration or None)
    finally:
        if jobs is not None:
            jobs.stop()
        if stack is not None:
            stack.stop()
        if started_slurm:
            services("stop", state_dir)
        lock.close()
        print(f"ceems demo: stopped; data kept in {data_dir}", flush=True)
    return 0


def _fail(message: str, code: int = 1) -> int:
    print(f"ceems demo: {message}", file=sys.stderr)
    return code


def print_real_banner(stack: RealSlurmStack, jobs: ExampleJobs, started_slurm: bool) -> None:
    """What runs, what to open and try."""
    slurm = stack.slurm
    print(
        f"ceems demo: real SLURM cluster {slurm.cluster_name} (node {slurm.node}, "
        f"{os.cpu_count()} CPUs, state in {slurm.state_dir}); data in {stack.data_dir}"
    )
    print(
        f"  exporter {slurm.node} (real /proc, job cgroups under {slurm.cgroup_mountpoint}, "
        f"simulated RAPL and IPMI): {stack.exporter.url}"
    )
    shown = ", ".join(f"{u} job {j} ({ACCOUNTS[u]})" for u, j in jobs.jobs.items())
    print(f"  example jobs, resubmitted as they end: {shown}  (squeue; sacct -a)")
    if not print_up_to_api(stack):
        return
    sources = f"sacct as {SLURM_CLUSTER}"
    if stack.with_restd:
        sources += f", slurmrestd {slurm.restd_url} as {RESTD_CLUSTER}"
    print(f"  api server: {stack.api_url}  ({sources}; SQLite store in {stack.data_dir / 'api'})")
    print(f"  ceems_lb:   {stack.lb_url}  (in front of Prometheus)")
    print(f"The API server fetches jobs every {stack.options.update_interval_s:g} s; try:")
    user, other = "alice", "carol"
    print(f"  curl -s -H 'X-Grafana-User: {user}' '{stack.api_url}/api/v1/units?running'")
    print(f"  curl -s -H 'X-Grafana-User: {ADMIN}' '{stack.api_url}/api/v1/usage/current/admin'")
    config = shlex.quote(str(stack.cacct_config))
    cacct = shlex.quote(str(Path(sys.executable).parent / "cacct"))
    print(f"  {cacct} --config {config} --user {user} --starttime now-1h")
    headers = f"-H 'X-Grafana-User: {user}' -H 'X-Ceems-Cluster-Id: {SLURM_CLUSTER}'"
    metric = "ceems_compute_unit_cpu_user_seconds_total"
    for job_user, verdict in ((user, "allowed"), (other, "refused with 403")):
        query = quote(f'rate({metric}{{uuid="{jobs.jobs[job_user]}"}}[1m])')
        print(f"  through the LB, {user} asks for {job_user}'s job ({verdict}):")
        print(f"    curl -s {headers} '{stack.lb_url}/api/v1/query?query={query}'")
    tail = " and SLURM, which the demo started" if started_slurm else "; SLURM keeps running"
    print(f"Ctrl-C stops everything{tail}.", flush=True)
