"""ceems_api_server as a process: config errors, the writer loop, access, crash safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ceems.sim.slurm import SimJob, append_jobs, write_shims
from tests.conftest import free_port

SERVER = str(Path(sys.executable).parent / "ceems_api_server")
NOW = datetime.now(UTC).replace(microsecond=0)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def jobs(days: int = 10) -> list[SimJob]:
    """Two users of `research`, one of `physics`; jobs spread over the last `days` days."""
    out = []
    users = [("alice", "research", 1001), ("bob", "research", 1002), ("carol", "physics", 1003)]
    for i in range(30):
        user, account, uid = users[i % 3]
        start = NOW - timedelta(days=days) + timedelta(hours=7 * i + 1)
        end = start + timedelta(hours=2 + i % 5)
        out.append(SimJob(5000 + i, user, account, ms(start - timedelta(minutes=5)), ms(start),
                          ms(end), "COMPLETED", cpus=1 + i % 4, mem_bytes=2**30 * (1 + i % 3),
                          uid=uid, name=f"job{i}"))  # fmt: skip
    return out


def write_config(tmp: Path, data_dir: Path, update_from: datetime, max_interval: str) -> Path:
    log = tmp / "jobs.jsonl"
    if not log.exists():
        append_jobs(log, jobs())
        write_shims(tmp / "bin", log)
    config = tmp / f"config-{data_dir.name}.yml"
    config.write_text(
        "ceems_api_server:\n"
        "  data:\n"
        f"    path: {data_dir}\n"
        "    update_interval: 1s\n"
        f"    max_update_interval: {max_interval}\n"
        f"    update_from: '{update_from.isoformat()}'\n"
        "    retention_period: 1y\n"
        "  admin:\n"
        "    users: [admin]\n"
        "clusters:\n"
        "  - id: sim\n"
        "    manager: slurm\n"
        "    cli:\n"
        f"      path: {tmp / 'bin'}\n"
    )
    return config


class Server:
    """A ceems_api_server process on a free loopback port."""

    def __init__(self, config: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                SERVER,
                "--config.file",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{self.port}",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    return
            except httpx.ConnectError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {self.output()}")
            time.sleep(0.1)

    def get(self, path: str, user: str | None, **params: Any) -> httpx.Response:
        headers = {"X-Grafana-User": user} if user else {}
        return httpx.get(f"{self.url}/api/v1/{path}", params=params, headers=headers)

    def output(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.communicate(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    config = write_config(tmp_path, tmp_path / "data", NOW - timedelta(days=11), "1d")
    running = Server(config)
    yield running
    running.stop()


def wait_caught_up(data_dir: Path, timeout_s: float = 60) -> None:
    """Until the writer's checkpoint for `sim` is within a few seconds of now."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(f"file:{data_dir / 'ceems.db'}?mode=ro", uri=True) as db:
                row = db.execute(
                    "select last_update_ts from updates where cluster_id='sim'"
                ).fetchone()
            # The window ending at the server's own "now" (after NOW) is the cycle's last:
            # it also stores users and projects.
            if row and row[0] > ms(NOW):
                return
        except sqlite3.OperationalError:
            pass
        time.sleep(0.2)
    raise AssertionError("writer did not catch up")


def test_units_through_the_api_with_access_control(server: Server, tmp_path: Path) -> None:
    wait_caught_up(tmp_path / "data")
    window = {"from": int((NOW - timedelta(days=12)).timestamp()), "to": int(NOW.timestamp())}
    every = server.get("units/admin", "admin", **window).json()["data"]
    assert len(every) == 30
    job = next(u for u in every if u["uuid"] == "5004")
    assert job["username"] == "bob" and job["project"] == "research"
    assert job["allocation"]["cpus"] == 1 + 4 % 4 and job["state"] == "COMPLETED"
    assert job["total_time_seconds"]["walltime"] == (2 + 4 % 5) * 3600
    alice = server.get("units", "alice", **window).json()["data"]
    assert {u["username"] for u in alice} == {"alice", "bob"}  # research members
    carol = server.get("units", "carol", **window).json()["data"]
    assert {u["username"] for u in carol} == {"carol"} and len(carol) == 10
    assert server.get("units", None).status_code == 401
    assert server.get("units/admin", "alice").status_code == 403
    projects = server.get("projects", "carol").json()["data"]
    assert [p["name"] for p in projects] == ["physics"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'ceems_api_server_update_windows_total{cluster="sim"}' in metrics
    # The kept texts of rendered units are counted (tests/api/store/test_unit_texts.py).
    assert "ceems_api_server_units_cache_hits_total " in metrics
    assert server.get("units", "carol", **window).json()["data"] == carol


def test_bad_config_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "bad.yml"
    config.write_text("ceems_api_server:\n  data:\n    update_interval: soon\nclusters: []\n")
    result = subprocess.run([SERVER, "--config.file", str(config)], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert "ceems_api_server.data.update_interval" in result.stderr and "soon" in result.stderr
    data = tmp_path / "never-created"
    config.write_text(
        f"ceems_api_server: {{data: {{path: {data}}}}}\nclusters:\n  - {{id: c1, manager: pbs}}\n"
    )
    result = subprocess.run([SERVER, "--config.file", str(config), "--web.listen-address",
                             f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 1 and "pbs" in result.stderr
    assert not data.exists()  # refused before the store was touched


def snapshot(data_dir: Path) -> dict[str, Any]:
    """Lifetime figures of every unit and every usage row: what double counting would change."""
    with sqlite3.connect(f"file:{data_dir / 'ceems.db'}?mode=ro", uri=True) as db:
        units = db.execute(
            "select uuid, total_time_seconds, num_updates > 0 from units order by uuid"
        ).fetchall()
        usage = db.execute(
            "select username, project, num_units, total_time_seconds from usage "
            "order by username, project"
        ).fetchall()
    return {"units": units, "usage": usage}


def test_sigkill_mid_backfill_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    """Back-fill 11 days in 2 h windows, SIGKILL it half-way, restart: same store as a clean run."""
    since = NOW - timedelta(days=11)
    reference = Server(write_config(tmp_path, tmp_path / "clean", since, "2h"))
    wait_caught_up(tmp_path / "clean", timeout_s=240)
    reference.stop()
    victim = Server(write_config(tmp_path, tmp_path / "killed", since, "2h"))
    time.sleep(3.0)  # a few windows in, mid-transaction with luck
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(timeout=30)
    partial = (
        snapshot(tmp_path / "killed")["units"]
        if (tmp_path / "killed" / "ceems.db").exists()
        else []
    )
    assert len(partial) < 30, "the back-fill finished before the kill; make it longer"
    restarted = Server(write_config(tmp_path, tmp_path / "killed", since, "2h"))
    wait_caught_up(tmp_path / "killed", timeout_s=240)
    restarted.stop()
    assert snapshot(tmp_path / "killed") == snapshot(tmp_path / "clean")
