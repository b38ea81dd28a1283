"""A simulated SLURM accounting database: a job log and `sacct`/`sacctmgr` shims reading it.

The API server's real SLURM manager runs these shims exactly as it runs SLURM's tools, so
the demo and tests exercise its command handling and parsing on realistic output.

    python -m ceems.sim.slurm --log JOBS.jsonl sacct -- [sacct options]
    python -m ceems.sim.slurm --log JOBS.jsonl sacctmgr -- [sacctmgr options]
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

# The fields CEEMS asks sacct for, in its order (ceems.api.managers.slurm.sacct.SACCT_FIELDS).
SACCT_FIELDS = (
    "jobidraw", "partition", "qos", "account", "group", "gid", "user", "uid",
    "submit", "start", "end", "elapsed", "elapsedraw", "exitcode", "state",
    "alloctres", "nodelist", "jobname", "workdir",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SimJob:
    """One job as slurmdbd records it; times in UTC epoch ms, 0 = not yet."""

    job_id: int
    user: str
    account: str
    submit_ms: int
    start_ms: int
    end_ms: int = 0
    state: str = "RUNNING"
    cpus: int = 1
    mem_bytes: int = 2**30
    gpus: int = 0
    nodes: tuple[str, ...] = ("node0",)
    uid: int = 1000
    group: str = "users"
    gid: int = 100
    partition: str = "batch"
    qos: str = "normal"
    name: str = "job"
    workdir: str = "/tmp"
    exit_code: str = "0:0"
    extra: dict[str, str] = field(default_factory=dict)


def append_jobs(log: Path, jobs: Iterable[SimJob]) -> None:
    """Add (or, with the same id, update) jobs in the log; the last line of an id wins."""
    with log.open("a") as handle:
        for job in jobs:
            record = asdict(job)
            record["nodes"] = list(job.nodes)
            handle.write(json.dumps(record) + "\n")


def read_jobs(log: Path) -> dict[int, SimJob]:
    """Current state of every job in the log."""
    jobs: dict[int, SimJob] = {}
    if not log.exists():
        return jobs
    for line in log.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            record["nodes"] = tuple(record["nodes"])
            jobs[record["job_id"]] = SimJob(**record)
    return jobs


def _mem(bytes_: int) -> str:
    for unit, size in (("T", 2**40), ("G", 2**30), ("M", 2**20)):
        if bytes_ % size == 0:
            return f"{bytes_ // size}{unit}"
    return f"{bytes_ // 1024}K"


def _elapsed(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def _nodelist(nodes: Sequence[str]) -> str:
    return ",".join(nodes)


def format_job(job: SimJob, now_ms: int, time_format: str, zone: ZoneInfo) -> str:
    """One `--parsable2` line with SACCT_FIELDS, as sacct prints it at `now_ms`."""

    def when(ms: int) -> str:
        if not ms:
            return "Unknown"
        return datetime.fromtimestamp(ms / 1000, zone).strftime(time_format)

    end = job.end_ms or now_ms
    elapsed = max(0, (end - job.start_ms) // 1000) if job.start_ms else 0
    tres = f"billing={job.cpus},cpu={job.cpus},mem={_mem(job.mem_bytes)},node={len(job.nodes)}"
    if job.gpus:
        tres += f",gres/gpu={job.gpus}"
    values = {
        "jobidraw": str(job.job_id), "partition": job.partition, "qos": job.qos,
        "account": job.account, "group": job.group, "gid": str(job.gid), "user": job.user,
        "uid": str(job.uid), "submit": when(job.submit_ms), "start": when(job.start_ms),
        "end": when(job.end_ms), "elapsed": _elapsed(elapsed), "elapsedraw": str(elapsed),
        "exitcode": job.exit_code, "state": job.state,
        "alloctres": tres if job.start_ms else "",
        "nodelist": _nodelist(job.nodes) if job.start_ms else "None assigned",
        "jobname": job.name, "workdir": job.workdir,
    }  # fmt: skip
    return "|".join(values[f] for f in SACCT_FIELDS)


def _parse_cli_time(text: str, zone: ZoneInfo) -> int:
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return int(datetime.strptime(text, fmt).replace(tzinfo=zone).timestamp() * 1000)
        except ValueError:
            continue
    raise SystemExit(f"sacct: error: Invalid time specification: {text}")


def sacct(argv: Sequence[str], log: Path, now_ms: int) -> str:
    """Jobs that were active in [--starttime, --endtime), like `sacct --allusers -X`; with
    `--jobs=ID,...` (and no times, as CEEMS asks) those jobs whatever their state."""
    parser = argparse.ArgumentParser(prog="sacct", add_help=False)
    parser.add_argument("--starttime", "-S")
    parser.add_argument("--endtime", "-E")
    parser.add_argument("--jobs", "-j", default="")
    parser.add_argument("--state", "-s", default="")
    parser.add_argument("--format", "-o", default="")
    options, _ = parser.parse_known_args(argv)
    zone = ZoneInfo(os.environ.get("TZ") or "UTC")
    time_format = os.environ.get("SLURM_TIME_FORMAT", "%Y-%m-%dT%H:%M:%S")
    jobs = sorted(read_jobs(log).values(), key=lambda j: j.job_id)
    if options.jobs:
        wanted = {int(i) for i in options.jobs.split(",")}
        selected = [job for job in jobs if job.job_id in wanted]
    elif options.starttime is None or options.endtime is None:
        raise SystemExit("sacct (simulated): give --starttime and --endtime, or --jobs")
    else:
        start = _parse_cli_time(options.starttime, zone)
        end = _parse_cli_time(options.endtime, zone)
        # sacct --state selects jobs that were in a state during the window
        selected = [
            job
            for job in jobs
            if job.start_ms and job.start_ms < end and not (job.end_ms and job.end_ms <= start)
        ]
    return "".join(format_job(job, now_ms, time_format, zone) + "\n" for job in selected)


def sacctmgr(log: Path, associations: Path | None) -> str:
    """`account|user` associations: from a file when given, else from the job log."""
    pairs: set[tuple[str, str]] = set()
    if associations is not None and associations.exists():
        for line in associations.read_text().splitlines():
            account, _, user = line.partition("|")
            if account and user:
                pairs.add((account, user))
    pairs |= {(job.account, job.user) for job in read_jobs(log).values()}
    accounts = sorted({account for account, _ in pairs})
    lines = [f"{account}|" for account in accounts]  # the account's own association
    lines += [f"{account}|{user}" for account, user in sorted(pairs)]
    return "".join(line + "\n" for line in lines)


def write_shims(bin_dir: Path, log: Path, associations: Path | None = None) -> tuple[Path, Path]:
    """`sacct` and `sacctmgr` executables in `bin_dir` answering from `log`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    extra = f' --associations "{associations}"' if associations else ""
    shims = []
    for tool in ("sacct", "sacctmgr"):
        path = bin_dir / tool
        path.write_text(
            "#!/bin/sh\n"
            f'exec "{sys.executable}" -m ceems.sim.slurm --log "{log}"{extra} {tool} -- "$@"\n'
        )
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        shims.append(path)
    return shims[0], shims[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the shims."""
    parser = argparse.ArgumentParser(prog="ceems.sim.slurm")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--associations", type=Path)
    parser.add_argument("tool", choices=("sacct", "sacctmgr"))
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    rest = [a for a in options.rest if a != "--"]
    now_ms = int(time.time() * 1000)
    if options.tool == "sacct":
        sys.stdout.write(sacct(rest, options.log, now_ms))
    else:
        sys.stdout.write(sacctmgr(options.log, options.associations))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["SimJob", "append_jobs", "format_job", "read_jobs", "sacct", "sacctmgr", "write_shims"]
_ = UTC  # re-exported for callers building times
