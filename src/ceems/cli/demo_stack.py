"""The whole stack over a simulated cluster, as `ceems demo` runs it and the e2e test drives it.

Every component is the real program in its own process on a loopback port chosen once (so a
restarted component comes back where its clients expect it): one `ceems_exporter` per node,
Prometheus evaluating the rules `ceems_tool` would generate for these nodes, the API server
on SQLite calling the simulated `sacct`/`sacctmgr`, and `ceems_lb` in front of Prometheus.
"""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from ceems.attribution.rulefile import describe, render, rule_files
from ceems.attribution.spec import Emissions, HostJob, PowerSource, RuleSpec
from ceems.sim.cluster import ClusterNode, ClusterSpec, SimCluster, power_source
from ceems.sim.prometheus import PrometheusProcess

COUNTRY = "FR"  # emission factors from OWID for this country
ADMIN = "admin"
# Node series a user may read through the LB next to their jobs' own.
NODE_METRICS = ("ceems_emissions_gCo2_kWh", "instance:ceems_host_power_watts:pue")
SCRAPE_JOBS = {"ipmi": "ceems-ipmi", "cray": "ceems-cray"}


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Poll until `url` answers (any status); fail early if the process died."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"{url} did not come up (process exit {process.poll()})"
                ) from None
            time.sleep(0.1)


def wait_for_scrapes(
    prometheus_url: str, targets: int, since: float | None = None, timeout_s: float = 60.0
) -> None:
    """Until Prometheus has scraped `targets` exporters successfully after `since` (epoch s,
    default now).

    Prometheus is ready seconds before it scrapes (it applies discovered targets every
    5 s): a job started before then would lose its first seconds. `up` is written by
    scrapes only; the rules, after a crash, go on evaluating the last samples.
    """
    after = time.time() if since is None else since
    query = f"count(timestamp(up) > {after:.3f} and up == 1)"
    url = f"{prometheus_url}/api/v1/query?query={urllib.parse.quote(query)}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                result = json.load(response)["data"]["result"]
            if result and int(float(result[0]["value"][1])) >= targets:
                return
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Prometheus did not scrape every exporter in {timeout_s:g} s")
        time.sleep(0.1)


@dataclass(frozen=True, slots=True)
class StackOptions:
    """Timings of the stack: short for tests, calmer for a demo."""

    scrape_s: float = 5.0
    update_interval_s: float = 30.0
    with_prometheus: bool = True
    with_services: bool = True  # API server and LB (need Prometheus)


@dataclass
class Process:
    """A component's process, its command and its log; restartable."""

    name: str
    argv: list[str]
    log: Path
    url: str  # answers once the component is up
    env: dict[str, str] | None = None  # None: this process's environment
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait until it answers."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env,
            )  # fmt: skip
        wait_for_http(self.url, self.proc)

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (SIGKILL with `kill`, or after 15 s) and wait."""
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def rule_spec(scrape_s: float) -> RuleSpec:
    """The rules for the demo's sensors: IPMI+RAPL nodes and Cray nodes, OWID factors."""
    step = timedelta(seconds=scrape_s)
    return RuleSpec(
        hosts=(
            HostJob(SCRAPE_JOBS["ipmi"], PowerSource.IPMI, rapl=True, rapl_dram=True),
            HostJob(SCRAPE_JOBS["cray"], PowerSource.CRAY, rapl=True, rapl_dram=True),
        ),
        evaluation_interval=step,
        rate_interval=4 * step,
        emissions=Emissions(country_code=COUNTRY, providers=("owid",)),
    )


