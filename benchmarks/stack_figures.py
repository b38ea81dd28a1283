"""Whole-stack figures: exporter CPU per scrape, API update cycle, LB overhead, series per unit.

- Exporter CPU time per scrape per node: a DemoStack's exporters (simulated SLURM cluster,
  no Prometheus) scraped N times each over keep-alive connections; CPU time is the exporter
  processes' utime+stime from /proc/<pid>/stat over the scrapes, divided by N. The CPU the
  exporters spend meanwhile in the background (samplers, measured idle beforehand) is shown
  next to it, as is that of their children (the fake `ipmi-dcmi`).
- API server cycle time for 10,000 units: one writer-loop cycle (`WriterLoop.run_once`) over a
  15-minute window: the real SLURM manager running the simulated `sacct`/`sacctmgr` on a job
  log of N jobs, the `tsdb` updater's default queries against a real Prometheus holding the
  recording-rule series of those jobs (backfilled with promtool: CPU and memory usage, power
  with its provenance labels, emissions; one series each per job, 15 s resolution), and the
  SQLite store. The first cycle writes into an empty store; the next ones store the same
  units again, as each cycle does for the jobs still running (the figure).
- LB overhead: lb_overhead.py's figures, from its `--json` file (`--lb-json`) or by running it.
- Prometheus series per unit: a DemoStack with Prometheus and the generated rules; once every
  unit's recording-rule series exist, `count by (uuid) ({uuid=~".+"})` averaged over units.

No targets are set for these figures (none was given); they are reported as measured.

    .venv/bin/python benchmarks/stack_figures.py [--scrapes 200] [--units 10000] [--cycles 3]
        [--lb-json FILE | --lb-units 2000 --lb-rounds 200] [--only exporter,api,lb,series]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar

import httpx
import lb_overhead
from _records import Figure, add_json_option, read_json, write_json

from ceems.api.config import ApiServerConfig, ClusterConfig
from ceems.api.managers.protocol import ResourceManager
from ceems.api.managers.registry import build_managers
from ceems.api.models import Project, Unit, User
from ceems.api.store.engine import create_store_engine
from ceems.api.store.migrate import migrate
from ceems.api.store.writes import StoreWriter
from ceems.api.updaters.protocol import Updater
from ceems.api.updaters.registry import build_updaters
from ceems.api.writer import WindowStore, WriterLoop
from ceems.cli.demo_stack import DemoStack, StackOptions
from ceems.sim.cluster import ClusterSpec
from ceems.sim.prometheus import PrometheusProcess
from ceems.sim.slurm import SimJob, append_jobs, write_shims

PARTS = ("exporter", "api", "lb", "series")
CLOCK_TICK_S = 1 / os.sysconf("SC_CLK_TCK")
# Jobs neither end nor arrive while the stack is measured: the same units throughout.
STEADY_CLUSTER = ClusterSpec(nodes=4, jobs_per_hour=0.0, min_job_s=7200.0, max_job_s=7200.0)
T = TypeVar("T")
SETTLE_POLLS = 5  # series counts unchanged over this many polls, one per scrape interval


# ---- (a) exporter CPU time per scrape ------------------------------------------------------


@dataclass(frozen=True)
class CpuTimes:
    """A process's CPU seconds: its own (all threads) and its reaped children's."""

    own_s: float
    children_s: float

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.own_s - other.own_s, self.children_s - other.children_s)


def cpu_times(pid: int) -> CpuTimes:
    """utime+stime and cutime+cstime of `pid`, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may have spaces
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return CpuTimes((utime + stime) * CLOCK_TICK_S, (cutime + cstime) * CLOCK_TICK_S)


@dataclass(frozen=True)
class ExporterCpu:
    """Per node: CPU ms per scrape (own, background share, children), series, units."""

    scrapes: int
    per_node: dict[str, tuple[float, float, float]]
    series: dict[str, int]
    units: dict[str, int]

    @property
    def mean_ms(self) -> float:
        """Mean over nodes of the exporter's own CPU ms per scrape."""
        return statistics.mean(own for own, _, _ in self.per_node.values())


