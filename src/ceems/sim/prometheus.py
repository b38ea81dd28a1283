"""Run a real Prometheus process for the demo and benchmarks (tests use scripts/services.sh)."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


class PrometheusNotFoundError(RuntimeError):
    """No `prometheus` binary on PATH."""


@dataclass
class PrometheusProcess:
    """A Prometheus on 127.0.0.1:`port` with its data and log under `data_dir`."""

    config: Path
    data_dir: Path
    port: int
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """Base URL of the web UI and HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        """Start and wait until /-/ready answers; raises with the log tail if it dies."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise PrometheusNotFoundError(
                "prometheus is not installed: run `scripts/services.sh install prometheus` "
                "or `apt-get install --no-install-recommends prometheus`"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "prometheus.log").open("ab")  # kept across restarts
        self._proc = subprocess.Popen(
            [
                binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=100y",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.data_dir / "prometheus.log").read_text()[-2000:]
                self.stop()
                raise RuntimeError(f"prometheus did not become ready:\n{tail}")
            time.sleep(0.1)

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (SIGKILL with `kill`, as a crash), then SIGKILL after 15 s."""
        if self._proc is None:
            return
        if kill:
            self._proc.kill()
        else:
            self._proc.terminate()
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


def scrape_config(targets: dict[str, str], interval_s: float = 5.0) -> str:
    """A prometheus.yml scraping each exporter (job `ceems`, instance = node name)."""
    lines = [
        f"global: {{scrape_interval: {interval_s:g}s, evaluation_interval: {interval_s:g}s}}",
        "scrape_configs:",
        "  - job_name: ceems",
        "    static_configs:",
    ]
    for node, target in targets.items():
        lines.append(f"      - targets: ['{target}']")
        lines.append(f"        labels: {{node: '{node}'}}")
    return "\n".join(lines) + "\n"