@dataclass
class Services:
    """Prometheus, the API server and ceems_lb over some exporters, with data under `data_dir`.

    Subclasses say what is monitored: the scrape targets, the API server's clusters, and the
    environment the API server needs to reach them.
    """

    data_dir: Path
    options: StackOptions = field(default_factory=StackOptions)
    prometheus: PrometheusProcess | None = field(init=False, default=None)
    api_server: Process | None = field(init=False, default=None)
    lb: Process | None = field(init=False, default=None)
    started_at: datetime = field(init=False)
    ports: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.started_at = datetime.now(UTC)
        self.ports = {name: free_port() for name in ("prometheus", "api", "lb")}

    # ---- what is monitored (subclasses) ------------------------------------------------

    def scrape_targets(self) -> dict[str, list[tuple[str, str]]]:
        """Scrape job -> [(hostname, host:port)] of the exporters."""
        raise NotImplementedError

    def api_clusters(self) -> list[dict[str, object]]:
        """The API server's `clusters` section."""
        raise NotImplementedError

    def api_env(self) -> dict[str, str] | None:
        """The API server's environment (None: this process's)."""
        return None

    # ---- URLs -------------------------------------------------------------------------

    @property
    def prometheus_url(self) -> str:
        """Prometheus' base URL."""
        return f"http://127.0.0.1:{self.ports['prometheus']}"

    @property
    def api_url(self) -> str:
        """The API server's base URL."""
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def lb_url(self) -> str:
        """ceems_lb's base URL."""
        return f"http://127.0.0.1:{self.ports['lb']}"

    @property
    def cacct_config(self) -> Path:
        """A `cacct` config pointing at this stack."""
        return self.data_dir / "cacct.yml"

    @property
    def cluster_ids(self) -> list[str]:
        """The API server's cluster ids, which are also the LB's backend ids."""
        return [str(cluster["id"]) for cluster in self.api_clusters()]

    # ---- start, restart, stop -------------------------------------------------------

    def wait_for_scrapes(self, since: float | None = None, timeout_s: float = 60.0) -> None:
        """Until Prometheus has scraped every exporter after `since` (default now)."""
        targets = sum(len(nodes) for nodes in self.scrape_targets().values())
        wait_for_scrapes(self.prometheus_url, targets, since, timeout_s)

    def start_prometheus(self) -> None:
        """Start Prometheus with the rules and wait until it scraped every exporter."""
        self.prometheus = PrometheusProcess(
            self._prometheus_config(), self.data_dir / "prometheus", self.ports["prometheus"]
        )
        since = time.time()
        self.prometheus.start()
        self.wait_for_scrapes(since)

    def start_services(self) -> None:
        """Start the API server and ceems_lb, and write a `cacct` config for them."""
        self.api_server = self._api_server()
        self.api_server.start()
        self.lb = self._lb()
        self.lb.start()
        self._write_cacct_config()

    def restart_service(self, name: str, kill: bool = True) -> bool:
        """Stop `prometheus`, `api_server` or `lb` (SIGKILL by default, as a crash) and start
        it again; False for another name."""
        if name == "prometheus":
            assert self.prometheus is not None
            self.prometheus.stop(kill=kill)
            since = time.time()
            self.prometheus.start()
            self.wait_for_scrapes(since)  # its rules have new samples to work on again
            return True
        process = {"api_server": self.api_server, "lb": self.lb}.get(name)
        if process is None:
            return False
        process.stop(kill=kill)
        process.start()
        return True

    def stop_services(self) -> None:
        """Stop the LB, the API server and Prometheus, in that order."""
        for process in (self.lb, self.api_server):
            if process is not None:
                process.stop()
        if self.prometheus is not None:
            self.prometheus.stop()

    # ---- configs ----------------------------------------------------------------------

    def _prometheus_config(self) -> Path:
        scrape = f"{self.options.scrape_s:g}s"
        spec = rule_spec(self.options.scrape_s)
        rules_dir = self.data_dir / "rules"
        rules_dir.mkdir(exist_ok=True)
        for file in rule_files(spec):
            (rules_dir / file.name).write_text(render(file, describe(spec)))
        config = {
            "global": {"scrape_interval": scrape, "evaluation_interval": scrape},
            "rule_files": [f"{rules_dir}/*.rules"],
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [
                        {"targets": [address], "labels": {"hostname": node}}
                        for node, address in nodes
                    ],
                }
                for job, nodes in self.scrape_targets().items()
            ],
        }
        path = self.data_dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def api_config(self) -> dict[str, object]:
        """The API server's config (the LB reads its store from the same data path)."""
        update = f"{self.options.update_interval_s:g}s"
        since = (self.started_at - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "ceems_api_server": {
                "data": {
                    "path": str(self.data_dir / "api"),
                    "update_interval": update,
                    "update_from": since,
                    "max_update_interval": "1h",
                },
                # whoever runs the demo may look at everyone's jobs (`cacct -u alice`)
                "admin": {"users": sorted({ADMIN, getpass.getuser()})},
            },
            "clusters": self.api_clusters(),
            "updaters": [
                {"id": "tsdb", "updater": "tsdb", "web": {"url": self.prometheus_url}},
            ],
        }

    def _api_server(self) -> Process:
        path = self.data_dir / "api-server.yml"
        path.write_text(yaml.safe_dump(self.api_config(), sort_keys=False))
        return Process(
            "ceems_api_server",
            [
                sys.executable, "-m", "ceems.api.cli", "--config.file", str(path),
                "--web.listen-address", f"127.0.0.1:{self.ports['api']}",
            ],
            self.data_dir / "api-server.log",
            f"{self.api_url}/api/v1/health",
            env=self.api_env(),
        )  # fmt: skip

    def lb_config(self) -> dict[str, object]:
        """ceems_lb's config: Prometheus for every cluster, ownership from the API store."""
        return {
            "ceems_lb": {
                "strategy": "round-robin",
                "backends": [
                    {"id": cid, "tsdb": [{"web": {"url": self.prometheus_url}}]}
                    for cid in self.cluster_ids
                ],
                "allowed_node_metrics": list(NODE_METRICS),
                "cache_ttl": "10s",
            },
            "ceems_api_server": {"data": {"path": str(self.data_dir / "api")}},
        }

    def _lb(self) -> Process:
        path = self.data_dir / "ceems-lb.yml"
        path.write_text(yaml.safe_dump(self.lb_config(), sort_keys=False))
        return Process(
            "ceems_lb",
            [
                sys.executable, "-m", "ceems.lb.cli", "--config.file", str(path),
                "--web.listen-address", f"127.0.0.1:{self.ports['lb']}",
            ],
            self.data_dir / "ceems-lb.log",
            f"{self.lb_url}/health",
        )  # fmt: skip

    def _write_cacct_config(self) -> None:
        config = {
            "cluster_id": self.cluster_ids[0],
            "api": {"url": self.api_url},
            "tsdb": {"url": self.lb_url},
        }
        self.cacct_config.write_text(yaml.safe_dump(config, sort_keys=False))