def exporter_cpu(work: Path, scrapes: int, nodes: int, idle_s: float = 5.0) -> ExporterCpu:
    """Scrape every exporter of a DemoStack `scrapes` times; CPU per scrape per node."""
    stack = DemoStack(work, StackOptions(scrape_s=5.0, with_prometheus=False), _cluster(nodes))
    stack.start()
    try:
        stack.cluster.seed_jobs()  # done by start() only once Prometheus is up
        pids = {name: _pid(process.proc) for name, process in stack.exporters.items()}
        urls = {name: process.url for name, process in stack.exporters.items()}
        clients = {name: httpx.Client(timeout=30) for name in urls}
        series: dict[str, int] = {}
        units: dict[str, int] = {}
        for name, url in urls.items():
            for _ in range(5):  # warm-up: connections, first readings
                body = clients[name].get(url).text
            samples = [line for line in body.splitlines() if line and line[0] != "#"]
            series[name] = len(samples)
            units[name] = len({_label(line, "uuid") for line in samples} - {""})
        before = {name: cpu_times(pid) for name, pid in pids.items()}
        time.sleep(idle_s)
        idle = {name: cpu_times(pid) - before[name] for name, pid in pids.items()}
        before = {name: cpu_times(pid) for name, pid in pids.items()}
        started = time.monotonic()
        for _ in range(scrapes):
            for name, url in urls.items():
                response = clients[name].get(url)
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code}")
        elapsed = time.monotonic() - started
        after = {name: cpu_times(pid) for name, pid in pids.items()}
        for client in clients.values():
            client.close()
    finally:
        stack.stop()
    per_node = {}
    for name in pids:
        used = after[name] - before[name]
        background = idle[name].own_s / idle_s * elapsed
        per_node[name] = (
            used.own_s / scrapes * 1e3,
            background / scrapes * 1e3,
            used.children_s / scrapes * 1e3,
        )
    return ExporterCpu(scrapes, per_node, series, units)


def _cluster(nodes: int) -> ClusterSpec:
    """A cluster whose jobs neither end nor arrive while it is measured."""
    return replace(STEADY_CLUSTER, nodes=nodes)


def _pid(process: subprocess.Popen[bytes] | None) -> int:
    if process is None:
        raise RuntimeError("component not started")
    return process.pid


def _label(line: str, name: str) -> str:
    marker = f'{name}="'
    at = line.find(marker)
    if at < 0:
        return ""
    start = at + len(marker)
    return line[start : line.index('"', start)]


# ---- (b) API server update cycle -----------------------------------------------------------

WINDOW = timedelta(minutes=15)  # CEEMS' default update_interval
STEP_S = 15
NODES = 500
USERS = 200
ACCOUNTS = 40
POWER_LABELS = 'attribution="cpu_time+memory",power_source="ipmi+rapl",pue="1"'


def cycle_jobs(count: int, start_s: int, end_s: int) -> list[SimJob]:
    """`count` jobs all active in [start_s, end_s): 70 % running through the window, 20 %
    started inside it, 10 % ended inside it."""
    jobs = []
    span = end_s - start_s
    for i in range(count):
        kind = i % 10
        if kind < 7:
            begin, end, state = start_s - 600 - (i * 37) % 7200, 0, "RUNNING"
        elif kind < 9:
            begin, end, state = start_s + 30 + (i * 13) % (span - 120), 0, "RUNNING"
        else:
            begin = start_s - 300 - (i * 7) % 3600
            end, state = start_s + 60 + (i * 17) % (span - 120), "COMPLETED"
        jobs.append(
            SimJob(
                job_id=1_000_000 + i, user=f"user{i % USERS}", account=f"acct{i % ACCOUNTS}",
                submit_ms=(begin - 30) * 1000, start_ms=begin * 1000, end_ms=end * 1000,
                state=state, cpus=1 + i % 16, nodes=(f"node{i % NODES}",), uid=10_000 + i % USERS,
                name=f"bench-{i}",
            )
        )  # fmt: skip
    return jobs


