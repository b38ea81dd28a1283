"""sacct and sacctmgr: the command lines CEEMS runs and parsers of their output."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from ceems.api.managers.slurm.associations import users_projects
from ceems.api.managers.slurm.units import (
    NEVER_RAN_NODELIST,
    SlurmJob,
    parse_alloc_tres,
    parse_elapsed_seconds,
    parse_time_ms,
    to_ms,
)
from ceems.api.models import Project, Unit, User

log = logging.getLogger(__name__)

# CEEMS' sacctFields (pkg/api/resource/slurm/manager.go), in its order: the two fields a
# user controls (jobname, workdir) come last, so a `|` inside them shifts nothing else.
SACCT_FIELDS = (
    "jobidraw", "partition", "qos", "account", "group", "gid", "user", "uid",
    "submit", "start", "end", "elapsed", "elapsedraw", "exitcode", "state",
    "alloctres", "nodelist", "jobname", "workdir",
)  # fmt: skip
_INDEX = {name: i for i, name in enumerate(SACCT_FIELDS)}
_TIME_FIELDS = frozenset({"submit", "start", "end"})
# sacct cuts a time to its column width even with --parsable2 (19 characters by default in
# 22.05, which drops the "+0100" offset): the time fields get a wider column.
SACCT_FORMAT = ",".join(f"{f}%30" if f in _TIME_FIELDS else f for f in SACCT_FIELDS)
# CEEMS' slurmStates. With --state, sacct selects by state *during* the window: RUNNING
# matches every job that ran at some time in it, whatever its final state.
SACCT_STATES = ("CANCELLED", "COMPLETED", "FAILED", "NODE_FAIL", "PREEMPTED", "TIMEOUT", "RUNNING")
SACCT_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
SACCTMGR_ARGS = ("--parsable2", "--noheader", "list", "associations", "format=Account,User")


def _utc_seconds(moment: datetime) -> str:
    to_ms(moment)  # refuses naive datetimes
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def sacct_args(start: datetime, end: datetime) -> list[str]:
    """sacct's arguments for the jobs active in [start, end), times in UTC (run with TZ=UTC)."""
    return [
        "--duplicates", "--allocations", "--noheader", "--allusers", "--parsable2",
        f"--format={SACCT_FORMAT}",
        f"--state={','.join(SACCT_STATES)}",
        f"--starttime={_utc_seconds(start)}",
        f"--endtime={_utc_seconds(end)}",
    ]  # fmt: skip


def sacct_jobs_args(job_ids: Sequence[str]) -> list[str]:
    """sacct's arguments for every record of these jobs, whatever their state and time.

    With --jobs and neither --state nor --starttime, sacct searches from the Epoch to now
    (sacct(1), DEFAULT TIME WINDOW); --state would narrow it to jobs in that state, so it is
    left out. --duplicates keeps every run of a requeued job: the caller picks the run by
    its submit time.
    """
    if not job_ids or not all(i.isascii() and i.isdigit() for i in job_ids):
        raise ValueError(f"job ids must be numbers, got {list(job_ids)!r}")
    return [
        "--duplicates", "--allocations", "--noheader", "--allusers", "--parsable2",
        f"--format={SACCT_FORMAT}",
        f"--jobs={','.join(job_ids)}",
    ]  # fmt: skip


def _int(text: str, what: str) -> int:
    if not text.isdigit():
        raise ValueError(f"bad {what} {text!r}: expected a number")
    return int(text)


def parse_sacct_fields(fields: list[str]) -> SlurmJob:
    """The job of one sacct line split at `|`, exactly len(SACCT_FIELDS) fields."""
    get = {name: fields[i] for name, i in _INDEX.items()}
    _int(get["jobidraw"], "job id")
    _int(get["elapsedraw"], "elapsed seconds")
    parse_elapsed_seconds(get["elapsed"])  # a column shift shows up here first
    return SlurmJob(
        job_id=get["jobidraw"],
        name=get["jobname"],
        account=get["account"],
        group=get["group"],
        user=get["user"],
        partition=get["partition"],
        qos=get["qos"],
        state=get["state"],
        exit_code=get["exitcode"],
        nodelist=get["nodelist"],
        workdir=get["workdir"],
        submitted_ms=parse_time_ms(get["submit"]),
        started_ms=parse_time_ms(get["start"]),
        ended_ms=parse_time_ms(get["end"]),
        alloc=parse_alloc_tres(get["alloctres"]),
        uid=_int(get["uid"], "uid"),
        gid=_int(get["gid"], "gid"),
    )


def parse_sacct(cluster_id: str, text: str, start: datetime, end: datetime) -> list[Unit]:
    """Units from `sacct --parsable2 --noheader --format=SACCT_FORMAT` output.

    Job steps and jobs that never ran (`None assigned`) are left out as in CEEMS. A line
    that cannot be read is skipped with a warning naming its number and content; the rest
    are kept. A `|` inside the job name or work directory (both user-chosen) is put back
    into the job name rather than losing the job.
    """
    start_ms, end_ms = to_ms(start), to_ms(end)
    return _parse_lines(cluster_id, text, lambda job: job.to_unit(cluster_id, start_ms, end_ms))


def parse_sacct_records(cluster_id: str, text: str) -> list[Unit]:
    """Units without usage from the output of `sacct_jobs_args`, read as parse_sacct does."""
    return _parse_lines(cluster_id, text, lambda job: job.record(cluster_id))


def _parse_lines(cluster_id: str, text: str, build: Callable[[SlurmJob], Unit]) -> list[Unit]:
    units: list[Unit] = []
    width = len(SACCT_FIELDS)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) == width + 1 and fields[-1] == "":
            fields.pop()  # `--parsable` (not 2) ends each line with a `|`
        if len(fields) < width:
            log.warning(
                "skipping malformed sacct line",
                extra={"cluster": cluster_id, "line": number, "content": line,
                       "reason": f"{len(fields)} fields, expected {width}"},
            )  # fmt: skip
            continue
        if len(fields) > width:
            log.warning(
                "sacct line has extra '|'; joined into the job name",
                extra={"cluster": cluster_id, "line": number, "content": line},
            )
            name_at = _INDEX["jobname"]
            fields = [*fields[:name_at], "|".join(fields[name_at:-1]), fields[-1]]
        if "." in fields[_INDEX["jobidraw"]] or fields[_INDEX["nodelist"]] == NEVER_RAN_NODELIST:
            continue
        try:
            units.append(build(parse_sacct_fields(fields)))
        except ValueError as err:
            log.warning(
                "skipping malformed sacct line",
                extra={"cluster": cluster_id, "line": number, "content": line, "reason": str(err)},
            )
    return units


def parse_sacctmgr(cluster_id: str, text: str) -> tuple[list[User], list[Project]]:
    """Users and projects from `sacctmgr --parsable2 --noheader list associations
    format=Account,User` output; a line without exactly two fields is skipped with a warning."""
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 2:
            log.warning(
                "skipping malformed sacctmgr line",
                extra={"cluster": cluster_id, "line": number, "content": line,
                       "reason": f"{len(fields)} fields, expected 2"},
            )  # fmt: skip
            continue
        pairs.append((fields[0].strip(), fields[1].strip()))
    return users_projects(cluster_id, pairs)
