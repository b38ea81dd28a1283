"""The sacct source: recorded sacct/sacctmgr output, and fake tools that fail, hang or vanish."""

from __future__ import annotations

import itertools
import logging
import os
import stat
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ceems.api.config import ClusterConfig
from ceems.api.managers.protocol import ManagerError
from ceems.api.managers.slurm.manager import SlurmManager
from ceems.api.managers.slurm.sacct import (
    SACCT_FIELDS,
    SACCT_FORMAT,
    parse_sacct,
    parse_sacct_records,
    parse_sacctmgr,
    sacct_args,
    sacct_jobs_args,
)
from ceems.api.models import Project, Unit, User
from ceems.sim.slurm import SimJob, append_jobs, write_shims
from tests.conftest import FIXTURES

SLURM = FIXTURES / "slurm"
G = 1024**3
M = 1024**2


def read(name: str) -> str:
    return (SLURM / name).read_text()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000


def by_uuid(units: list[Unit]) -> dict[str, Unit]:
    return {unit.uuid: unit for unit in units}


# ---- recorded output ---------------------------------------------------------------------


REAL_START, REAL_END = utc(2026, 11, 23, 1, 50), utc(2026, 11, 23, 2, 0)


def test_real_sacct_output_gives_ceems_units() -> None:
    units = by_uuid(parse_sacct("c1", read("sacct/slurm-22.05.txt"), REAL_START, REAL_END))
    assert sorted(units) == ["1", "2", "4", "5"]  # 3 never ran ("None assigned")
    assert units["1"] == Unit(
        cluster_id="c1",
        resource_manager="slurm",
        uuid="1",
        name="ceems-ünï",
        project="research",
        groupname="alice",
        username="alice",
        created_at_ts=ms(utc(2026, 11, 23, 1, 52, 42)),
        started_at_ts=ms(utc(2026, 11, 23, 1, 52, 44)),
        ended_at_ts=ms(utc(2026, 11, 23, 1, 52, 47)),
        state="COMPLETED",
        allocation={"billing": 2, "cpus": 2, "gpus": 0, "mem": 300 * M, "nodes": 1},
        tags={
            "exit_code": "0:0", "gid": 1001, "nodelist": "vm", "nodelistexp": "vm",
            "partition": "debug", "qos": "normal", "uid": 1001, "workdir": "/tmp",
        },
        total_time_seconds={
            "walltime": 3.0, "alloc_cputime": 6.0, "alloc_cpumemtime": 900.0,
            "alloc_gputime": 0.0, "alloc_gpumemtime": 0.0,
        },
    )  # fmt: skip


def test_real_sacct_states_exit_codes_and_owners() -> None:
    units = by_uuid(parse_sacct("c1", read("sacct/slurm-22.05.txt"), REAL_START, REAL_END))
    assert {u: (x.username, x.project, x.state, x.tags["exit_code"]) for u, x in units.items()} == {
        "1": ("alice", "research", "COMPLETED", "0:0"),
        "2": ("carol", "physics", "FAILED", "3:0"),
        "4": ("bob", "research", "CANCELLED by 0", "0:0"),
        "5": ("bob", "research", "COMPLETED", "0:0"),
    }


def test_pipe_in_a_job_name_stays_in_the_name() -> None:
    units = by_uuid(parse_sacct("c1", read("sacct/slurm-22.05.txt"), REAL_START, REAL_END))
    assert (units["2"].name, units["2"].tags["workdir"]) == ("pipe|name", "/tmp")


GPU_START, GPU_END = utc(2024, 2, 21, 13), utc(2024, 2, 21, 16)


def test_gpu_cluster_allocations() -> None:
    units = by_uuid(parse_sacct("c1", read("sacct/gpu-cluster.txt"), GPU_START, GPU_END))
    assert {u: dict(x.allocation) for u, x in units.items()} == {
        "1479763": {"billing": 80, "cpus": 8, "gpus": 8, "mem": 320 * G, "nodes": 1},
        "1481508": {"billing": 160, "cpus": 16, "gpus": 0, "mem": int(320.5 * G), "nodes": 2},
        "1481510": {"billing": 32, "cpus": 4, "gpus": 2, "mem": 64000 * M, "nodes": 2},
        "1481511": {"billing": 4, "cpus": 4, "gpus": 3, "mem": 4 * 1024 * G, "nodes": 1},
        "2009248": {"billing": 2, "cpus": 2, "gpus": 0, "mem": 1024 * 1024, "nodes": 3},
    }


