"""`ceems demo`: the whole stack comes up, the banner's examples work, Ctrl-C stops it."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import missing_service

CEEMS = str(Path(sys.executable).parent / "ceems")


def _curl_args(line: str) -> tuple[dict[str, str], str]:
    """Headers and URL of a `curl -s -H ... 'URL'` line of the banner."""
    words = shlex.split(line.strip())
    headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
    return headers, words[-1]


def test_demo_runs_the_stack_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        missing_service("prometheus not installed (scripts/services.sh install prometheus)")
    proc = subprocess.Popen(
        [CEEMS, "demo", "--nodes", "2", "--scrape-interval", "1", "--update-interval", "3",
         "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    urls: list[str] = []
    try:
        assert proc.stdout is not None
        banner = ""
        while "Ctrl-C" not in banner:
            line = proc.stdout.readline()
            assert line, f"demo exited early: {proc.stderr.read() if proc.stderr else ''}"
            banner += line
        exporters = re.findall(r"exporter (sim-node-\d) \((\w+)\): (http://\S+)", banner)
        assert [(name, role) for name, role, _ in exporters] == [
            ("sim-node-0", "cpu"), ("sim-node-1", "gpu"),
        ]  # fmt: skip
        urls = [url for _, _, url in exporters]
        for name in ("prometheus", "api server", "ceems_lb"):
            found = re.search(rf"{name}:\s+(http://\S+)", banner)
            assert found is not None, name
            urls.append(found.group(1))
        lines = banner.splitlines()
        allowed = lines[lines.index(next(x for x in lines if "(allowed)" in x)) + 1]
        refused = lines[lines.index(next(x for x in lines if "(refused" in x)) + 1]
        units = next(x for x in lines if "/api/v1/units?running" in x)
        headers, url = _curl_args(units)
        deadline = time.monotonic() + 60
        while not httpx.get(url, headers=headers).json()["data"]:
            assert time.monotonic() < deadline, "the API server never listed a running job"
            time.sleep(0.5)
        headers, url = _curl_args(allowed)
        while not httpx.get(url, headers=headers).json()["data"]["result"]:
            assert time.monotonic() < deadline, "the allowed LB query never had data"
            time.sleep(0.5)
        headers, url = _curl_args(refused)
        assert httpx.get(url, headers=headers).status_code == 403
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0
    assert "stopped; data kept in" in out
    assert (tmp_path / "cluster" / "nodes" / "sim-node-1" / "state" / "ground_truth.json").exists()
    for url in urls:  # every component went away with the demo
        try:
            httpx.get(url, timeout=1)
            raise AssertionError(f"{url} still answers after the demo stopped")
        except httpx.ConnectError:
            pass


def test_demo_refuses_bad_options() -> None:
    for args, reason in (
        (["--nodes", "0"], "--nodes must be >= 1"),
        (["--job-duration", "10", "5"], "--job-duration"),
        (["--scrape-interval", "10", "--update-interval", "5"], "--update-interval"),
    ):
        result = subprocess.run([CEEMS, "demo", *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and reason in result.stderr, result.stderr
