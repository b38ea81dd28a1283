"""The LB's test stack: an API store with two users' units, Prometheus and VictoriaMetrics
holding those units' series, counting proxies in front of both, and `ceems_lb` itself.

Cluster slurm-0 is served by Prometheus, slurm-1 by VictoriaMetrics. alice owns a-1 and a-2
(project p1), bob owns b-1 (p2), carol is in p1 (she sees alice's units, not bob's); root is
an admin. On slurm-1 alice owns a-9 and bob b-9.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import yaml

from ceems.api.config import DataConfig
from ceems.api.models import Project, Unit, User
from ceems.api.store.engine import create_store_engine
from ceems.api.store.migrate import migrate
from ceems.api.store.writes import StoreWriter
from tests.conftest import SERVICES, free_port
from tests.tsdb.backfill import Series

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z: the series start here
STEP_S = 15
POINTS = 41  # ten minutes
AT = T0 + 300  # instant queries ask for this time
NODE_METRIC = "ceems_ipmi_dcmi_current_watts"  # allow-listed
SECRET_METRIC = "node_secret_info"  # a node series nobody listed
UNIT_METRIC = "ceems_compute_unit_cpu_user_seconds_total"
OWNERS = {
    "slurm-0": {"a-1": ("alice", "p1"), "a-2": ("alice", "p1"), "b-1": ("bob", "p2")},
    "slurm-1": {"a-9": ("alice", "p1"), "b-9": ("bob", "p2")},
}
MEMBERS = {"p1": ("alice", "carol"), "p2": ("bob",)}
ADMIN = "root"


def cpu_rate(uuid: str) -> float:
    """CPU seconds per second each unit burns: distinct, so answers say whose series they are."""
    return 1.0 + sum(map(ord, uuid)) % 7


def unit_series(cluster: str) -> list[Series]:
    """Each unit's CPU counter and each node's power, every STEP_S for POINTS samples."""
    series = []
    for uuid in OWNERS[cluster]:
        labels = {"uuid": uuid, "instance": f"{cluster}-node:9010", "hostname": "node-1"}
        points = [(T0 + i * STEP_S, cpu_rate(uuid) * i * STEP_S) for i in range(POINTS)]
        series.append(Series(UNIT_METRIC, labels, points, kind="counter"))
    node = {"instance": f"{cluster}-node:9010", "hostname": "node-1"}
    series.append(Series(NODE_METRIC, node, [(T0 + i * STEP_S, 300.0) for i in range(POINTS)]))
    series.append(Series(SECRET_METRIC, node, [(T0 + i * STEP_S, 1.0) for i in range(POINTS)]))
    return series


def unit(cluster: str, uuid: str, user: str, project: str) -> Unit:
    """A running unit that started at T0."""
    return Unit(
        cluster_id=cluster, resource_manager="slurm", uuid=uuid, name=f"job-{uuid}",
        project=project, groupname="users", username=user,
        created_at_ts=T0 * 1000, started_at_ts=T0 * 1000, state="RUNNING",
    )  # fmt: skip


def build_store(data_dir: Path) -> Path:
    """The API server's SQLite store with OWNERS, MEMBERS and the admin."""
    engine = create_store_engine(DataConfig(path=str(data_dir)))
    migrate(engine)
    writer = StoreWriter(engine)
    now_ms = (T0 + 3600) * 1000
    for cluster, owners in OWNERS.items():
        units = [unit(cluster, uuid, user, project) for uuid, (user, project) in owners.items()]
        users = [
            User(cluster, "slurm", name, projects=tuple(p for p, m in MEMBERS.items() if name in m))
            for name in ("alice", "bob", "carol")
        ]
        projects = [Project(cluster, "slurm", p, users=m) for p, m in MEMBERS.items()]
        writer.commit_update(cluster, now_ms, units, users, projects, now_ms)
    writer.sync_admins("config", [ADMIN])
    writer.close()
    engine.dispose()
    return data_dir