STOP_HINT = "Ctrl-C stops everything."


def print_up_to_api(stack: Services) -> bool:
    """The banner's Prometheus line; False, after the stop hint, when no API server runs."""
    if stack.prometheus is None:
        print(STOP_HINT, flush=True)
        return False
    print(f"  prometheus: {stack.prometheus_url}")
    if stack.api_server is None:
        print(STOP_HINT, flush=True)
        return False
    return True


@dataclass
class DemoStack(Services):
    """A simulated cluster under `data_dir` and the real components monitoring it."""

    cluster_spec: ClusterSpec = field(default_factory=ClusterSpec)
    cluster: SimCluster = field(init=False)
    exporters: dict[str, Process] = field(init=False, default_factory=dict)
    _stop: threading.Event = field(init=False, default_factory=threading.Event)
    _ticker: threading.Thread | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.cluster = SimCluster(self.data_dir / "cluster", self.cluster_spec)

    def scrape_targets(self) -> dict[str, list[tuple[str, str]]]:
        """Scrape job (by power sensor) -> [(node, host:port)]."""
        targets: dict[str, list[tuple[str, str]]] = {}
        for index, node in enumerate(self.cluster.nodes):
            job = SCRAPE_JOBS[power_source(index)]
            address = self.exporters[node.hostname].url.split("/")[2]
            targets.setdefault(job, []).append((node.hostname, address))
        return targets

    def api_clusters(self) -> list[dict[str, object]]:
        """One SLURM cluster whose `sacct`/`sacctmgr` are the simulator's shims."""
        return [
            {
                "id": self.cluster_spec.cluster_id,
                "manager": "slurm",
                "updaters": ["tsdb"],
                "cli": {"path": str(self.cluster.slurm_dir / "bin")},
            }
        ]

    # ---- start and stop ---------------------------------------------------------------

    def start(self) -> None:
        """Start every component in dependency order, and the simulation (its clock and its
        jobs) once Prometheus scrapes every exporter, so that all of the jobs' energy is seen."""
        for node in self.cluster.nodes:
            self.exporters[node.hostname] = self._exporter(node)
            self.exporters[node.hostname].start()
        if not self.options.with_prometheus:
            self._start_ticker()
            return
        self.start_prometheus()
        self._start_ticker()  # jobs arrive from now on
        self.cluster.seed_jobs()
        if self.options.with_services:
            self.start_services()

    def _start_ticker(self) -> None:
        self._ticker = threading.Thread(
            target=self.cluster.run, args=(self._stop, self.tick_s), name="sim-cluster", daemon=True
        )
        self._ticker.start()

    def restart(self, name: str, kill: bool = True) -> None:
        """Stop a component (SIGKILL by default, as a crash) and start it again.

        `name`: `prometheus`, `api_server`, `lb`, or a node's hostname for its exporter.
        """
        if not self.restart_service(name, kill):
            self.exporters[name].stop(kill=kill)
            self.exporters[name].start()

    @property
    def tick_s(self) -> float:
        """How often the simulation advances: several times per scrape, so that every scrape
        interval sees every counter move (a tick as long as the interval aliases: some
        intervals see no CPU time or energy at all, the next ones twice as much)."""
        return min(1.0, self.options.scrape_s / 4)

    def stop(self) -> None:
        """Stop every component, then the simulation (jobs still running stay running)."""
        self.stop_services()
        for exporter in self.exporters.values():
            exporter.stop()
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=10)

    # ---- components -------------------------------------------------------------------

    def _exporter(self, node: ClusterNode) -> Process:
        sim = node.sim
        port = free_port()
        interval = f"{max(1, int(self.options.scrape_s))}"
        flags = [
            f"--web.listen-address=127.0.0.1:{port}",
            f"--path.procfs={sim.procfs}",
            f"--path.sysfs={sim.sysfs}",
            f"--collector.hostname={node.hostname}",
            "--collector.emissions",
            "--collector.emissions.provider=owid",
            f"--collector.emissions.country-code={COUNTRY}",
        ]
        if sim.spec.cray:
            flags.append("--collector.cray_pm_counters")
        else:
            flags += [
                "--collector.ipmi_dcmi",
                f"--collector.ipmi_dcmi.cmd={sim.ipmi_command}",
                f"--collector.ipmi_dcmi.interval={interval}",
            ]
        flags += node.exporter_flags
        return Process(
            f"exporter {node.hostname}",
            [sys.executable, "-m", "ceems.exporter.cli", *flags],
            self.data_dir / f"exporter-{node.hostname}.log",
            f"http://127.0.0.1:{port}/metrics",
        )