def test_gpu_cluster_tags_and_times_with_offsets() -> None:
    units = by_uuid(parse_sacct("c1", read("sacct/gpu-cluster.txt"), GPU_START, GPU_END))
    typed = units["1481510"]
    assert typed.tags["nodelistexp"] == "gpu-01|gpu-02|login1"
    assert typed.tags["exit_code"] == "1:0"
    assert typed.started_at_ts == ms(utc(2024, 2, 21, 14, 49, 6))  # +0100 -> UTC
    assert typed.total_time_seconds["alloc_gputime"] == 34.0
    assert typed.total_time_seconds["alloc_gpumemtime"] == 17.0
    running = units["2009248"]
    assert running.ended_at_ts == 0
    assert (
        running.tags["nodelistexp"] == "rack1-n8|rack1-n9|rack1-n10|rack2-n8|rack2-n9|rack2-n10|r9"
    )
    # running: counted from its start (14:49:06 UTC) up to the window's end (16:00 UTC)
    assert running.total_time_seconds["walltime"] == 4254.0


def test_window_clips_usage_times() -> None:
    start, end = utc(2024, 2, 21, 14, 0), utc(2024, 2, 21, 14, 50)  # first job: 13:37:07-14:26:29
    unit = by_uuid(parse_sacct("c1", read("sacct/gpu-cluster.txt"), start, end))["1479763"]
    assert unit.total_time_seconds == {
        "walltime": 1589.0,  # 14:00:00 to 14:26:29
        "alloc_cputime": 1589.0 * 8,
        "alloc_cpumemtime": 1589.0 * 320 * 1024,
        "alloc_gputime": 1589.0 * 8,
        "alloc_gpumemtime": 1589.0,
    }


def test_consecutive_windows_add_up_to_the_whole_job() -> None:
    text = read("sacct/gpu-cluster.txt")
    edges = [GPU_START + timedelta(minutes=15 * i) for i in range(13)]
    total = sum(
        by_uuid(parse_sacct("c1", text, a, b))["1481508"].total_time_seconds["walltime"]
        for a, b in itertools.pairwise(edges)
    )
    assert total == 497.0


ODD_START, ODD_END = utc(2024, 3, 1, 10), utc(2024, 3, 1, 11)


def test_odd_lines_keep_the_good_jobs() -> None:
    units = by_uuid(parse_sacct("c1", read("sacct/odd-lines.txt"), ODD_START, ODD_END))
    assert sorted(units) == ["100", "102", "106", "107", "110", "111"]
    assert units["102"].name == "a|b|c"
    assert units["107"].name == "日本語のジョブ 🚀"
    assert units["107"].tags["workdir"] == "/home/usr2/données"
    assert units["110"].tags["workdir"] == "/home/usr2"  # `--parsable` trailing `|`
    assert units["111"].state == "CANCELLED by 1002"


def test_unknown_start_is_zero_and_uses_no_time() -> None:
    units = by_uuid(parse_sacct("c1", read("sacct/odd-lines.txt"), ODD_START, ODD_END))
    assert (units["106"].started_at_ts, units["106"].ended_at_ts) == (0, 0)
    assert units["106"].total_time_seconds["walltime"] == 0.0