# Headers the proxy sets itself (httpx decodes bodies, so content-encoding goes too).
_HOP = ("host", "content-length", "transfer-encoding", "connection", "content-encoding")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Forwards to the backend and records what it forwarded."""

    server: CountingProxy

    def _forward(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        if path not in ("/-/healthy", "/-/ready", "/api/v1/status/flags"):
            params = parse_qsl(urlsplit(self.path).query) + parse_qsl(body.decode())
            with self.server.lock:
                self.server.seen.append((self.command, path, params, dict(self.headers)))
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        answer = self.server.client.request(
            self.command, self.path, content=body or None, headers=headers
        )
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in _HOP:
                self.send_header(name, value)
        self.send_header("content-length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    def do_GET(self) -> None:
        """Forward a GET."""
        self._forward()

    def do_POST(self) -> None:
        """Forward a POST."""
        self._forward()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class CountingProxy(http.server.ThreadingHTTPServer):
    """A pass-through in front of a real backend: proves what reached it (health checks aside)."""

    daemon_threads = True

    def __init__(self, backend_url: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.client = httpx.Client(base_url=backend_url, timeout=30)
        self.seen: list[tuple[str, str, list[tuple[str, str]], dict[str, str]]] = []
        self.lock = threading.Lock()
        self.delay_s = 0.0
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """Where the LB sends requests."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self) -> int:
        """Requests forwarded so far."""
        with self.lock:
            return len(self.seen)

    def stop(self) -> None:
        """Stop serving."""
        self.shutdown()
        self.server_close()
        self.client.close()


@dataclass
class VictoriaMetrics:
    """A real VictoriaMetrics started and stopped through scripts/services.sh."""

    state_dir: Path
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CEEMS_SERVICES_DIR": str(self.state_dir),
            "VICTORIA_METRICS_PORT": str(self.port),
        }

    def start(self) -> None:
        """Start (installing if needed) and wait until healthy."""
        subprocess.run(
            [str(SERVICES), "start", "victoria-metrics"],
            env=self._env(), check=True, capture_output=True, timeout=300,
        )  # fmt: skip

    def load(self, series: list[Series]) -> None:
        """Import the series (millisecond timestamps) and make them searchable now."""
        lines = []
        for one in series:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(one.labels.items()))
            lines += [f"{one.name}{{{labels}}} {v} {int(t * 1000)}" for t, v in one.points]
        with httpx.Client(base_url=self.url, timeout=30) as client:
            client.post("/api/v1/import/prometheus", content="\n".join(lines)).raise_for_status()
            client.get("/internal/force_flush").raise_for_status()

    def stop(self) -> None:
        """Stop by PID."""
        subprocess.run(
            [str(SERVICES), "stop", "victoria-metrics"],
            env=self._env(), check=True, capture_output=True,
        )  # fmt: skip


def lb_config(
    store: Path,
    tsdb: dict[str, list[str]],
    *,
    filter_labels: list[str] | None = None,
    timeout_s: float = 10.0,
    strategy: str = "round-robin",
    pyroscope: dict[str, list[str]] | None = None,
) -> dict[str, object]:
    """A `ceems_lb` config: backends by cluster, ownership from the store."""

    def backends(urls: list[str]) -> list[dict[str, object]]:
        return [
            {"web": {"url": u, "timeout": timeout_s}, "filter_labels": filter_labels or []}
            for u in urls
        ]

    pyro = pyroscope or {}
    clusters = sorted(set(tsdb) | set(pyro))
    return {
        "ceems_lb": {
            "strategy": strategy,
            "allowed_node_metrics": [NODE_METRIC],
            "health_check_interval": "1s",
            "backends": [
                {
                    "id": c,
                    **({"tsdb": backends(tsdb[c])} if c in tsdb else {}),
                    **({"pyroscope": backends(pyro[c])} if c in pyro else {}),
                }
                for c in clusters
            ],
        },
        "ceems_api_server": {"data": {"path": str(store)}},
    }


@dataclass
class LbProcess:
    """`ceems_lb` as a real process on loopback ports."""

    config: dict[str, object]
    workdir: Path
    listeners: int = 1
    ports: list[int] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The first (TSDB) listener."""
        return f"http://127.0.0.1:{self.ports[0]}"

    def start(self, *extra: str) -> None:
        """Start and wait until /health answers on every listener."""
        config_file = self.workdir / "ceems_lb.yml"
        config_file.write_text(yaml.safe_dump(self.config))
        self.ports = [free_port() for _ in range(self.listeners)]
        args = [sys.executable, "-m", "ceems.lb.cli", "--config.file", str(config_file)]
        for port in self.ports:
            args += ["--web.listen-address", f"127.0.0.1:{port}"]
        log = (self.workdir / "ceems_lb.log").open("wb")
        self._proc = subprocess.Popen([*args, *extra], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        for port in self.ports:
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("ceems_lb did not start:\n" + self.log())
                time.sleep(0.05)

    def log(self) -> str:
        """Its output so far."""
        path = self.workdir / "ceems_lb.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=15)
            self._proc = None


def running(process: LbProcess) -> Iterator[LbProcess]:
    """Start, yield, stop."""
    process.start()
    try:
        yield process
    finally:
        process.stop()
