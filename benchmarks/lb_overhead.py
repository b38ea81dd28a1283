"""Latency that ceems_lb adds in front of Prometheus, and the time to authorise 1,000 uuids.

A real Prometheus holds an hour of series (15 s resolution) for N units (default 2,000) of
many users; the LB reads ownership from a real API store. The same dashboard query mix is sent
to Prometheus directly and through the LB, interleaved so both see the same machine state, over
keep-alive connections. Targets (issue 6): LB/direct p50 ratio <= 1.15 for the typical mix,
authorising a 1,000-uuid query < 10 ms.

    .venv/bin/python benchmarks/lb_overhead.py [--units 2000] [--rounds 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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
MEM = "ceems_compute_unit_memory_used_bytes"
NODE = "ceems_ipmi_dcmi_current_watts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def owner(i: int) -> str:
    return USER if i < OWNED else f"user{1 + i % (USERS - 1)}"


def openmetrics(units: int) -> str:
    """An hour of CPU and memory series per unit and power per node, as OpenMetrics."""
    lines = [f"# TYPE {CPU.removesuffix('_total')} counter"]
    steps = range(0, HOUR_S + 1, STEP_S)
    for i in range(units):
        labels = f'hostname="node{i % 64}",instance="node{i % 64}:9010",uuid="{i}"'
        lines += [f"{CPU}{{{labels}}} {0.5 * s * (1 + i % 4)} {START + s}" for s in steps]
    lines.append(f"# TYPE {MEM} gauge")
    for i in range(units):
        labels = f'hostname="node{i % 64}",instance="node{i % 64}:9010",uuid="{i}"'
        lines += [f"{MEM}{{{labels}}} {1e9 + i} {START + s}" for s in steps]
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


def thousand() -> Request:
    uuids = "|".join(str(i) for i in range(OWNED))
    query = f'sum by (uuid) (rate({CPU}{{uuid=~"{uuids}"}}[5m]))'
    return "/api/v1/query", {"query": query, "time": str(NOW)}


def timed(client: httpx.Client, request: Request) -> float:
    path, params = request
    started = time.perf_counter()
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
MIX_TARGET = 1.15  # LB / direct p50, typical dashboard mix (issue 6)
AUTHORISE_TARGET_MS = 10.0


@dataclass(frozen=True)
class QueryTimes:
    """One query of the mix: p50 and p99 in ms, directly and through each LB."""

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


@dataclass(frozen=True)
class LbResult:
    """What one run measured."""

    units: int
    rounds: int
    authorise_ms: float
    queries: list[QueryTimes]

    @property
    def typical(self) -> list[QueryTimes]:
        """The dashboard mix, without the 1,000-uuid query."""
        return [q for q in self.queries if q.name != THOUSAND]

    @property
    def mix_ratio(self) -> float:
        """Geometric mean of the LB / direct p50 ratios of the typical mix."""
        return statistics.geometric_mean([q.ratio for q in self.typical])

    @property
    def added_p50_ms(self) -> float:
        """Median over the typical mix of the p50 the LB adds."""
        return statistics.median([q.lb_p50 - q.direct_p50 for q in self.typical])


def measure(units: int, rounds: int) -> LbResult:
    """Run the benchmark, printing its tables as it goes."""
    authorise_median = authorise_ms()
    print(f"authorise(): 1,000-uuid query in {authorise_median:.2f} ms (median of 50; < 10 ms)")
    measured: list[QueryTimes] = []
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
            headers = {"X-Grafana-User": USER, "X-Ceems-Cluster-Id": CLUSTER}
            clients = {
                "direct": httpx.Client(base_url=prometheus.url),
                "lb": httpx.Client(base_url=cached_url, headers=headers),
                "lb, no cache": httpx.Client(base_url=cold_url, headers=headers),
            }
            print(f"{units} units, 1 h at {STEP_S} s in Prometheus; {rounds} rounds, "
                  "interleaved; POST forms over keep-alive connections")  # fmt: skip
            print()
            header = (
                f"| {'query':40} | direct p50 | direct p99 | LB p50 | LB p99 | added p50 "
                "| p50 ratio | LB no-cache p50 | ratio |"
            )
            print(header)
            print("|" + "|".join("---" for _ in range(9)) + "|")
            mix: dict[str, Request] = {**query_mix(), THOUSAND: thousand()}
            for name, request in mix.items():
                count = rounds if name != THOUSAND else max(20, rounds // 5)
                times = compare(clients, request, count)
                p50 = {k: percentile(v, 0.5) * 1000 for k, v in times.items()}
                p99 = {k: percentile(v, 0.99) * 1000 for k, v in times.items()}
                q = QueryTimes(
                    name, p50["direct"], p99["direct"], p50["lb"], p99["lb"], p50["lb, no cache"]
                )
                measured.append(q)
                print(
                    f"| {name:40} | {q.direct_p50:7.2f} ms | {q.direct_p99:7.2f} ms "
                    f"| {q.lb_p50:6.2f} ms | {q.lb_p99:6.2f} ms "
                    f"| {q.lb_p50 - q.direct_p50:+.2f} ms | {q.ratio:5.2f}x "
                    f"| {q.nocache_p50:8.2f} ms | {q.nocache_ratio:5.2f}x |"
                )
            print()
            result = LbResult(units, rounds, authorise_median, measured)
            print(
                f"typical mix: geometric mean of p50 ratios {result.mix_ratio:.2f}x "
                "(target <= 1.15x)"
            )
            for client in clients.values():
                client.close()
        finally:
            for process in lbs:
                process.terminate()
                process.wait()
            prometheus.stop()
    return result


def figures(result: LbResult) -> list[Figure]:
    """The machine-readable figures of a run."""
    mix = f"{len(result.typical)} dashboard queries, {result.units} units, {result.rounds} rounds"
    thousand_times = next(q for q in result.queries if q.name == THOUSAND)
    return [
        Figure("LB authorise(), 1,000 uuids", result.authorise_ms, "ms", "<",
               AUTHORISE_TARGET_MS, "median of 50, in process"),
        Figure("LB / direct p50, typical mix", result.mix_ratio, "x", "<=", MIX_TARGET,
               f"geometric mean; {mix}"),
        Figure("LB added p50, typical mix", result.added_p50_ms, "ms",
               detail=f"median over the mix; {mix}"),
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
