"""Scrape latency and memory of ceems_exporter on a simulated node, with 0 to 1000 units.

For each case prints median and p99 latency of /metrics over HTTP, the exporter's resident
memory, series per compute unit and the ratio of scrape time to the raw cost of reading the
same files in a tight loop. Targets (issues 2 and 3, 2-core machine): node-level p50 < 10 ms,
RSS < 40 MB; 100 units p50 < 30 ms, 1000 units p50 < 250 ms, RSS < 60 MB, <= 12 series/unit.

    .venv/bin/python benchmarks/exporter_scrape.py [--units 0,10,100,1000] [--scrapes 200]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import os
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

from ceems.sim.cgroups import SimCgroups, slurm_jobs
from ceems.sim.node import NodeSpec, SimulatedNode

UNIT_FILES = ("cgroup.events", "cpu.stat", "cpuset.cpus.effective", "memory.stat",
              "memory.current", "memory.max", "memory.events")  # fmt: skip


@dataclass(frozen=True)
class Result:
    units: int
    series: int
    unit_series: int
    p50_s: float
    p99_s: float
    rss_mb: float
    render_s: float
    raw_s: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def raw_read_s(node: SimulatedNode, cgroupfs: Path | None, rounds: int) -> float:
    """Median time to list and read every file one scrape reads, without parsing."""
    files = [node.procfs / "stat", node.procfs / "meminfo"]
    for zone in sorted((node.sysfs / "class" / "powercap").iterdir()):
        files += [zone / "energy_uj", zone / "constraint_0_power_limit_uw"]
    hwmon = node.sysfs / "class" / "hwmon" / "hwmon0"
    files += [hwmon / n for n in ("name", "power1_input", "power1_average", "energy1_input")]
    scope = cgroupfs / "system.slice" / "slurmstepd.scope" if cgroupfs else None
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for path in files:
            path.read_bytes()
        if scope is not None:
            for entry in os.scandir(scope):
                for name in UNIT_FILES:
                    Path(entry.path, name).read_bytes()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def in_process_render_s(flags: list[str], rounds: int) -> float:
    """Median time to collect and encode one scrape without HTTP, in this process."""
    from prometheus_client import generate_latest

    from ceems.exporter.cli import build_exporter, build_parser
    from ceems.exporter.registry import load_factories

    factories = load_factories()
    options = build_parser(factories).parse_args(
        [*flags, "--web.listen-address=127.0.0.1:0", "--log.level=error"]
    )
    exporter = build_exporter(options, factories)
    try:
        time.sleep(0.5)  # let the background samplers take their first reading
        for _ in range(5):
            generate_latest(exporter.registry)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            generate_latest(exporter.registry)
            times.append(time.perf_counter() - started)
    finally:
        exporter.close()
    return statistics.median(times)


def run_case(units: int, scrapes: int, root: Path) -> Result:
    node = SimulatedNode(root / "node", NodeSpec(hostname="bench-node"), seed=1)
    cgroupfs = None
    flags = [
        f"--path.procfs={node.procfs}",
        f"--path.sysfs={node.sysfs}",
        "--collector.hwmon",
        "--collector.ipmi_dcmi",
        f"--collector.ipmi_dcmi.cmd={node.ipmi_command}",
        "--collector.emissions",
        "--collector.emissions.provider=owid",
        "--collector.emissions.provider=global",
        "--log.level=warn",
    ]
    if units:
        cgroupfs = root / "cgroup"
        node.cgroups = SimCgroups(cgroupfs, node.procfs, "v2", seed=1)
        for job in slurm_jobs(units):
            node.cgroups.add(job)
        flags += ["--collector.slurm", f"--path.cgroupfs={cgroupfs}", "--collector.gpu.type=nogpu"]
    node.advance(10.0)
    port = free_port()
    exporter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ceems.exporter.cli",
            f"--web.listen-address=127.0.0.1:{port}",
            *flags,
        ]
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    body = client.get(url).text
                    if 'collector="ipmi_dcmi"} 1.0' in body:
                        break
                except httpx.ConnectError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("exporter did not come up")
                time.sleep(0.1)
            samples = [line for line in body.splitlines() if line and not line.startswith("#")]
            unit_series = sum(1 for line in samples if 'uuid="1000"' in line)
            for _ in range(5):  # warm-up
                client.get(url)
            latencies = []
            for i in range(scrapes):
                if i % 20 == 0:
                    node.advance(1.0)  # files change between scrapes, as on a real node
                started = time.perf_counter()
                response = client.get(url)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200
        rss = rss_mb(exporter.pid)
    finally:
        exporter.terminate()
        exporter.wait(timeout=15)
    rounds = max(20, scrapes if units < 1000 else scrapes // 4)
    return Result(
        units=units,
        series=len(samples),
        unit_series=unit_series,
        p50_s=statistics.median(latencies),
        p99_s=percentile(latencies, 0.99),
        rss_mb=rss,
        render_s=in_process_render_s(flags, rounds),
        raw_s=raw_read_s(node, cgroupfs, rounds),
    )


def scrapes_for(units: int, scrapes: int) -> int:
    """Scrapes timed for a case: a quarter of them (at least 20) from 1000 units on."""
    return scrapes if units < 1000 else max(20, scrapes // 4)


# Targets by unit count (issues 2 and 3): p50 and RSS bounds, series per unit at most.
P50_TARGET_MS = {0: 10.0, 100: 30.0, 1000: 250.0}
RSS_TARGET_MB = {0: 40.0, 1000: 60.0}
UNIT_SERIES_TARGET = {1000: 12}


def figures(results: list[Result], scrapes: int) -> list[Figure]:
    """The machine-readable figures of the cases measured."""
    out = []
    for r in results:
        case = f"{r.units} units"
        timed = f"{r.series} series, {scrapes_for(r.units, scrapes)} scrapes"
        p50 = _target("<", P50_TARGET_MS.get(r.units))
        out.append(Figure(f"exporter scrape p50, {case}", r.p50_s * 1e3, "ms", *p50, timed))
        out.append(Figure(f"exporter scrape p99, {case}", r.p99_s * 1e3, "ms"))
        rss = _target("<", RSS_TARGET_MB.get(r.units))
        out.append(Figure(f"exporter RSS, {case}", r.rss_mb, "MB", *rss))
        if r.units:
            per_unit = _target("<=", UNIT_SERIES_TARGET.get(r.units))
            out.append(Figure(f"exporter series per unit, {case}", r.unit_series, "", *per_unit))
        raw = f"no-HTTP {r.render_s * 1e3:.2f} ms, raw reads {r.raw_s * 1e3:.3f} ms"
        out.append(
            Figure(f"exporter scrape p50 / raw reads, {case}", r.p50_s / r.raw_s, "x", detail=raw)
        )
    return out


def _target(op: str, bound: float | None) -> tuple[str, float | None]:
    """(op, bound), or no target where the case has none."""
    return (op, bound) if bound is not None else ("", None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", default="0,10,100,1000", help="comma-separated unit counts")
    parser.add_argument("--scrapes", type=int, default=200)
    add_json_option(parser)
    args = parser.parse_args()
    results = []
    counts = [int(c) for c in args.units.split(",")]
    print(f"{'units':>6} {'series':>7} {'per unit':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'RSS MB':>7} {'no-HTTP ms':>10} {'raw ms':>8} {'p50/raw':>8}")  # fmt: skip
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="ceems-bench-") as tmp:
            r = run_case(count, scrapes_for(count, args.scrapes), Path(tmp))
        results.append(r)
        print(
            f"{r.units:>6} {r.series:>7} {r.unit_series:>8} {r.p50_s * 1e3:>8.2f} "
            f"{r.p99_s * 1e3:>8.2f} {r.rss_mb:>7.1f} {r.render_s * 1e3:>10.2f} "
            f"{r.raw_s * 1e3:>8.3f} {r.p50_s / r.raw_s:>7.1f}x",
            flush=True,
        )
    write_json(args.json, "exporter_scrape", figures(results, args.scrapes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
