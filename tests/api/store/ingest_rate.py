"""Measure how fast the store ingests units: `python -m tests.api.store.ingest_rate`.

Commits N generated units (new), then the same N again (each accumulated into its row), and
prints units per second for each; SQLite in a temporary directory unless --url is given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence

from ceems.api.config import DataConfig
from ceems.api.models import Unit
from ceems.api.store.engine import create_store_engine
from ceems.api.store.migrate import migrate
from ceems.api.store.writes import StoreWriter

CLUSTER = "bench"
T0 = 1_767_225_600_000
WINDOW_MS = 900_000


def generate_units(count: int, window: int) -> list[Unit]:
    """`count` CPU jobs of 200 users in 20 projects, with the figures an updater fills in."""
    units = []
    for i in range(count):
        cputime = 900.0 * (1 + i % 8)
        units.append(
            Unit(
                cluster_id=CLUSTER,
                resource_manager="slurm",
                uuid=str(1_000_000 + i),
                name=f"job-{i}",
                project=f"project{i % 20}",
                groupname="users",
                username=f"user{i % 200}",
                created_at_ts=T0 - 60_000,
                started_at_ts=T0,
                state="RUNNING",
                allocation={"cpus": 1 + i % 8, "mem": 4_000_000_000, "nodes": 1},
                tags={"partition": "batch", "qos": "normal", "nodelist": f"node{i % 500}"},
                total_time_seconds={
                    "walltime": 900.0,
                    "alloc_cputime": cputime,
                    "alloc_cpumemtime": cputime * 4,
                },
                metrics={
                    "avg_cpu_usage": {"global": 10.0 + (i + window) % 90},
                    "avg_cpu_mem_usage": {"global": 20.0 + i % 70},
                    "total_cpu_energy_usage_kwh": {"total": 0.01 * (1 + i % 8)},
                    "total_cpu_emissions_gms": {"rte_total": 0.5, "owid_total": 0.7},
                    "total_io_read_stats": {"bytes": 1e6, "requests": 100.0},
                    "total_io_write_stats": {"bytes": 2e6, "requests": 50.0},
                },
                provenance={"cpu_power": "rapl", "emission_factor": "rte"},
            )
        )
    return units


def measure(data: DataConfig, count: int, commits: int) -> list[float]:
    """Units per second of each commit, on a fresh store."""
    engine = create_store_engine(data)
    migrate(engine)
    rates = []
    with StoreWriter(engine) as writer:
        for window in range(commits):
            units = generate_units(count, window)
            end = T0 + (window + 1) * WINDOW_MS
            started = time.perf_counter()
            writer.commit_update(CLUSTER, end, units, None, None, end)
            rates.append(count / (time.perf_counter() - started))
    engine.dispose()
    return rates


def main(argv: Sequence[str] | None = None) -> int:
    """Print the ingest rate of new units and of updates to stored ones."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--commits", type=int, default=2)
    parser.add_argument("--url", default="", help="a PostgreSQL URL; default: SQLite")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = DataConfig(path=tmp, url=args.url)
        rates = measure(data, args.units, args.commits)
    engine = "postgresql" if args.url else "sqlite"
    for window, rate in enumerate(rates):
        kind = "new" if window == 0 else "updated"
        print(f"{engine}: {args.units} {kind} units in one commit: {rate:,.0f} units/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
