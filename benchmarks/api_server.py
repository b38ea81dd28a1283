"""Store ingest rate and API latency of ceems_api_server over a million units.

Commits N generated units (default 1,000,000 for 2,000 users) through the store writer in
windows of 10,000, then serves the store with the real `ceems_api_server` process and times
`/api/v1/units` for a user with 500 units in a 30-day window, `/usage/current`, and the raw
SQL query behind `/units`. Targets (issue 4, 2-core machine): ingest >= 20,000 units/s,
`/units` p99 < 50 ms, ratio of `/units` to its raw query < 3.

    .venv/bin/python benchmarks/api_server.py [--units 1000000] [--requests 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _records import Figure, add_json_option, write_json

from ceems.api.config import DataConfig
from ceems.api.models import Project, Unit, User
from ceems.api.store.engine import create_store_engine, read_only_engine
from ceems.api.store.migrate import migrate
from ceems.api.store.queries import TimeWindow, UnitFilter, fetch_units
from ceems.api.store.writes import StoreWriter

CLUSTER = "bench"
USERS = 2000
PROJECTS = 100
DAY_MS = 86_400_000
NOW_MS = int(time.time() // 86400 * 86400 * 1000)  # today 00:00 UTC
WINDOW = 10_000
TARGET = "user0"  # 500 units, all in the last 30 days, alone in its project


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def project_of(user: int) -> str:
    """user0 has a project of its own, so /units returns exactly its 500 units."""
    return "solo" if user == 0 else f"project{user % PROJECTS}"


def make_unit(i: int) -> Unit:
    """Unit i: users take turns; user0's units fall in the last 30 days, others' over a year."""
    user = i % USERS
    span_days = 30 if user == 0 else 365
    start = NOW_MS - (1 + (i * 7919) % (span_days * 24)) * 3_600_000
    cputime = 3600.0 * (1 + i % 8)
    return Unit(
        cluster_id=CLUSTER, resource_manager="slurm", uuid=str(10_000_000 + i),
        name=f"job-{i}", project=project_of(user), groupname="users",
        username=f"user{user}", created_at_ts=start - 60_000, started_at_ts=start,
        ended_at_ts=start + 3_600_000, state="COMPLETED",
        allocation={"cpus": 1 + i % 8, "mem": 4_000_000_000, "nodes": 1, "gpus": 0},
        tags={"partition": "batch", "qos": "normal", "nodelist": f"node{i % 500}"},
        total_time_seconds={"walltime": 3600.0, "alloc_cputime": cputime,
                            "alloc_cpumemtime": cputime * 4, "alloc_gputime": 0.0,
                            "alloc_gpumemtime": 0.0},
        metrics={
            "avg_cpu_usage": {"global": 10.0 + i % 90},
            "avg_cpu_mem_usage": {"global": 20.0 + i % 70},
            "total_cpu_energy_usage_kwh": {"total": 0.05 * (1 + i % 8)},
            "total_cpu_emissions_gms": {"rte_total": 2.5, "owid_total": 3.1},
        },
        provenance={"cpu_power": "rapl", "attribution": "cpu-time", "emission_factor": "owid"},
    )  # fmt: skip


def ingest(data: DataConfig, count: int) -> float:
    """Commit `count` units in windows of WINDOW; returns units per second."""
    engine = create_store_engine(data)
    migrate(engine)
    writer = StoreWriter(engine)
    users = [User(CLUSTER, "slurm", f"user{u}", projects=(project_of(u),)) for u in range(USERS)]
    members: dict[str, list[str]] = {}
    for u in range(USERS):
        members.setdefault(project_of(u), []).append(f"user{u}")
    projects = [Project(CLUSTER, "slurm", p, users=tuple(m)) for p, m in members.items()]
    elapsed = 0.0
    for n, first in enumerate(range(0, count, WINDOW)):
        batch = [make_unit(i) for i in range(first, min(count, first + WINDOW))]
        started = time.perf_counter()
        writer.commit_update(
            CLUSTER, NOW_MS - 2 * DAY_MS + n, batch,
            users if n == 0 else None, projects if n == 0 else None, NOW_MS,
        )  # fmt: skip
        elapsed += time.perf_counter() - started
        if n % 20 == 0:
            done = first + len(batch)
            print(f"  ingested {done:>9} units, {done / elapsed:,.0f}/s", flush=True)
    writer.close()
    return count / elapsed


def raw_query_s(data: DataConfig, rounds: int) -> float:
    """Median time of the SQL behind `/units` for TARGET over 30 days, rows fetched."""
    engine = read_only_engine(data)
    window = TimeWindow(NOW_MS - 30 * DAY_MS, NOW_MS)
    flt = UnitFilter(cluster_ids=[CLUSTER], members_of=[TARGET], window=window)
    times = []
    with engine.connect() as conn:
        for _ in range(rounds):
            started = time.perf_counter()
            rows = fetch_units(conn, flt)
            times.append(time.perf_counter() - started)
    print(f"  raw query returns {len(rows)} units")
    return statistics.median(times)


def serve_and_time(data_dir: Path, requests: int) -> tuple[list[float], list[float], int]:
    """Run ceems_api_server over the store; time /units and /usage/current for TARGET."""
    config = data_dir.parent / "bench.yml"
    config.write_text(
        f"ceems_api_server:\n  data:\n    path: {data_dir}\n    update_interval: 1h\n"
        "    skip_delete_old_units: true\n  admin:\n    users: [admin]\nclusters: []\n"
    )
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ceems_api_server"),
            "--config.file",
            str(config),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--log.level",
            "warn",
        ],
    )
    url = f"http://127.0.0.1:{port}/api/v1"
    params = {"from": str((NOW_MS - 30 * DAY_MS) // 1000), "to": str(NOW_MS // 1000)}
    headers = {"X-Grafana-User": TARGET}
    try:
        with httpx.Client(timeout=60) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get(f"http://127.0.0.1:{port}/health")
                    break
                except httpx.ConnectError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            count = len(client.get(f"{url}/units", params=params, headers=headers).json()["data"])
            units_s, usage_s = [], []
            for _ in range(requests):
                started = time.perf_counter()
                assert client.get(f"{url}/units", params=params, headers=headers).status_code == 200
                units_s.append(time.perf_counter() - started)
                started = time.perf_counter()
                response = client.get(f"{url}/usage/current", params=params, headers=headers)
                assert response.status_code == 200
                usage_s.append(time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return units_s, usage_s, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--data-dir", type=Path, help="keep the store here (default: temporary)")
    add_json_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ceems-api-bench-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        data = DataConfig(path=str(data_dir))
        rate = ingest(data, args.units)
        raw = raw_query_s(data, 50)
        units_s, usage_s, count = serve_and_time(data_dir, args.requests)
    p50, p99 = statistics.median(units_s), percentile(units_s, 0.99)
    print(f"units stored                    {args.units:,} ({USERS:,} users)")
    print(f"ingest                          {rate:,.0f} units/s   (target >= 20,000)")
    usage_p50, usage_p99 = statistics.median(usage_s), percentile(usage_s, 0.99)
    print(f"/units ({count} units, 30 days)  p50 {p50 * 1e3:.1f} ms  p99 {p99 * 1e3:.1f} ms")
    print("                                (target p99 < 50 ms)")
    print(
        f"/usage/current                  p50 {usage_p50 * 1e3:.1f} ms"
        f"  p99 {usage_p99 * 1e3:.1f} ms"
    )
    print(f"raw SQL behind /units           p50 {raw * 1e3:.1f} ms")
    print(f"ratio /units p50 / raw          {p50 / raw:.2f}x   (target < 3)")
    stored = f"{args.units:,} units stored"
    requests = f"{count} units, 30 days, {args.requests} requests"
    write_json(
        args.json,
        "api_server",
        [
            Figure("API ingest", rate, "units/s", ">=", 20_000, f"{stored}, SQLite"),
            Figure("API /units p50", p50 * 1e3, "ms", detail=requests),
            Figure("API /units p99", p99 * 1e3, "ms", "<", 50, requests),
            Figure("API /usage/current p50", usage_p50 * 1e3, "ms"),
            Figure("API /usage/current p99", usage_p99 * 1e3, "ms"),
            Figure("API SQL behind /units p50", raw * 1e3, "ms", detail="median of 50"),
            Figure("API /units p50 / its SQL", p50 / raw, "x", "<", 3),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