def test_odd_lines_are_reported_with_number_and_content(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ceems.api.managers.slurm.sacct")
    parse_sacct("c1", read("sacct/odd-lines.txt"), ODD_START, ODD_END)
    lines = read("sacct/odd-lines.txt").splitlines()
    reported: dict[int, Any] = {r.line: r for r in caplog.records}  # type: ignore[attr-defined]
    assert sorted(reported) == [3, 4, 5, 6, 11, 12, 14]
    for number, record in reported.items():
        assert record.content == lines[number - 1]
        assert record.cluster == "c1"
    assert "bad time 'yesterday'" in reported[5].reason
    assert "bad time '2024-03-01T10:00:00'" in reported[6].reason
    assert "TRES" in reported[11].reason
    assert "host list" in reported[12].reason
    assert reported[3].reason == f"11 fields, expected {len(SACCT_FIELDS)}"


def test_empty_output_is_no_units() -> None:
    assert parse_sacct("c1", "", ODD_START, ODD_END) == []


def test_sacct_args_follow_ceems() -> None:
    args = sacct_args(utc(2024, 3, 1, 10), datetime.fromisoformat("2024-03-01T12:15:00+01:00"))
    assert args == [
        "--duplicates", "--allocations", "--noheader", "--allusers", "--parsable2",
        "--format=jobidraw,partition,qos,account,group,gid,user,uid,submit%30,start%30,end%30,"
        "elapsed,elapsedraw,exitcode,state,alloctres,nodelist,jobname,workdir",
        "--state=CANCELLED,COMPLETED,FAILED,NODE_FAIL,PREEMPTED,TIMEOUT,RUNNING",
        "--starttime=2024-03-01T10:00:00",
        "--endtime=2024-03-01T11:15:00",
    ]  # fmt: skip


def test_sacct_args_refuse_naive_times() -> None:
    with pytest.raises(ValueError, match="naive"):
        sacct_args(datetime(2024, 3, 1), datetime(2024, 3, 2))


def test_sacct_jobs_args_ask_for_every_record_of_the_jobs() -> None:
    assert sacct_jobs_args(["12", "7"]) == [
        "--duplicates", "--allocations", "--noheader", "--allusers", "--parsable2",
        f"--format={SACCT_FORMAT}",
        "--jobs=12,7",
    ]  # fmt: skip


@pytest.mark.parametrize("ids", [[], ["12", "7.batch"], ["1,2"], ["-1"], ["١٢"]])
def test_sacct_jobs_args_take_job_numbers_only(ids: list[str]) -> None:
    with pytest.raises(ValueError, match="job ids must be numbers"):
        sacct_jobs_args(ids)


def test_records_are_the_window_units_without_usage() -> None:
    text = read("sacct/slurm-22.05.txt")
    records = by_uuid(parse_sacct_records("c1", text))
    windowed = by_uuid(parse_sacct("c1", text, REAL_START, REAL_END))
    assert sorted(records) == sorted(windowed)
    for uuid, record in records.items():
        assert record.total_time_seconds == {} and record.metrics == {}
        assert (
            replace(record, total_time_seconds=windowed[uuid].total_time_seconds)
            == (windowed[uuid])
        )


def test_real_sacctmgr_associations() -> None:
    users, projects = parse_sacctmgr("c1", read("sacctmgr/slurm-22.05.txt"))
    assert users == [
        User("c1", "slurm", "alice", projects=("research",)),
        User("c1", "slurm", "bob", projects=("research",)),
        User("c1", "slurm", "carol", projects=("physics",)),
    ]
    assert projects == [
        Project("c1", "slurm", "physics", users=("carol",)),
        Project("c1", "slurm", "research", users=("alice", "bob")),
    ]


def test_sacctmgr_odd_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ceems.api.managers.slurm.sacct")
    users, projects = parse_sacctmgr("c1", read("sacctmgr/odd-lines.txt"))
    assert [(u.name, u.projects) for u in users] == [
        ("alice", ("research",)),
        ("bob", ("physics", "research")),
        ("carol", ("physics",)),
    ]
    assert [(p.name, p.users) for p in projects] == [
        ("physics", ("bob", "carol")),
        ("research", ("alice", "bob")),
    ]
    assert [r.line for r in caplog.records] == [11, 12]  # type: ignore[attr-defined]


# ---- running the tools -------------------------------------------------------------------


def tool(directory: Path, name: str, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def manager(bin_dir: Path | str, **extra: Any) -> SlurmManager:
    cluster = ClusterConfig.model_validate(
        {
            "id": "c1",
            "manager": "slurm",
            "cli": {"path": str(bin_dir), "environment_variables": {"SLURM_CONF": "/x.conf"}},
            "extra_config": extra,
        }
    )
    return SlurmManager(cluster)


def test_fetch_units_runs_sacct_with_utc_times_and_environment(tmp_path: Path) -> None:
    record = tmp_path / "record"
    bin_dir = tmp_path / "bin"
    tool(
        bin_dir,
        "sacct",
        f'printf "%s\\n" "$@" > {record}\n'
        f'echo "TF=$SLURM_TIME_FORMAT TZ=$TZ CONF=$SLURM_CONF" >> {record}\n'
        f"cat {SLURM / 'sacct/slurm-22.05.txt'}\n",
    )
    units = manager(bin_dir).fetch_units(REAL_START, REAL_END)
    assert sorted(u.uuid for u in units) == ["1", "2", "4", "5"]
    lines = record.read_text().splitlines()
    assert lines[:-1] == sacct_args(REAL_START, REAL_END)
    assert f"--format={SACCT_FORMAT}" in lines
    assert lines[-1] == "TF=%Y-%m-%dT%H:%M:%S%z TZ=UTC CONF=/x.conf"


def test_our_time_format_wins_over_configured_environment(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "sacct", 'echo "$SLURM_TIME_FORMAT" >&2; exit 3\n')
    cluster = ClusterConfig.model_validate(
        {"id": "c1", "manager": "slurm",
         "cli": {"path": str(bin_dir), "environment_variables": {"SLURM_TIME_FORMAT": "%s"}}}
    )  # fmt: skip
    with pytest.raises(ManagerError, match=r"%Y-%m-%dT%H:%M:%S%z"):
        SlurmManager(cluster).fetch_units(REAL_START, REAL_END)


def test_sacct_failure_names_command_status_and_stderr(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "sacct", 'echo "sacct: error: Problem talking to the database" >&2; exit 1\n')
    with pytest.raises(ManagerError) as caught:
        manager(bin_dir).fetch_units(REAL_START, REAL_END)
    message = str(caught.value)
    assert message.startswith("cluster 'c1': ")
    assert f"{bin_dir}/sacct --duplicates" in message
    assert "exited with status 1: sacct: error: Problem talking to the database" in message


def test_hanging_sacct_times_out_and_is_killed(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    pid_file = tmp_path / "child.pid"
    # the child holds stdout open: a plain subprocess.run timeout would wait for it
    tool(bin_dir, "sacct", f"sleep 30 &\necho $! > {pid_file}\nwait\n")
    began = time.monotonic()
    with pytest.raises(ManagerError, match=r"timed out after 0.5 s"):
        manager(bin_dir, cli_timeout="500ms").fetch_units(REAL_START, REAL_END)
    assert time.monotonic() - began < 5
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        stat_line = Path(f"/proc/{child}/stat").read_text()
        if stat_line.rsplit(")", 1)[1].split()[0] == "Z":
            break  # killed, waiting for its reaper
        time.sleep(0.05)
    else:
        assert not Path(f"/proc/{child}").exists()


def test_missing_sacct_in_cli_path(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    with pytest.raises(ManagerError, match=r"cluster 'c1': sacct not found at .*/bin/sacct"):
        manager(tmp_path / "bin").fetch_units(REAL_START, REAL_END)


def test_missing_sacct_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ManagerError, match=r"sacct not found on PATH"):
        manager("").fetch_units(REAL_START, REAL_END)


def test_sacct_found_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool(tmp_path / "bin", "sacct", f"cat {SLURM / 'sacct/slurm-22.05.txt'}\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert len(manager("").fetch_units(REAL_START, REAL_END)) == 4


def test_undecodable_job_name_keeps_the_job(tmp_path: Path) -> None:
    line = read("sacct/slurm-22.05.txt").splitlines()[0].replace("ceems-ünï", "caf\\351")
    tool(tmp_path / "bin", "sacct", f"printf '%b\\n' '{line}'\n")
    (unit,) = manager(tmp_path / "bin").fetch_units(REAL_START, REAL_END)
    assert unit.name == "caf\ufffd"


def test_sudo_runs_the_tool_by_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "record"
    tool(tmp_path / "bin", "sacctmgr", f"cat {SLURM / 'sacctmgr/slurm-22.05.txt'}\n")
    # a stand-in sudo: records its arguments, then runs the command after `-n -E`
    tool(tmp_path / "sudo-bin", "sudo", f'printf "%s " "$@" > {record}\nshift 2\nexec "$@"\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'sudo-bin'}{os.pathsep}{os.environ['PATH']}")
    users, projects = manager(tmp_path / "bin", sudo=True).fetch_users_projects(REAL_END)
    assert [u.name for u in users] == ["alice", "bob", "carol"]
    assert [p.name for p in projects] == ["physics", "research"]
    assert record.read_text().split() == [
        "-n", "-E", str(tmp_path / "bin" / "sacctmgr"),
        "--parsable2", "--noheader", "list", "associations", "format=Account,User",
    ]  # fmt: skip


def test_sudo_refusal_is_a_manager_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool(tmp_path / "bin", "sacct", "exit 0\n")
    tool(
        tmp_path / "sudo-bin",
        "sudo",
        'echo "sudo: sorry, you are not allowed to preserve the environment" >&2; exit 1\n',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'sudo-bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ManagerError, match="not allowed to preserve the environment"):
        manager(tmp_path / "bin", sudo=True).fetch_units(REAL_START, REAL_END)


def test_sacctmgr_failure(tmp_path: Path) -> None:
    tool(tmp_path / "bin", "sacctmgr", "echo 'sacctmgr: error: Access denied' >&2; exit 1\n")
    with pytest.raises(ManagerError, match=r"sacctmgr --parsable2 .* status 1: .*Access denied"):
        manager(tmp_path / "bin").fetch_users_projects(REAL_END)


# ---- extra_config ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"source": "squeue"}, r"extra_config: source: Input should be 'sacct' or 'slurmrestd'"),
        ({"sudo": "perhaps"}, r"extra_config: sudo: "),
        ({"cli_timeout": "0s"}, r"extra_config: cli_timeout: .*positive"),
        ({"colour": "blue"}, r"extra_config: colour: unknown key"),
        ({"restd": {"token_lifetime": "10s"}}, r"restd.token_lifetime: .*at least 30s"),
        ({"token": "a", "restd": {"token": "b"}}, r"token given both flat and under restd"),
        ({"restd": {"token": "a", "jwt_key_file": "/k"}}, r"give one of token, token_file"),
    ],
)
def test_bad_extra_config_names_cluster_and_key(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ManagerError, match=rf"^cluster 'c1': .*{message}"):
        manager("/usr/bin", **extra)


def test_defaults_use_sacct() -> None:
    slurm = manager("/usr/bin")
    assert slurm.options.source == "sacct"
    assert slurm.options.cli_timeout == timedelta(minutes=1)
    assert not slurm.options.sudo


# ---- records by job id -------------------------------------------------------------------


def test_fetch_units_by_id_runs_sacct_jobs_in_batches(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    record = tmp_path / "record"
    bin_dir = tmp_path / "bin"
    tool(
        bin_dir,
        "sacct",
        f'echo "$TZ $SLURM_TIME_FORMAT $*" >> {record}\ncat {SLURM / "sacct/slurm-22.05.txt"}\n',
    )
    caplog.set_level(logging.WARNING, logger="ceems.api.managers.slurm.manager")
    ids = [str(n) for n in range(1, 251)]
    units = manager(bin_dir).fetch_units_by_id([*ids, "vm-0a1b", "3"])
    calls = record.read_text().splitlines()
    # ids sorted as numbers, 100 a call; the one that is not a job id never reaches sacct
    jobs = [call.rsplit(" ", 1)[1] for call in calls]
    assert jobs == [
        "--jobs=" + ",".join(str(n) for n in range(1, 101)),
        "--jobs=" + ",".join(str(n) for n in range(101, 201)),
        "--jobs=" + ",".join(str(n) for n in range(201, 251)),
    ]
    assert all(call.startswith("UTC %Y-%m-%dT%H:%M:%S%z --duplicates") for call in calls)
    assert all("--starttime" not in call and "--state" not in call for call in calls)
    assert len(units) == 3 * 4 and all(u.total_time_seconds == {} for u in units)
    (warning,) = [r for r in caplog.records if r.name == "ceems.api.managers.slurm.manager"]
    assert warning.uuids == ["vm-0a1b"]  # type: ignore[attr-defined]


def test_fetch_units_by_id_of_no_job_ids_runs_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "sacct", "exit 1\n")
    assert manager(bin_dir).fetch_units_by_id([]) == []
    assert manager(bin_dir).fetch_units_by_id(["a", "1.batch"]) == []


def test_fetch_units_by_id_failure_is_a_manager_error(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    tool(bin_dir, "sacct", 'echo "sacct: error: Problem talking to the database" >&2; exit 1\n')
    with pytest.raises(ManagerError, match=r"--jobs=4,5 exited with status 1"):
        manager(bin_dir).fetch_units_by_id(["5", "4"])


def test_simulated_sacct_answers_by_job_id(tmp_path: Path) -> None:
    """The demo's sacct shim takes --jobs too: whatever the job's state and time."""
    log = tmp_path / "jobs.jsonl"
    start = utc(2026, 11, 20, 12)
    end = start + timedelta(hours=1)
    append_jobs(
        log,
        [
            SimJob(7, "alice", "research", ms(start), ms(start), ms(end), "COMPLETED",
                   exit_code="2:0"),
            SimJob(8, "bob", "research", ms(start), ms(start)),
            SimJob(9, "carol", "physics", ms(start), 0, 0, "PENDING"),
        ],
    )  # fmt: skip
    write_shims(tmp_path / "bin", log)
    records = by_uuid(manager(tmp_path / "bin").fetch_units_by_id(["7", "8", "9", "10"]))
    assert sorted(records) == ["7", "8"]  # 9 never ran, 10 is unknown
    seven = records["7"]
    assert (seven.state, seven.ended_at_ts, seven.tags["exit_code"]) == (
        "COMPLETED",
        ms(end),
        "2:0",
    )
    assert (records["8"].state, records["8"].ended_at_ts) == ("RUNNING", 0)
    assert seven.total_time_seconds == {}
