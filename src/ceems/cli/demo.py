"""`ceems demo`: a simulated cluster monitored by the real stack, on loopback ports it picks."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType
from urllib.parse import quote

from ceems.cli.demo_real import run_real_demo
from ceems.cli.demo_stack import ADMIN, STOP_HINT, DemoStack, StackOptions, print_up_to_api
from ceems.sim.cluster import USERS, ClusterSpec
from ceems.sim.prometheus import PrometheusNotFoundError


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `ceems demo`."""
    parser.add_argument(
        "--nodes", type=int, default=4,
        help="Simulated nodes (default: 4): SLURM CPU nodes, node 1 with GPUs (whole and MIG), "
        "node 3 with user sessions; every third node has Cray counters instead of IPMI.",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=42, help="Workload seed (default: 42).")
    parser.add_argument(
        "--jobs-per-hour", type=float, default=120.0,
        help="Mean rate of new SLURM jobs (default: 120).",
    )  # fmt: skip
    parser.add_argument(
        "--job-duration", type=float, nargs=2, default=(60.0, 600.0), metavar=("MIN", "MAX"),
        help="Job run times are drawn between MIN and MAX seconds (default: 60 600).",
    )  # fmt: skip
    parser.add_argument(
        "--duration", type=float, default=0.0,
        help="Stop after this many seconds; 0 runs until Ctrl-C (default: 0).",
    )  # fmt: skip
    parser.add_argument(
        "--scrape-interval", type=float, default=5.0,
        help="Prometheus scrape and rule evaluation interval in seconds (default: 5).",
    )  # fmt: skip
    parser.add_argument(
        "--update-interval", type=float, default=30.0,
        help="How often the API server fetches jobs and their metrics, seconds (default: 30).",
    )  # fmt: skip
    parser.add_argument(
        "--data-dir", type=Path,
        help="Where node trees, the job log, Prometheus data, the API store and logs go "
        "(default: a new temporary directory).",
    )  # fmt: skip
    parser.add_argument(
        "--no-prometheus", dest="prometheus", action="store_false",
        help="Run only the simulated nodes and their exporters.",
    )  # fmt: skip
    parser.add_argument(
        "--slurm", choices=("sim", "real"), default="sim",
        help="sim (default): simulated nodes and jobs. real: this machine's single-node SLURM "
        "(scripts/services.sh starts it when it is not running; needs root), with example "
        "jobs of alice, bob and carol; only the power sensors are simulated, and --nodes and "
        "--jobs-per-hour do not apply. See docs/demo.md.",
    )  # fmt: skip


def _check(options: argparse.Namespace) -> str:
    low, high = options.job_duration
    if options.nodes < 1:
        return "--nodes must be >= 1"
    if options.jobs_per_hour < 0 or not 0 < low <= high:
        return "--jobs-per-hour must be >= 0 and --job-duration 0 < MIN <= MAX"
    if options.scrape_interval < 1 or options.update_interval < options.scrape_interval:
        return "--scrape-interval must be >= 1 and --update-interval >= --scrape-interval"
    return ""


def run_demo(options: argparse.Namespace) -> int:
    """Start everything, print what to open, run until Ctrl-C or --duration, stop cleanly."""
    if getattr(options, "slurm", "sim") == "real":
        return run_real_demo(options)
    problem = _check(options)
    if problem:
        print(f"ceems demo: {problem}", file=sys.stderr)
        return 2
    data_dir: Path = options.data_dir or Path(tempfile.mkdtemp(prefix="ceems-demo-"))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    low, high = options.job_duration
    spec = ClusterSpec(
        nodes=options.nodes, seed=options.seed, jobs_per_hour=options.jobs_per_hour,
        min_job_s=low, max_job_s=high,
    )  # fmt: skip
    stack = DemoStack(
        data_dir,
        StackOptions(options.scrape_interval, options.update_interval, options.prometheus),
        cluster_spec=spec,
    )
    try:
        try:
            stack.start()
        except PrometheusNotFoundError as err:
            print(f"ceems demo: {err}", file=sys.stderr)
            return 1
        print_banner(stack)
        stop.wait(options.duration or None)
    finally:
        stack.stop()
        print(f"ceems demo: stopped; data kept in {data_dir}", flush=True)
    return 0


def print_banner(stack: DemoStack) -> None:
    """What to open and try."""
    cluster = stack.cluster
    print(f"ceems demo: {len(cluster.nodes)} simulated node(s); data in {stack.data_dir}")
    for node in cluster.nodes:
        print(f"  exporter {node.hostname} ({node.role}): {stack.exporters[node.hostname].url}")
    print(f"  job log: {cluster.job_log}  ground truth: {cluster.truth_file}")
    if not print_up_to_api(stack):
        return
    user = USERS[0][0]
    cid = cluster.spec.cluster_id
    print(f"  api server: {stack.api_url}  (SQLite store in {stack.data_dir / 'api'})")
    print(f"  ceems_lb:   {stack.lb_url}  (in front of Prometheus)")
    print(f"The API server fetches jobs every {stack.options.update_interval_s:g} s; try:")
    print(f"  curl -s -H 'X-Grafana-User: {user}' '{stack.api_url}/api/v1/units?running'")
    print(f"  curl -s -H 'X-Grafana-User: {ADMIN}' '{stack.api_url}/api/v1/usage/current/admin'")
    config = shlex.quote(str(stack.cacct_config))
    cacct = shlex.quote(str(Path(sys.executable).parent / "cacct"))
    print(f"  {cacct} --config {config} --user {user} --starttime now-1h")
    own = f'rate(ceems_compute_unit_cpu_user_seconds_total{{uuid="{first_job(stack, user)}"}}[1m])'
    other = "rate(ceems_compute_unit_cpu_user_seconds_total[1m])"
    headers = f"-H 'X-Grafana-User: {user}' -H 'X-Ceems-Cluster-Id: {cid}'"
    print(f"  through the LB, {user}'s own job (allowed):")
    print(f"    curl -s {headers} '{stack.lb_url}/api/v1/query?query={quote(own)}'")
    print("  everyone's jobs (refused with 403):")
    print(f"    curl -s {headers} '{stack.lb_url}/api/v1/query?query={quote(other)}'")
    print(STOP_HINT, flush=True)


def first_job(stack: DemoStack, user: str) -> str:
    """A running job of `user` (or the first job), to put in the example query."""
    mine = [r.job.job_id for r in stack.cluster.running.values() if r.job.user == user]
    jobs = mine or list(stack.cluster.running) or [1000]
    return str(min(jobs))
