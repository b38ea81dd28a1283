"""`ceems demo`: simulated nodes monitored by the real exporter and a real Prometheus."""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ceems.sim.cgroups import SimCgroups, SimUnit
from ceems.sim.gpus import demo_gpus, write_fake_nvidia_smi
from ceems.sim.node import NodeSpec, SimulatedNode
from ceems.sim.prometheus import PrometheusNotFoundError, PrometheusProcess, scrape_config


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `ceems demo`."""
    parser.add_argument(
        "--nodes",
        type=int,
        default=4,
        help="Simulated nodes (default: 4): SLURM nodes, node 1 with GPUs, node 3 with user "
        "sessions.",
    )
    parser.add_argument("--seed", type=int, default=42, help="Workload seed (default: 42).")
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="Simulated seconds per real second (default: 1).",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="Stop after this many seconds; 0 runs until Ctrl-C (default: 0).",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="Where node trees, Prometheus data and logs go (default: a new temporary directory).",
    )
    parser.add_argument(
        "--no-prometheus",
        dest="prometheus",
        action="store_false",
        help="Run only the simulated nodes and their exporters.",
    )


@dataclass
class DemoNode:
    """One simulated node, its evolution thread and its exporter process."""

    sim: SimulatedNode
    stop: threading.Event
    thread: threading.Thread
    exporter: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        """The exporter's metrics URL."""
        return f"http://127.0.0.1:{self.port}/metrics"


def start_node(data_dir: Path, index: int, seed: int, speed: float) -> DemoNode:
    """Create a node tree, evolve it every second and start `ceems_exporter` over it."""
    hostname = f"sim-node-{index}"
    spec = NodeSpec(hostname=hostname, cray=index % 3 == 2)
    sim = SimulatedNode(data_dir / "nodes" / hostname, spec, seed + index)
    unit_flags = add_units(sim, index)
    stop = threading.Event()
    thread = threading.Thread(target=sim.run, args=(stop, 1.0, speed), daemon=True)
    thread.start()
    port = free_port()
    log = (data_dir / f"exporter-{hostname}.log").open("wb")
    flags = [
        f"--web.listen-address=127.0.0.1:{port}",
        f"--path.procfs={sim.procfs}",
        f"--path.sysfs={sim.sysfs}",
        f"--collector.hostname={hostname}",
        "--collector.hwmon",
        "--collector.ipmi_dcmi",
        f"--collector.ipmi_dcmi.cmd={sim.ipmi_command}",
        "--collector.emissions",
        "--collector.emissions.provider=owid",
        "--collector.emissions.provider=global",
    ]
    if spec.cray:
        flags.append("--collector.cray_pm_counters")
    flags += unit_flags
    exporter = subprocess.Popen(
        [sys.executable, "-m", "ceems.exporter.cli", *flags],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    return DemoNode(sim, stop, thread, exporter, port)


def add_units(sim: SimulatedNode, index: int) -> list[str]:
    """Compute units on a demo node and the exporter flags that read them.

    Node 1 is a GPU node (two whole GPUs and one split into MIG instances) whose jobs hold
    GPUs; node 3 is a small-cluster node where users work in their own sessions; the others
    run plain SLURM jobs.
    """
    cgroupfs = sim.root / "cgroup"
    sim.cgroups = SimCgroups(cgroupfs, sim.procfs, "v2", seed=index)
    flags = [f"--path.cgroupfs={cgroupfs}"]
    first_job = 1000 + 100 * index
    if index == 3:
        for uid in (1001, 1002):
            name = f"user{uid}"
            sim.cgroups.add(SimUnit("userslice", name, 4, None, pid=30000 + uid, uid=uid))
        return [*flags, "--collector.userslice"]
    gpus: tuple[tuple[str, ...], ...] = ((), (), ())
    if index == 1:
        nvidia_smi = write_fake_nvidia_smi(sim.bin_dir, demo_gpus())
        gpus = (("0",), ("1",), ("2", "3"))
        flags += ["--collector.gpu.type=nvidia", f"--collector.gpu.nvidia-smi-path={nvidia_smi}"]
    else:
        flags.append("--collector.gpu.type=nogpu")
    for k, job_gpus in enumerate(gpus):
        job = SimUnit("slurm", str(first_job + k), cpus=4, memory_limit_bytes=8 * 2**30,
                      pid=20000 + first_job + k, uid=1001 + k % 2, gpus=job_gpus)  # fmt: skip
        sim.cgroups.add(job)
    return [
        *flags,
        "--collector.slurm",
        f"--collector.slurm.gres-config-file={sim.root / 'gres.conf'}",
    ]


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Poll until `url` answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{url} did not come up (process exit {process.poll()})"
                ) from None
            time.sleep(0.1)


def run_demo(options: argparse.Namespace) -> int:
    """Start everything, print what to open, run until Ctrl-C or --duration, stop cleanly."""
    if options.nodes < 1 or options.speed <= 0:
        print("ceems demo: --nodes must be >= 1 and --speed > 0", file=sys.stderr)
        return 2
    data_dir: Path = options.data_dir or Path(tempfile.mkdtemp(prefix="ceems-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    nodes: list[DemoNode] = []
    prometheus: PrometheusProcess | None = None
    try:
        for index in range(options.nodes):
            nodes.append(start_node(data_dir, index, options.seed, options.speed))
        for node in nodes:
            wait_for_http(node.url, node.exporter)
        if options.prometheus:
            config = data_dir / "prometheus.yml"
            targets = {n.sim.spec.hostname: f"127.0.0.1:{n.port}" for n in nodes}
            config.write_text(scrape_config(targets, interval_s=5.0))
            prometheus = PrometheusProcess(config, data_dir / "prometheus", free_port())
            try:
                prometheus.start()
            except PrometheusNotFoundError as err:
                print(f"ceems demo: {err}; continuing without Prometheus", file=sys.stderr)
                prometheus = None
        print_banner(data_dir, nodes, prometheus)
        stop.wait(options.duration or None)
    finally:
        for node in nodes:
            node.stop.set()
            node.exporter.terminate()
        for node in nodes:
            try:
                node.exporter.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.exporter.kill()
        if prometheus is not None:
            prometheus.stop()
        print(f"ceems demo: stopped; data kept in {data_dir}", flush=True)
    return 0


def print_banner(
    data_dir: Path, nodes: list[DemoNode], prometheus: PrometheusProcess | None
) -> None:
    """What to open and try."""
    print(f"ceems demo: {len(nodes)} simulated node(s); data in {data_dir}")
    for node in nodes:
        print(f"  exporter {node.sim.spec.hostname}: {node.url}")
        print(f"    ground truth: {node.sim.root / 'state' / 'ground_truth.json'}")
    if prometheus is not None:
        print(f"  prometheus: {prometheus.url}")
        print("  try:")
        query = "sum by (hostname) (rate(ceems_rapl_package_joules_total[1m]))"
        print(f"    curl -sG {prometheus.url}/api/v1/query --data-urlencode 'query={query}'")
    print(f"  curl -s {nodes[0].url} | grep -E 'ceems_ipmi_dcmi|ceems_compute_unit_cpu_user'")
    if len(nodes) > 1:
        print(f"  curl -s {nodes[1].url} | grep ceems_compute_unit_gpu_index_flag")
    print("Ctrl-C stops everything.", flush=True)
