"""Latency that ceems_lb adds in front of Prometheus, and the time to authorise 1,000 uuids.

A real Prometheus holds an hour of series (15 s resolution) for N units (default 2,000) of
many users, and a day of series for one 4-node job; the LB reads ownership from a real API
store. Two query mixes are sent to Prometheus directly and through the LB, interleaved so both
see the same machine state, over keep-alive connections:

- the small-query mix: one-unit panels over the last hour (about 1 ms at Prometheus), where
  the LB's fixed cost shows most;
- the job dashboard mix: what a unit dashboard sends when it opens (CEEMS' "Single Job
  Metrics" and this repository's unit-timeseries dashboard): every panel's queries over the
  job's life (a day), at Grafana's step for that range, plus the host variable.

Targets (issue 6): LB/direct p50 ratio <= 1.15 for typical dashboard queries, authorising a
1,000-uuid query < 10 ms. Both mixes' ratios and the absolute added milliseconds are printed.

    .venv/bin/python benchmarks/lb_overhead.py [--units 2000] [--rounds 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from _records import Figure, add_json_option, write_json

from ceems.api.config import DataConfig
from ceems.api.models import Project, Unit, User
from ceems.api.store.engine import create_store_engine
from ceems.api.store.migrate import migrate
from ceems.api.store.writes import StoreWriter
from ceems.lb.authz import authorise
from ceems.sim.prometheus import PrometheusProcess

CLUSTER = "bench"
USER = "user0"  # owns the first OWNED units
OWNED = 1000
USERS = 50
STEP_S = 15
HOUR_S = 3600
NOW = int(time.time()) // STEP_S * STEP_S
START = NOW - HOUR_S
CPU = "ceems_compute_unit_cpu_user_seconds_total"
CPU_SYSTEM = "ceems_compute_unit_cpu_system_seconds_total"
MEM = "ceems_compute_unit_memory_used_bytes"
NODE = "ceems_ipmi_dcmi_current_watts"
# Recording-rule series the unit dashboards plot (ceems.attribution's rules).
USAGE = "uuid:ceems_cpu_usage:ratio_irate"
POWER = "uuid:ceems_host_power_watts:pue"
# The job whose dashboard is opened: USER's, on 4 nodes, running for the last day.
JOB = "job-24h"
JOB_HOSTS = 4
DAY_S = 86400
JOB_START = NOW - DAY_S
# Grafana's step for a day in a panel of maxDataPoints 1,488 (CEEMS' dashboards): 58 s,
# rounded to 1 m; $__rate_interval = max(4 x scrape interval, step + scrape interval).
JOB_STEP_S = 60
RATE_INTERVAL = f"{max(4 * STEP_S, JOB_STEP_S + STEP_S)}s"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def owner(i: int) -> str:
    return USER if i < OWNED else f"user{1 + i % (USERS - 1)}"


def _job_series(metric: str, value: Callable[[int, int], float]) -> list[str]:
    """A day of `metric` for each host `h` of JOB, `value(s, h)` at `s` seconds in."""
    lines = []
    for h in range(JOB_HOSTS):
        labels = f'hostname="node{h}",instance="node{h}:9010",uuid="{JOB}"'
        steps = range(0, DAY_S + 1, STEP_S)
        lines += [f"{metric}{{{labels}}} {value(s, h)} {JOB_START + s}" for s in steps]
    return lines


def openmetrics(units: int) -> str:
    """An hour of CPU and memory series per unit and power per node, and a day of the dashboard
    job's series, as OpenMetrics (a metric family's lines must be contiguous)."""
    lines = [f"# TYPE {CPU.removesuffix('_total')} counter"]
    steps = range(0, HOUR_S + 1, STEP_S)
    for i in range(units):
        labels = f'hostname="node{i % 64}",instance="node{i % 64}:9010",uuid="{i}"'
        lines += [f"{CPU}{{{labels}}} {0.5 * s * (1 + i % 4)} {START + s}" for s in steps]
    lines += _job_series(CPU, lambda s, h: s * (0.5 + h) + s % 97)
    lines.append(f"# TYPE {CPU_SYSTEM.removesuffix('_total')} counter")
    lines += _job_series(CPU_SYSTEM, lambda s, h: s * 0.05 + s % 13)
    lines.append(f"# TYPE {MEM} gauge")
    for i in range(units):
        labels = f'hostname="node{i % 64}",instance="node{i % 64}:9010",uuid="{i}"'
        lines += [f"{MEM}{{{labels}}} {1e9 + i} {START + s}" for s in steps]
    lines += _job_series(MEM, lambda s, h: 4e9 + h * 1e8 + (s % 3600) * 1e5)
    lines.append(f"# TYPE {USAGE} gauge")
    lines += _job_series(USAGE, lambda s, h: 0.5 + (s % 600) / 1500 + h / 20)
    lines.append(f"# TYPE {POWER} gauge")
    lines += _job_series(POWER, lambda s, h: 180 + (s % 900) / 10 + h)
    lines.append(f"# TYPE {NODE} gauge")
    for n in range(64):
        labels = f'hostname="node{n}",instance="node{n}:9010"'
        lines += [f"{NODE}{{{labels}}} {300 + n} {START + s}" for s in steps]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def build_store(path: Path, units: int) -> None:
    engine = create_store_engine(DataConfig(path=str(path)))
    migrate(engine)
    writer = StoreWriter(engine)
    rows = [
        Unit(
            cluster_id=CLUSTER,
            resource_manager="slurm",
            uuid=str(i),
            name=f"job{i}",
            project=f"p-{owner(i)}",
            groupname="g",
            username=owner(i),
            created_at_ts=START * 1000,
            started_at_ts=START * 1000,
            state="RUNNING",
        )
        for i in range(units)
    ]
    rows.append(
        Unit(
            cluster_id=CLUSTER, resource_manager="slurm", uuid=JOB, name="dashboard-job",
            project=f"p-{USER}", groupname="g", username=USER, created_at_ts=JOB_START * 1000,
            started_at_ts=JOB_START * 1000, state="RUNNING",
        )
    )  # fmt: skip
    names = sorted({owner(i) for i in range(units)})
    users = [User(CLUSTER, "slurm", n, projects=(f"p-{n}",)) for n in names]
    projects = [Project(CLUSTER, "slurm", f"p-{n}", users=(n,)) for n in names]
    writer.commit_update(CLUSTER, NOW * 1000, rows, users, projects, NOW * 1000)
    writer.close()
    engine.dispose()


def start_prometheus(work: Path, units: int) -> PrometheusProcess:
    promtool = shutil.which("promtool")
    if promtool is None:
        sys.exit("promtool not found: scripts/services.sh install prometheus")
    source = work / "series.om"
    source.write_text(openmetrics(units))
    tsdb = work / "prometheus" / "tsdb"
    tsdb.mkdir(parents=True)
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)],
        check=True, capture_output=True,
    )  # fmt: skip
    config = work / "prometheus.yml"
    config.write_text("global: {scrape_interval: 15s}\n")
    prometheus = PrometheusProcess(config, work / "prometheus", free_port())
    prometheus.start()
    return prometheus


def start_lb(
    work: Path, name: str, prometheus_url: str, cache_ttl: str
) -> tuple[subprocess.Popen[bytes], str]:
    config = {
        "ceems_lb": {
            "backends": [{"id": CLUSTER, "tsdb": [{"web": {"url": prometheus_url}}]}],
            "allowed_node_metrics": [NODE],
            "cache_ttl": cache_ttl,
        },
        "ceems_api_server": {"data": {"path": str(work / "store")}},
    }
    path = work / f"{name}.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (work / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "ceems.lb.cli", "--config.file", str(path),
         "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"ceems_lb did not start: {(work / f'{name}.log').read_text()[-2000:]}")
        time.sleep(0.05)


Request = tuple[str, dict[str, str]]


def query_mix() -> dict[str, Request]:
    """What a unit dashboard asks: panels over an hour, an instant table, a variable."""
    one, few = '"7"', "|".join(str(i) for i in range(10, 20))
    hundred = "|".join(str(i) for i in range(100, 200))
    window = {"start": str(START), "end": str(NOW), "step": "15"}
    return {
        "cpu panel (range, 1 unit)": (
            "/api/v1/query_range",
            {"query": f"rate({CPU}{{uuid={one}}}[1m])", **window},
        ),
        "memory panel (range, 1 unit)": (
            "/api/v1/query_range",
            {"query": f"{MEM}{{uuid={one}}}", **window},
        ),
        "cpu table (instant, 10 units)": (
            "/api/v1/query",
            {"query": f'sum by (uuid) (rate({CPU}{{uuid=~"{few}"}}[5m]))', "time": str(NOW)},
        ),
        "project panel (range, sum of 100 units)": (
            "/api/v1/query_range",
            {"query": f'sum(rate({CPU}{{uuid=~"{hundred}"}}[1m]))', **window},
        ),
        "node power (range, allow-listed)": (
            "/api/v1/query_range",
            {"query": f'sum({NODE}{{hostname="node7"}})', **window},
        ),
        "series of a unit": (
            "/api/v1/series",
            {"match[]": f"{CPU}{{uuid={one}}}", "start": str(START), "end": str(NOW)},
        ),
    }


def dashboard_mix() -> dict[str, Request]:
    """What opening the dashboard of a day-long 4-node job sends (one request per target).

    The panels of CEEMS' "Single Job Metrics" (SLURM) and of deploy/grafana's unit dashboard:
    per-host series and their sum or average over the job's life at Grafana's step, a CPU
    time panel of two irates, the energy stat integrating power at 1-minute steps, and the
    host variable (label values).
    """
    job = f'uuid="{JOB}"'
    window = {"start": str(JOB_START), "end": str(NOW), "step": str(JOB_STEP_S)}
    rate = RATE_INTERVAL

    def panel(query: str) -> Request:
        return "/api/v1/query_range", {"query": query, **window}

    return {
        "CPU usage per host (4 series, 1 d)": panel(f"{USAGE}{{{job}}}"),
        "CPU usage, job average (1 d)": panel(f"avg({USAGE}{{{job}}})"),
        "CPU time, irate user + system (1 d)": panel(
            f"sum(irate({CPU}{{{job}}}[{rate}]) + irate({CPU_SYSTEM}{{{job}}}[{rate}]))"
        ),
        "memory per host (4 series, 1 d)": panel(f"{MEM}{{{job}}}"),
        "memory, job total (1 d)": panel(f"sum({MEM}{{{job}}})"),
        "host power per host (4 series, 1 d)": panel(f"{POWER}{{{job}}}"),
        "host power, job total (1 d)": panel(f"sum({POWER}{{{job}}})"),
        "energy stat (instant, 1 d at 1 m)": (
            "/api/v1/query",
            {
                "query": f"sum_over_time(sum({POWER}{{{job}}})[{DAY_S}s:1m]) * 60 / 3.6e6",
                "time": str(NOW),
            },
        ),
        "host variable (label values)": (
            "/api/v1/label/instance/values",
            {"match[]": f"{MEM}{{{job}}}", "start": str(JOB_START), "end": str(NOW)},
        ),
    }


def thousand() -> Request:
    uuids = "|".join(str(i) for i in range(OWNED))
    query = f'sum by (uuid) (rate({CPU}{{uuid=~"{uuids}"}}[5m]))'
    return "/api/v1/query", {"query": query, "time": str(NOW)}


def timed(client: httpx.Client, request: Request) -> float:
    path, params = request
    started = time.perf_counter()
    if path.startswith("/api/v1/label/"):  # GET only, in Prometheus
        response = client.get(path, params=params)
    else:  # what Grafana sends by default
        response = client.post(path, data=params)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        sys.exit(f"{path} {params} -> {response.status_code} {response.text[:300]}")
    return elapsed


def compare(
    clients: dict[str, httpx.Client], request: Request, rounds: int
) -> dict[str, list[float]]:
    """Interleaved timings of the same request per client (after a warm-up each)."""
    times: dict[str, list[float]] = {name: [] for name in clients}
    for client in clients.values():
        for _ in range(5):
            timed(client, request)
    for _ in range(rounds):
        for name, client in clients.items():
            times[name].append(timed(client, request))
    return times


def authorise_ms(rounds: int = 50) -> float:
    _, params = thousand()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        decision = authorise(params["query"])
        samples.append((time.perf_counter() - started) * 1000)
        assert len(decision.uuids) == OWNED
    return statistics.median(samples)


THOUSAND = "1,000 uuids (instant)"
MIX_TARGET = 1.15  # LB / direct p50, typical dashboard queries (issue 6)
AUTHORISE_TARGET_MS = 10.0
# Same encoding on both paths: the LB asks backends for identity and answers uncompressed, so
# a direct client accepting gzip would make Prometheus compress (and itself decompress) what
# the LB's clients get plain, crediting the LB with that work: 3-6 ms on a day of 4 series.
CLIENT_HEADERS = {"Accept-Encoding": "identity"}


@dataclass(frozen=True)
class QueryTimes:
    """One query of a mix: p50 and p99 in ms, directly and through each LB."""

    name: str
    direct_p50: float
    direct_p99: float
    lb_p50: float
    lb_p99: float
    nocache_p50: float

    @property
    def ratio(self) -> float:
        """LB / direct p50."""
        return self.lb_p50 / self.direct_p50

    @property
    def nocache_ratio(self) -> float:
        """LB without its ownership cache / direct p50."""
        return self.nocache_p50 / self.direct_p50

    @property
    def added(self) -> float:
        """What the LB adds to the p50, in ms."""
        return self.lb_p50 - self.direct_p50


def mix_ratio(queries: list[QueryTimes]) -> float:
    """Geometric mean of the LB / direct p50 ratios."""
    return statistics.geometric_mean([q.ratio for q in queries])


def mix_added_ms(queries: list[QueryTimes]) -> float:
    """Median of the p50 the LB adds."""
    return statistics.median([q.added for q in queries])


@dataclass(frozen=True)
class LbResult:
    """What one run measured."""

    units: int
    rounds: int
    authorise_ms: float
    queries: list[QueryTimes]  # the small-query mix, then the 1,000-uuid query
    dashboard: list[QueryTimes]  # the job dashboard mix
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and the end

    @property
    def typical(self) -> list[QueryTimes]:
        """The small-query mix, without the 1,000-uuid query."""
        return [q for q in self.queries if q.name != THOUSAND]

    @property
    def mix_ratio(self) -> float:
        """Geometric mean of the LB / direct p50 ratios of the small-query mix."""
        return mix_ratio(self.typical)

    @property
    def added_p50_ms(self) -> float:
        """Median over the small-query mix of the p50 the LB adds."""
        return mix_added_ms(self.typical)


def _row(q: QueryTimes) -> str:
    return (
        f"| {q.name:40} | {q.direct_p50:7.2f} ms | {q.direct_p99:7.2f} ms "
        f"| {q.lb_p50:6.2f} ms | {q.lb_p99:6.2f} ms | {q.added:+.2f} ms | {q.ratio:5.2f}x "
        f"| {q.nocache_p50:8.2f} ms | {q.nocache_ratio:5.2f}x |"
    )


def _table(
    title: str, clients: dict[str, httpx.Client], mix: dict[str, Request], rounds: int
) -> list[QueryTimes]:
    print(title)
    print()
    print(
        f"| {'query':40} | direct p50 | direct p99 | LB p50 | LB p99 | added p50 "
        "| p50 ratio | LB no-cache p50 | ratio |"
    )
    print("|" + "|".join("---" for _ in range(9)) + "|")
    measured = []
    for name, request in mix.items():
        count = rounds if name != THOUSAND else max(20, rounds // 5)
        times = compare(clients, request, count)
        p50 = {k: percentile(v, 0.5) * 1000 for k, v in times.items()}
        p99 = {k: percentile(v, 0.99) * 1000 for k, v in times.items()}
        q = QueryTimes(
            name, p50["direct"], p99["direct"], p50["lb"], p99["lb"], p50["lb, no cache"]
        )
        measured.append(q)
        print(_row(q))
    print()
    return measured


def measure(units: int, rounds: int) -> LbResult:
    """Run the benchmark, printing its tables as it goes."""
    load_start = os.getloadavg()[0]
    authorise_median = authorise_ms()
    print(f"authorise(): 1,000-uuid query in {authorise_median:.2f} ms (median of 50; < 10 ms)")
    with tempfile.TemporaryDirectory(prefix="ceems-lb-bench-") as tmp:
        work = Path(tmp)
        build_store(work / "store", units)
        prometheus = start_prometheus(work, units)
        lbs = []
        try:
            lb_cached, cached_url = start_lb(work, "lb-cached", prometheus.url, "60s")
            lbs.append(lb_cached)
            lb_cold, cold_url = start_lb(work, "lb-nocache", prometheus.url, "0s")
            lbs.append(lb_cold)
            headers = {"X-Grafana-User": USER, "X-Ceems-Cluster-Id": CLUSTER, **CLIENT_HEADERS}
            clients = {
                "direct": httpx.Client(base_url=prometheus.url, headers=CLIENT_HEADERS),
                "lb": httpx.Client(base_url=cached_url, headers=headers),
                "lb, no cache": httpx.Client(base_url=cold_url, headers=headers),
            }
            print(
                f"{units} units (1 h at {STEP_S} s) and one {JOB_HOSTS}-node job (1 d) in "
                f"Prometheus; {rounds} rounds, interleaved; Grafana's requests (POST forms, "
                f"label values by GET) over keep-alive connections, identity encoding; load "
                f"average {load_start:.2f} at the start"
            )
            print()
            small = _table(
                "Small-query mix (one-unit panels over the last hour):",
                clients, {**query_mix(), THOUSAND: thousand()}, rounds,
            )  # fmt: skip
            typical_small = [q for q in small if q.name != THOUSAND]
            dashboard = _table(
                f"Job dashboard mix (a {JOB_HOSTS}-node job's dashboard over its day, "
                f"step {JOB_STEP_S} s):",
                clients, dashboard_mix(), rounds,
            )  # fmt: skip
            for client in clients.values():
                client.close()
        finally:
            for process in lbs:
                process.terminate()
                process.wait()
            prometheus.stop()
    load = (load_start, os.getloadavg()[0])
    result = LbResult(units, rounds, authorise_median, small, dashboard, load)
    print(
        f"job dashboard mix: geometric mean of p50 ratios {mix_ratio(dashboard):.2f}x "
        f"(target <= {MIX_TARGET}x), median added p50 {mix_added_ms(dashboard):+.2f} ms"
    )
    print(
        f"small-query mix:   geometric mean of p50 ratios {mix_ratio(typical_small):.2f}x, "
        f"median added p50 {mix_added_ms(typical_small):+.2f} ms"
    )
    print(f"load average {load[0]:.2f} at the start, {load[1]:.2f} at the end")
    return result


def figures(result: LbResult) -> list[Figure]:
    """The machine-readable figures of a run."""
    load = f"load {result.load[0]:.2f}-{result.load[1]:.2f}"
    small = f"{len(result.typical)} one-unit queries over 1 h, {result.units} units, "
    small += f"{result.rounds} rounds, {load}"
    job = f"{len(result.dashboard)} queries of a {JOB_HOSTS}-node job's dashboard over 1 d, "
    job += f"{result.rounds} rounds, {load}"
    thousand_times = next(q for q in result.queries if q.name == THOUSAND)
    return [
        Figure("LB authorise(), 1,000 uuids", result.authorise_ms, "ms", "<",
               AUTHORISE_TARGET_MS, "median of 50, in process"),
        Figure("LB / direct p50, job dashboard mix", mix_ratio(result.dashboard), "x", "<=",
               MIX_TARGET, f"geometric mean; {job}"),
        Figure("LB added p50, job dashboard mix", mix_added_ms(result.dashboard), "ms",
               detail=f"median over the mix; {job}"),
        Figure("LB (no cache) / direct p50, job dashboard mix",
               statistics.geometric_mean([q.nocache_ratio for q in result.dashboard]), "x"),
        # The small-query mix keeps its historical names ("typical mix": stack_figures.py and
        # docs/performance.md read them) and its target: a short job's dashboard looks like it.
        Figure("LB / direct p50, typical mix", result.mix_ratio, "x", "<=", MIX_TARGET,
               f"small-query mix, geometric mean; {small}"),
        Figure("LB added p50, typical mix", result.added_p50_ms, "ms",
               detail=f"small-query mix, median; {small}"),
        Figure("LB (no cache) / direct p50, typical mix",
               statistics.geometric_mean([q.nocache_ratio for q in result.typical]), "x"),
        Figure("LB / direct p50, 1,000 uuids", thousand_times.ratio, "x",
               detail=f"direct {thousand_times.direct_p50:.2f} ms"),
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=200)
    add_json_option(parser)
    args = parser.parse_args()
    if args.units < OWNED:
        parser.error(f"--units must be at least {OWNED} (the 1,000-uuid query names them)")
    result = measure(args.units, args.rounds)
    write_json(args.json, "lb_overhead", figures(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
