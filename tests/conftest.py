"""Shared fixtures: real services from scripts/services.sh, free loopback ports, sim nodes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ceems.exporter.cli import Exporter, build_exporter, build_parser
from ceems.exporter.registry import load_factories

pytest_plugins = ["tests.slurm_service", "tests.postgres_service"]

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "scripts" / "services.sh"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def require_services() -> bool:
    """CI sets CEEMS_REQUIRE_SERVICES=1: a missing service fails instead of skipping."""
    return os.environ.get("CEEMS_REQUIRE_SERVICES", "") == "1"


def missing_service(reason: str) -> None:
    """Skip on a developer's machine, fail in CI."""
    if require_services():
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of the real promtool (Debian package prometheus)."""
    path = shutil.which("promtool")
    if path is None:
        missing_service("promtool not installed (scripts/services.sh install prometheus)")
    assert path is not None
    return path


class PrometheusService:
    """A real Prometheus started and stopped through scripts/services.sh."""

    def __init__(self, state_dir: Path, port: int) -> None:
        self.state_dir = state_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def _env(self, config: Path | None) -> dict[str, str]:
        env = {**os.environ, "CEEMS_SERVICES_DIR": str(self.state_dir)}
        env["PROMETHEUS_PORT"] = str(self.port)
        if config is not None:
            env["PROMETHEUS_CONFIG"] = str(config)
        return env

    def start(self, config: Path | None = None) -> None:
        """Start (installing if needed) and wait until ready."""
        subprocess.run(
            [str(SERVICES), "start", "prometheus"],
            env=self._env(config),
            check=True,
            capture_output=True,
            timeout=300,
        )

    def stop(self) -> None:
        """Stop by PID."""
        subprocess.run(
            [str(SERVICES), "stop", "prometheus"],
            env=self._env(None),
            check=True,
            capture_output=True,
        )

    def log(self) -> str:
        """Prometheus' own log, for failure messages."""
        path = self.state_dir / "prometheus" / "prometheus.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture
def prometheus_service(tmp_path: Path) -> Iterator[PrometheusService]:
    """An unstarted Prometheus with its own state directory and port; stopped afterwards."""
    if shutil.which("prometheus") is None and os.geteuid() != 0:
        missing_service("prometheus not installed and not root to install it")
    service = PrometheusService(tmp_path / "services", free_port())
    try:
        yield service
    finally:
        service.stop()


StartExporter = Callable[..., Exporter]


@pytest.fixture
def start_exporter() -> Iterator[StartExporter]:
    """Build and start an exporter from command-line flags; closed after the test."""
    started: list[Exporter] = []

    def start(*flags: str) -> Exporter:
        factories = load_factories()
        options = build_parser(factories).parse_args(
            ["--web.listen-address", "127.0.0.1:0", *flags]
        )
        exporter = build_exporter(options, factories)
        exporter.server.start()
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.close()
