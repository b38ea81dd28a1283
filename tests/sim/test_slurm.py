"""The simulated SLURM accounting: the real SLURM manager reads the shims' output."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ceems.api.config import ClusterConfig
from ceems.api.managers.slurm.manager import SlurmManager
from ceems.sim.slurm import SimJob, append_jobs, read_jobs, write_shims

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_manager_reads_simulated_jobs(tmp_path: Path) -> None:
    log = tmp_path / "jobs.jsonl"
    append_jobs(
        log,
        [
            SimJob(
                11,
                "alice",
                "research",
                ms(T0),
                ms(T0),
                ms(T0 + timedelta(hours=1)),
                "COMPLETED",
                cpus=4,
                mem_bytes=8 * 2**30,
                gpus=1,
                nodes=("gpu-1",),
            ),
            SimJob(
                12,
                "carol",
                "physics",
                ms(T0),
                ms(T0 + timedelta(minutes=30)),
                0,
                "RUNNING",
                cpus=2,
                nodes=("cpu-1", "cpu-2"),
            ),
            SimJob(13, "bob", "research", ms(T0), 0, 0, "PENDING"),  # never ran: not listed
        ],
    )
    write_shims(tmp_path / "bin", log)
    cluster = ClusterConfig(id="sim", manager="slurm", cli={"path": str(tmp_path / "bin")})
    manager = SlurmManager(cluster)
    units = {u.uuid: u for u in manager.fetch_units(T0, T0 + timedelta(hours=2))}
    assert set(units) == {"11", "12"}
    alice = units["11"]
    assert (alice.username, alice.project, alice.state) == ("alice", "research", "COMPLETED")
    assert alice.allocation["cpus"] == 4 and alice.allocation["gpus"] == 1
    assert alice.allocation["mem"] == 8 * 2**30
    assert alice.started_at_ts == ms(T0) and alice.ended_at_ts == ms(T0 + timedelta(hours=1))
    assert alice.total_time_seconds["walltime"] == 3600
    assert units["12"].ended_at_ts == 0 and units["12"].allocation["nodes"] == 2
    _users, projects = manager.fetch_users_projects(T0)
    assert {(p.name, tuple(sorted(p.users))) for p in projects} >= {
        ("research", ("alice", "bob")),
        ("physics", ("carol",)),
    }


def test_window_selects_jobs_active_in_it(tmp_path: Path) -> None:
    log = tmp_path / "jobs.jsonl"
    append_jobs(
        log, [SimJob(1, "a", "p", ms(T0), ms(T0), ms(T0 + timedelta(minutes=5)), "COMPLETED")]
    )
    append_jobs(log, [SimJob(1, "a", "p", ms(T0), ms(T0), ms(T0 + timedelta(minutes=9)), "FAILED")])
    assert read_jobs(log)[1].state == "FAILED"  # the last record of an id wins
    sacct, _ = write_shims(tmp_path / "bin", log)
    env = {"TZ": "UTC", "PATH": "/usr/bin:/bin"}

    def listed(start: str, end: str) -> list[str]:
        out = subprocess.run(
            [sacct, f"--starttime={start}", f"--endtime={end}"],
            capture_output=True, text=True, check=True, env=env,
        ).stdout  # fmt: skip
        return [line.split("|")[0] for line in out.splitlines()]

    assert listed("2026-11-20T12:00:00", "2026-11-20T12:01:00") == ["1"]
    assert listed("2026-11-20T12:10:00", "2026-11-20T13:00:00") == []
    assert listed("2026-11-20T11:00:00", "2026-11-20T12:00:00") == []