def write_series(out: TextIO, jobs: Sequence[SimJob], first_s: int, end_s: int) -> int:
    """The recording-rule series the `tsdb` updater queries, as OpenMetrics; returns samples."""
    families: tuple[tuple[str, str, Callable[[int], float]], ...] = (
        ("uuid:ceems_cpu_usage:ratio_irate", "", lambda i: 0.05 + (i % 90) / 100),
        ("uuid:ceems_cpu_memory_usage:ratio", "", lambda i: 0.1 + (i % 80) / 100),
        ("uuid:ceems_host_power_watts:pue", POWER_LABELS, lambda i: 20.0 + i % 200),
        ("uuid:ceems_host_emissions_g_s:pue", 'provider="owid"', lambda i: 0.001 * (1 + i % 50)),
    )
    samples = 0
    for name, extra, value in families:
        out.write(f"# TYPE {name} gauge\n")
        for i, job in enumerate(jobs):
            node = job.nodes[0]
            labels = f'hostname="{node}",instance="{node}:9010",uuid="{job.job_id}"'
            if extra:
                labels = f"{extra},{labels}"
            begin = max(first_s, -(-job.start_ms // 1000 // STEP_S) * STEP_S)
            stop = min(end_s, job.end_ms // 1000) if job.end_ms else end_s
            text = f"{value(i):g}"
            lines = [f"{name}{{{labels}}} {text} {t}\n" for t in range(begin, stop + 1, STEP_S)]
            out.writelines(lines)
            samples += len(lines)
    out.write("# EOF\n")
    return samples


class Stopwatch:
    """Seconds spent per stage, summed over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block into `name`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def timed(self, name: str, call: Callable[[], T]) -> T:
        """`call()`, timed into `name`."""
        with self.stage(name):
            return call()


@dataclass
class TimedManager:
    """A resource manager whose calls are timed."""

    inner: ResourceManager
    watch: Stopwatch

    def fetch_units(self, start: datetime, end: datetime) -> list[Unit]:
        """Timed `fetch_units` (sacct)."""
        return self.watch.timed("sacct", lambda: self.inner.fetch_units(start, end))

    def fetch_users_projects(self, now: datetime) -> tuple[list[User], list[Project]]:
        """Timed `fetch_users_projects` (sacctmgr)."""
        return self.watch.timed("sacctmgr", lambda: self.inner.fetch_users_projects(now))


@dataclass
class TimedUpdater:
    """An updater whose calls are timed; keeps the last units it returned."""

    inner: Updater
    watch: Stopwatch
    last: list[Unit] = field(default_factory=list)

    def update(self, start: datetime, end: datetime, units: Sequence[Unit]) -> list[Unit]:
        """Timed `update` (TSDB queries)."""
        self.last = self.watch.timed("tsdb", lambda: self.inner.update(start, end, units))
        return self.last


@dataclass
class TimedStore:
    """The store writer, timed. With `forget`, it reports no checkpoint, so the loop stores the
    same window again (as a later cycle stores the jobs still running), and commits it as
    ending 1 ms after the checkpoint, which the store requires."""

    inner: StoreWriter
    watch: Stopwatch
    forget: bool = False

    def last_update(self, cluster_id: str) -> int | None:
        """The checkpoint, or None when forgetting."""
        return None if self.forget else self.inner.last_update(cluster_id)

    def commit_update(
        self,
        cluster_id: str,
        window_end_ms: int,
        units: list[Unit],
        users: list[User] | None,
        projects: list[Project] | None,
        now_ms: int,
    ) -> None:
        """Timed commit of one window (when forgetting, its end just past the checkpoint)."""
        if self.forget:
            window_end_ms = max(window_end_ms, (self.inner.last_update(cluster_id) or 0) + 1)
        with self.watch.stage("store"):
            self.inner.commit_update(cluster_id, window_end_ms, units, users, projects, now_ms)

    def sync_admins(self, source: str, names: list[str]) -> None:
        """As the store writer."""
        self.inner.sync_admins(source, names)

    def purge(self, retention: timedelta, now_ms: int) -> object:
        """Timed retention clean-up."""
        with self.watch.stage("purge"):
            return self.inner.purge(retention, now_ms)

    def backup(self, dest_dir: Path, now: datetime) -> Path:
        """As the store writer."""
        return self.inner.backup(dest_dir, now)


@dataclass(frozen=True)
class ApiCycle:
    """Seconds per cycle and per stage; the first cycle into an empty store apart."""

    units: int
    samples: int
    first_s: float
    cycles_s: list[float]
    stages: dict[str, float]  # of the steady cycles, per cycle
    with_metrics: int

    @property
    def cycle_s(self) -> float:
        """Median of the steady cycles (the first one where there are no others)."""
        return statistics.median(self.cycles_s) if self.cycles_s else self.first_s


def api_cycle(work: Path, units: int, cycles: int) -> ApiCycle:
    """Time writer-loop cycles over `units` jobs against a real Prometheus."""
    promtool = shutil.which("promtool")
    if promtool is None:
        sys.exit("promtool not found: scripts/services.sh install prometheus")
    end_s = int(time.time()) // 60 * 60 - 60
    start_s = end_s - int(WINDOW.total_seconds())
    jobs = cycle_jobs(units, start_s, end_s)
    slurm = work / "slurm"
    slurm.mkdir(parents=True)
    append_jobs(slurm / "jobs.jsonl", jobs)
    write_shims(slurm / "bin", slurm / "jobs.jsonl")
    source = work / "series.om"
    with source.open("w") as out:
        samples = write_series(out, jobs, start_s - 60, end_s)
    tsdb = work / "prometheus" / "tsdb"
    tsdb.mkdir(parents=True)
    started = time.monotonic()
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)],
        check=True, capture_output=True,
    )  # fmt: skip
    print(f"  backfilled {samples:,} samples in {time.monotonic() - started:.1f} s", flush=True)
    source.unlink()
    config_file = work / "prometheus.yml"
    config_file.write_text(f"global: {{scrape_interval: {STEP_S}s, evaluation_interval: 15s}}\n")
    prometheus = PrometheusProcess(config_file, work / "prometheus", lb_overhead.free_port())
    prometheus.start()
    try:
        return _run_cycles(work, prometheus.url, slurm / "bin", units, samples, end_s, cycles)
    finally:
        prometheus.stop()


def _run_cycles(
    work: Path, tsdb_url: str, bin_dir: Path, units: int, samples: int, end_s: int, cycles: int
) -> ApiCycle:
    config = ApiServerConfig.model_validate(
        {
            "ceems_api_server": {
                "data": {"path": str(work / "api"), "update_interval": "15m"},
            },
            "clusters": [
                {"id": "bench", "manager": "slurm", "updaters": ["tsdb"],
                 "cli": {"path": str(bin_dir)}},
            ],
            "updaters": [{"id": "tsdb", "updater": "tsdb", "web": {"url": tsdb_url}}],
        }
    )  # fmt: skip
    clusters: list[ClusterConfig] = config.clusters
    watch = Stopwatch()
    managers = {k: TimedManager(m, watch) for k, m in build_managers(clusters).items()}
    updaters = {k: TimedUpdater(u, watch) for k, u in build_updaters(config.updaters).items()}
    engine = create_store_engine(config.ceems_api_server.data)
    migrate(engine)
    writer = StoreWriter(engine)
    end = datetime.fromtimestamp(end_s, tz=UTC)
    times: list[float] = []
    steady: dict[str, float] = {}
    try:
        for cycle in range(cycles):
            store: WindowStore = TimedStore(writer, watch, forget=cycle > 0)
            loop = WriterLoop(config, store, managers, updaters, clock=lambda: end)
            watch.seconds.clear()
            started = time.perf_counter()
            stored = loop.run_once()
            times.append(time.perf_counter() - started)
            if stored != units:
                raise RuntimeError(f"cycle stored {stored} units, expected {units}")
            stages = ", ".join(f"{k} {v:.2f} s" for k, v in watch.seconds.items())
            print(f"  cycle {cycle + 1}: {times[-1]:.2f} s ({stages})", flush=True)
            if cycle > 0:
                for name, seconds in watch.seconds.items():
                    steady[name] = steady.get(name, 0.0) + seconds / (cycles - 1)
    finally:
        writer.close()
        engine.dispose()
        for updater in updaters.values():
            close = getattr(updater.inner, "close", None)
            if close is not None:
                close()
    last = updaters["tsdb"].last
    with_metrics = sum(
        1
        for unit in last
        if unit.metrics.get("avg_cpu_usage") and unit.metrics.get("total_cpu_energy_usage_kwh")
    )
    return ApiCycle(units, samples, times[0], times[1:], steady, with_metrics)


# ---- (c) LB overhead -------------------------------------------------------------------------


def lb_figures(lb_json: Path | None, units: int, rounds: int) -> list[Figure]:
    """lb_overhead.py's figures: read from its --json file, or measured now."""
    if lb_json is not None:
        _, figures = read_json(lb_json)
        return figures
    return lb_overhead.figures(lb_overhead.measure(units, rounds))


# ---- (d) Prometheus series per unit ----------------------------------------------------------


@dataclass(frozen=True)
class SeriesCount:
    """Series per unit: all, and those made by recording rules (names with a colon)."""

    total: dict[str, int]
    rules: dict[str, int]

    @property
    def mean(self) -> float:
        """Average series per unit."""
        return statistics.mean(self.total.values())


def series_per_unit(work: Path, nodes: int, scrape_s: float = 2.0) -> SeriesCount:
    """Count each unit's series in a running DemoStack once every unit has its rule series."""
    stack = DemoStack(work, StackOptions(scrape_s=scrape_s, with_services=False), _cluster(nodes))
    stack.start()
    try:
        with httpx.Client(base_url=stack.prometheus_url, timeout=30) as client:
            deadline = time.monotonic() + 120
            history: list[tuple[dict[str, int], dict[str, int]]] = []
            while True:
                time.sleep(scrape_s)
                total = _count_by_uuid(client, '{uuid=~".+"}')
                rules = _count_by_uuid(client, '{uuid=~".+", __name__=~".+:.+"}')
                history.append((total, rules))
                recent = history[-SETTLE_POLLS:]
                settled = (
                    len(recent) == SETTLE_POLLS
                    and total
                    and set(rules) == set(total)
                    and all(r == recent[0] for r in recent)
                )
                if settled:
                    return SeriesCount(total, rules)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"series per unit did not settle: {history[-1]}")
    finally:
        stack.stop()


def _count_by_uuid(client: httpx.Client, selector: str) -> dict[str, int]:
    response = client.get("/api/v1/query", params={"query": f"count by (uuid) ({selector})"})
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return {r["metric"]["uuid"]: int(r["value"][1]) for r in result}


# ---- main --------------------------------------------------------------------------------------


def exporter_figure(work: Path, scrapes: int, nodes: int) -> Figure:
    """(a), printed per node."""
    print(f"exporter CPU: {nodes} nodes, {scrapes} scrapes each", flush=True)
    cpu = exporter_cpu(work, scrapes, nodes)
    print(f"  {'node':12} {'units':>5} {'series':>6} {'CPU ms/scrape':>13} "
          f"{'background':>10} {'children':>8}")  # fmt: skip
    for name, (own, background, children) in cpu.per_node.items():
        print(f"  {name:12} {cpu.units[name]:>5} {cpu.series[name]:>6} {own:>13.2f} "
              f"{background:>10.2f} {children:>8.2f}")  # fmt: skip
    owns = [own for own, _, _ in cpu.per_node.values()]
    background = statistics.mean(b for _, b, _ in cpu.per_node.values())
    units = sum(cpu.units.values()) / len(owns)
    return Figure(
        "stack: exporter CPU time per scrape per node",
        cpu.mean_ms,
        "ms",
        detail=f"mean of {len(owns)} nodes ({min(owns):.2f}-{max(owns):.2f}), "
        f"{units:.1f} units/node, {scrapes} scrapes; background share {background:.2f} ms",
    )


def api_figure(work: Path, units: int, cycles: int) -> Figure:
    """(b), printed per cycle."""
    print(f"API server cycle: {units:,} units, 15-minute window", flush=True)
    cycle = api_cycle(work, units, cycles)
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in cycle.stages.items())
    print(f"  first cycle (empty store) {cycle.first_s:.2f} s; steady cycle "
          f"{cycle.cycle_s:.2f} s ({stages or 'no steady cycle'}); {cycle.with_metrics:,} of "
          f"{cycle.units:,} units got TSDB metrics")  # fmt: skip
    return Figure(
        f"stack: API server cycle time, {units:,} units",
        cycle.cycle_s,
        "s",
        detail=f"median of {len(cycle.cycles_s) or 1} cycle(s) ({stages}); "
        f"first into an empty store {cycle.first_s:.2f} s; "
        f"{cycle.samples:,} samples in Prometheus",
    )


def lb_stack_figures(lb_json: Path | None, units: int, rounds: int) -> list[Figure]:
    """(c): the LB's added latency and its ratio to Prometheus alone."""
    wanted = {"LB added p50, typical mix", "LB / direct p50, typical mix"}
    found = [f for f in lb_figures(lb_json, units, rounds) if f.name in wanted]
    source = f"from {lb_json}" if lb_json else "measured"
    print(f"LB overhead ({source}): " + "; ".join(f"{f.name} {f.value:.2f}" for f in found))
    return [replace(f, name=f"stack: {f.name}") for f in found]


def series_figure(work: Path, nodes: int) -> Figure:
    """(d), printed with its split."""
    print(f"Prometheus series per unit: DemoStack of {nodes} nodes", flush=True)
    count = series_per_unit(work, nodes)
    rules = statistics.mean(count.rules.values())
    low, high = min(count.total.values()), max(count.total.values())
    print(f"  {len(count.total)} units: {count.mean:.1f} series per unit "
          f"({count.mean - rules:.1f} from exporters, {rules:.1f} from recording rules; "
          f"{low}-{high})")  # fmt: skip
    return Figure(
        "stack: Prometheus series per unit",
        count.mean,
        "",
        detail=f"{len(count.total)} units, {low}-{high} each; {count.mean - rules:.1f} "
        f"exporter + {rules:.1f} recording-rule series",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=200, help="scrapes per exporter")
    parser.add_argument("--nodes", type=int, default=4, help="nodes of the DemoStack")
    parser.add_argument("--units", type=int, default=10_000, help="units of the API cycle")
    parser.add_argument("--cycles", type=int, default=3, help="API cycles (the first apart)")
    parser.add_argument("--lb-json", type=Path, help="lb_overhead.py --json output to reuse")
    parser.add_argument("--lb-units", type=int, default=2000, help="without --lb-json")
    parser.add_argument("--lb-rounds", type=int, default=200, help="without --lb-json")
    parser.add_argument("--only", default=",".join(PARTS), help=f"some of {','.join(PARTS)}")
    add_json_option(parser)
    args = parser.parse_args()
    parts = [p for p in args.only.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(unknown)}")
    if args.cycles < 1 or args.scrapes < 1:
        parser.error("--cycles and --scrapes must be at least 1")
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="ceems-stack-bench-") as tmp:
        work = Path(tmp)
        if "exporter" in parts:
            figures.append(exporter_figure(work / "exporters", args.scrapes, args.nodes))
        if "api" in parts:
            figures.append(api_figure(work / "api", args.units, args.cycles))
        if "lb" in parts:
            figures += lb_stack_figures(args.lb_json, args.lb_units, args.lb_rounds)
        if "series" in parts:
            figures.append(series_figure(work / "series", args.nodes))
    write_json(args.json, "stack_figures", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
