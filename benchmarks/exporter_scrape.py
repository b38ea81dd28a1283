"""Scrape latency and memory of ceems_exporter on a simulated node.

Prints median and p99 latency of /metrics over HTTP, the exporter's resident memory, and the
ratio of scrape time to the raw cost of reading the same files in a tight loop. Targets
(issue 2): node-level scrape p50 under 10 ms and RSS under 40 MB on a 2-core machine.

    .venv/bin/python benchmarks/exporter_scrape.py [--scrapes 500]
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

from ceems.sim.node import NodeSpec, SimulatedNode


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


def raw_read_s(node: SimulatedNode, rounds: int) -> float:
    """Median time to read every file a node-level scrape reads, without parsing."""
    files = [node.procfs / "stat", node.procfs / "meminfo"]
    powercap = node.sysfs / "class" / "powercap"
    for zone in sorted(powercap.iterdir()):
        files += [zone / "energy_uj", zone / "constraint_0_power_limit_uw"]
    hwmon = node.sysfs / "class" / "hwmon" / "hwmon0"
    files += [
        hwmon / "name",
        hwmon / "power1_input",
        hwmon / "power1_average",
        hwmon / "energy1_input",
    ]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for path in files:
            path.read_bytes()
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
        for _ in range(20):
            generate_latest(exporter.registry)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            generate_latest(exporter.registry)
            times.append(time.perf_counter() - started)
    finally:
        exporter.close()
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=500)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ceems-bench-"))
    node = SimulatedNode(root, NodeSpec(hostname="bench-node"), seed=1)
    node.advance(10.0)
    port = free_port()
    flags = [
        f"--web.listen-address=127.0.0.1:{port}",
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
    exporter = subprocess.Popen([sys.executable, "-m", "ceems.exporter.cli", *flags])
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with httpx.Client() as client:
            deadline = time.monotonic() + 30
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
            series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
            for _ in range(20):  # warm-up
                client.get(url)
            latencies = []
            for i in range(args.scrapes):
                if i % 50 == 0:
                    node.advance(1.0)  # files change between scrapes, as on a real node
                started = time.perf_counter()
                response = client.get(url)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200
        rss = rss_mb(exporter.pid)
    finally:
        exporter.terminate()
        exporter.wait(timeout=15)
    raw = raw_read_s(node, 2000)
    render = in_process_render_s([f for f in flags if "listen-address" not in f], args.scrapes)
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    print(f"series per scrape          {series}")
    print(f"scrapes                    {args.scrapes}")
    print(f"scrape latency p50         {p50 * 1e3:.2f} ms   (target < 10 ms)")
    print(f"scrape latency p99         {p99 * 1e3:.2f} ms")
    print(f"exporter RSS               {rss:.1f} MB   (target < 40 MB)")
    print(f"collect+encode, no HTTP    {render * 1e3:.2f} ms")
    print(f"raw file reads per scrape  {raw * 1e3:.3f} ms")
    print(f"ratio scrape p50 / raw     {p50 / raw:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
