"""Store ingest rate and API latency of ceems_api_server over a million units.

Commits N generated units (default 1,000,000 for 2,000 users) through the store writer in
windows of 10,000, then serves the store with the real `ceems_api_server` process and times
`/api/v1/units` for a user with 500 units in a 30-day window, `/usage/current`, and the raw
SQL query behind `/units`. Targets (issue 4, 2-core machine): ingest >= 20,000 units/s,
`/units` p99 < 50 ms, ratio of `/units` to its raw query < 3.

The server keeps rendered units between requests (`--web.units-cache-size`), so after the
first request the timed ones find every unit rendered already, as a refreshing dashboard
does. The same requests are then timed against a second server with the cache off
(`--web.units-cache-size 0`): every unit decoded and rendered afresh, as the first request
for a list, or one whose units all changed since the last.

    .venv/bin/python benchmarks/api_server.py [--units 1000000] [--requests 200]
        [--order time|random] [--json FILE]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _records import Figure, add_json_option, write_json

from ceems.api.config import DataConfig
from ceems.api.models import Project, Unit, User
from ceems.api.render import UNIT_FIELDS, unit_columns
from ceems.api.store.engine import create_store_engine, read_only_engine
from ceems.api.store.migrate import migrate
from ceems.api.store.queries import (
    TimeWindow,
    UnitFilter,
    fetch_units,
    select_units,
    unit_row_columns,
)
from ceems.api.store.writes import StoreWriter

CLUSTER = "bench"
USERS = 2000
PROJECTS = 100
DAY_MS = 86_400_000
NOW_MS = int(time.time() // 86400 * 86400 * 1000)  # today 00:00 UTC
WINDOW = 10_000
YEAR_MS = 365 * DAY_MS
TARGET = "user0"  # 500 units, all in the last 30 days, alone in its project
TARGET_UNITS = 500


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


@dataclass(frozen=True)
class Layout:
    """Where `count` generated units fall in time, and which of them are TARGET's.

    "time" (the default) is the order the API server meets units in: every update window,
    and every step of a back-fill from `update_from`, holds the units that ended in it, so
    windows follow one another through the year. "random" spreads each window's units over
    the whole year (a store filled in no particular order), which makes every commit touch
    pages all over the time indexes.
    """

    count: int
    order: str = "time"

    def target_step(self) -> int:
        """TARGET owns every step-th unit of the last 30 days (500 of them)."""
        recent = self.count * 30 // 365
        return max(1, recent // TARGET_UNITS)

    def user(self, i: int) -> int:
        if self.order == "random":
            return i % USERS
        first_recent = self.count - self.target_step() * TARGET_UNITS
        if i >= first_recent and (i - first_recent) % self.target_step() == 0:
            return 0
        return 1 + i % (USERS - 1)

    def started_ms(self, i: int) -> int:
        """Start times: hour-long units, ending by NOW_MS."""
        if self.order == "random":
            span_days = 30 if i % USERS == 0 else 365
            return NOW_MS - (1 + (i * 7919) % (span_days * 24)) * 3_600_000
        # unit i ends at an even share of the year, the last one at NOW_MS
        return NOW_MS - YEAR_MS + (i + 1) * YEAR_MS // self.count - 3_600_000


def make_unit(i: int, layout: Layout) -> Unit:
    """Unit i of the layout, an hour long, with the figures an updater fills in."""
    user = layout.user(i)
    start = layout.started_ms(i)
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


def ingest(data: DataConfig, count: int, order: str = "time") -> float:
    """Commit `count` units in windows of WINDOW; returns units per second."""
    layout = Layout(count, order)
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
        batch = [make_unit(i, layout) for i in range(first, min(count, first + WINDOW))]
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


def raw_query_s(data: DataConfig, rounds: int) -> tuple[float, float]:
    """Median times of the SQL behind `/units` for TARGET over 30 days: the statement the
    route runs (its columns for every field), run by the sqlite3 driver alone (rows
    fetched), and fetch_units (the same with rows decoded)."""
    engine = read_only_engine(data)
    window = TimeWindow(NOW_MS - 30 * DAY_MS, NOW_MS)
    flt = UnitFilter(members_of=[TARGET], window=window)  # what /units asks for TARGET
    driver, decoded = [], []
    with engine.connect() as conn:
        columns = unit_row_columns(unit_columns(UNIT_FIELDS))
        statement = select_units(conn, flt, columns)
        sql = str(statement.compile(conn, compile_kwargs={"literal_binds": True}))
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        for _ in range(rounds):
            started = time.perf_counter()
            found = cursor.execute(sql).fetchall()
            driver.append(time.perf_counter() - started)
            started = time.perf_counter()
            rows = fetch_units(conn, flt, columns)
            decoded.append(time.perf_counter() - started)
    print(f"  raw query returns {len(found)} units, fetch_units {len(rows)}")
    return statistics.median(driver), statistics.median(decoded)


def serve_and_time(
    data_dir: Path, requests: int, cache_size: int | None = None
) -> tuple[list[float], list[float], int]:
    """Run ceems_api_server over the store; time /units and /usage/current for TARGET.

    `cache_size`: the server's `--web.units-cache-size` (its default when None)."""
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
            *(() if cache_size is None else ("--web.units-cache-size", str(cache_size))),
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
    parser.add_argument(
        "--order",
        choices=("time", "random"),
        default="time",
        help="units in time order, window after window (as the server meets them), or each"
        " window's units spread over the year",
    )
    parser.add_argument("--data-dir", type=Path, help="keep the store here (default: temporary)")
    add_json_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ceems-api-bench-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        data = DataConfig(path=str(data_dir))
        rate = ingest(data, args.units, args.order)
        raw, decoded = raw_query_s(data, 50)
        units_s, usage_s, count = serve_and_time(data_dir, args.requests)
        cold_s, _, _ = serve_and_time(data_dir, args.requests, cache_size=0)
    p50, p99 = statistics.median(units_s), percentile(units_s, 0.99)
    cold_p50, cold_p99 = statistics.median(cold_s), percentile(cold_s, 0.99)
    print(f"units stored                    {args.units:,} ({USERS:,} users, {args.order} order)")
    print(f"ingest                          {rate:,.0f} units/s   (target >= 20,000)")
    usage_p50, usage_p99 = statistics.median(usage_s), percentile(usage_s, 0.99)
    print(f"/units ({count} units, 30 days)  p50 {p50 * 1e3:.1f} ms  p99 {p99 * 1e3:.1f} ms")
    print(
        f"  the same, cache off           p50 {cold_p50 * 1e3:.1f} ms  p99 {cold_p99 * 1e3:.1f} ms"
        "   (target p99 < 50 ms)"
    )
    print(
        f"/usage/current                  p50 {usage_p50 * 1e3:.1f} ms"
        f"  p99 {usage_p99 * 1e3:.1f} ms"
    )
    print(f"raw SQL behind /units           p50 {raw * 1e3:.1f} ms  (sqlite3 driver, rows fetched)")
    print(f"  the same, rows decoded        p50 {decoded * 1e3:.1f} ms  (fetch_units)")
    print(f"ratio /units p50 / raw SQL      {p50 / raw:.2f}x   (target < 3)")
    print(f"  the same, cache off           {cold_p50 / raw:.2f}x")
    print(
        f"ratio /units p50 / fetch_units  {p50 / decoded:.2f}x"
        f" (cache off {cold_p50 / decoded:.2f}x)"
    )
    stored = f"{args.units:,} units stored in {args.order} order"
    requests = f"{count} units, 30 days, {args.requests} requests"
    write_json(
        args.json,
        "api_server",
        [
            Figure("API ingest", rate, "units/s", ">=", 20_000, f"{stored}, SQLite"),
            Figure("API /units p50", p50 * 1e3, "ms", detail=requests),
            Figure("API /units p99", p99 * 1e3, "ms", "<", 50, requests),
            Figure("API /units p50, cache off", cold_p50 * 1e3, "ms", detail=requests),
            Figure("API /units p99, cache off", cold_p99 * 1e3, "ms", "<", 50, requests),
            Figure("API /usage/current p50", usage_p50 * 1e3, "ms"),
            Figure("API /usage/current p99", usage_p99 * 1e3, "ms"),
            Figure(
                "API SQL behind /units p50",
                raw * 1e3,
                "ms",
                detail="the statement run by the sqlite3 driver, rows fetched; median of 50",
            ),
            Figure(
                "API fetch_units p50",
                decoded * 1e3,
                "ms",
                detail="the same SQL through the store, JSON decoded; median of 50",
            ),
            Figure("API /units p50 / its SQL", p50 / raw, "x", "<", 3),
            Figure("API /units p50 / its SQL, cache off", cold_p50 / raw, "x"),
            Figure("API /units p50 / fetch_units", p50 / decoded, "x"),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
