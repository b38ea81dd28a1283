"""`ceems demo` end to end: simulated nodes, real exporters, a real Prometheus, clean stop."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import missing_service

CEEMS = str(Path(sys.executable).parent / "ceems")


def test_demo_runs_the_stack_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        missing_service("prometheus not installed (scripts/services.sh install prometheus)")
    proc = subprocess.Popen(
        [CEEMS, "demo", "--nodes", "2", "--speed", "10", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = ""
        while "Ctrl-C" not in banner:
            line = proc.stdout.readline()
            assert line, f"demo exited early: {proc.stderr.read() if proc.stderr else ''}"
            banner += line
        exporters = re.findall(r"exporter (sim-node-\d): (http://\S+)", banner)
        prometheus = re.search(r"prometheus: (http://\S+)", banner)
        assert [name for name, _ in exporters] == ["sim-node-0", "sim-node-1"]
        assert prometheus is not None
        assert "ceems_ipmi_dcmi_current_watts" in httpx.get(exporters[0][1]).text
        query = "count(ceems_rapl_package_joules_total)"
        deadline = time.monotonic() + 60
        while True:
            result = httpx.get(
                f"{prometheus.group(1)}/api/v1/query", params={"query": query}
            ).json()["data"]["result"]
            if result and result[0]["value"][1] == "4":  # 2 nodes x 2 sockets
                break
            assert time.monotonic() < deadline, "Prometheus never scraped both nodes"
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "stopped; data kept in" in out
    assert (tmp_path / "nodes" / "sim-node-1" / "state" / "ground_truth.json").exists()
    for _, url in exporters:  # every exporter went away with the demo
        try:
            httpx.get(url, timeout=1)
            raise AssertionError(f"{url} still answers after the demo stopped")
        except httpx.ConnectError:
            pass


def test_demo_refuses_bad_options() -> None:
    result = subprocess.run(
        [CEEMS, "demo", "--nodes", "0"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2 and "--nodes must be >= 1" in result.stderr
