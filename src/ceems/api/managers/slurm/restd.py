"""slurmrestd (openapi/dbv0.0.38): jobs and associations over HTTP, as the sacct source gives them.

Written against SLURM 22.05, whose accounting endpoints cannot filter by user or by state
(`users=` is an unknown query field, `state=COMPLETED` finds nothing): both happen here.
"""

from __future__ import annotations

import grp
import logging
import math
import pwd
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from ceems.api.managers.protocol import ManagerError
from ceems.api.managers.slurm.associations import users_projects
from ceems.api.managers.slurm.jwt_token import TokenSource
from ceems.api.managers.slurm.units import (
    MIB,
    NEVER_RAN_NODELIST,
    SlurmJob,
    allocation,
    base_state,
    gpu_count,
    to_ms,
)
from ceems.api.models import Project, Unit, User
from ceems.common.httpconfig import HttpClientConfig

log = logging.getLogger(__name__)

JOBS_PATH = "/slurmdb/v0.0.38/jobs"
ASSOCIATIONS_PATH = "/slurmdb/v0.0.38/associations"
NOTHING_FOUND = 9003  # error_number of an empty result, which is not a failure
# slurmrestd reads ISO times in its own local time zone, which we cannot know; relative
# times (`now-900seconds`) need no zone. The margin covers clock skew and request latency;
# the exact window is applied here, on the epoch times of the answer.
WINDOW_MARGIN_S = 300
# Job ids per /jobs?step= request: about 1 KB of URL, well within any HTTP server's limit.
JOBS_BY_ID_PER_GET = 100

NameLookup = Callable[[str], int | None]


def uid_of(user: str) -> int | None:
    """The local uid of a user name, None when this host does not know it."""
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def gid_of(group: str) -> int | None:
    """The local gid of a group name, None when this host does not know it."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def relative_time(offset_s: float) -> str:
    """A SLURM time `offset_s` from slurmrestd's now, rounded away from now: now-901seconds."""
    whole = math.ceil(abs(offset_s))
    return f"now{'-' if offset_s < 0 else '+'}{whole}seconds"


def jobs_query(start: datetime, end: datetime, now: datetime, cluster_name: str = "") -> str:
    """The query string of /jobs for [start, end) widened by WINDOW_MARGIN_S, fully encoded.

    slurmrestd 22.05 answers a raw `:`, `+` or `,` with HTTP 400 and an empty body.
    """
    params = [
        ("start_time", relative_time((start - now).total_seconds() - WINDOW_MARGIN_S)),
        ("end_time", relative_time((end - now).total_seconds() + WINDOW_MARGIN_S)),
    ]
    if cluster_name:
        params.append(("cluster", cluster_name))
    return urlencode(params, quote_via=quote, safe="")


def jobs_by_id_query(job_ids: Sequence[str], cluster_name: str = "") -> str:
    """The query string of /jobs for every record of these jobs, fully encoded.

    `step` is sacct's --jobs (a job_cond step list): with it and no time or state given,
    slurmdbd searches all of its history, and /jobs keeps duplicates (requeued runs).
    """
    if not job_ids or not all(i.isascii() and i.isdigit() for i in job_ids):
        raise ValueError(f"job ids must be numbers, got {list(job_ids)!r}")
    params = [("step", ",".join(job_ids))]
    if cluster_name:
        params.append(("cluster", cluster_name))
    return urlencode(params, quote_via=quote, safe="")


def _seconds_ms(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"bad time {value!r}: expected epoch seconds")
    return max(value, 0) * 1000


def _count(entry: Mapping[str, Any]) -> int:
    count = entry.get("count")
    if count is None:
        return 0
    if isinstance(count, bool) or not isinstance(count, int):
        raise ValueError(f"bad TRES count {count!r}")
    return count


def restd_allocation(tres: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The allocation map of `tres.allocated` (memory counted in MiB there)."""
    values = {"cpu": 0, "mem": 0, "node": 0, "billing": 0}
    gres: list[tuple[str, int]] = []
    for entry in tres:
        kind, name = entry.get("type"), entry.get("name") or ""
        if kind in values:
            values[str(kind)] = _count(entry)
        elif kind == "gres" and (name == "gpu" or name.startswith("gpu:")):
            gres.append((f"gres/{name}", _count(entry)))
    return allocation(
        values["cpu"], values["mem"] * MIB, gpu_count(gres), values["node"], values["billing"]
    )


def restd_exit_code(exit_code: Mapping[str, Any] | None) -> str:
    """sacct's `return_code:signal` from {status, return_code, signal: {signal_id}}."""
    if not exit_code:
        return "0:0"
    signal = exit_code.get("signal") or {}
    return f"{exit_code.get('return_code') or 0}:{signal.get('signal_id') or 0}"


def restd_job(job: Mapping[str, Any], uid_lookup: NameLookup, gid_lookup: NameLookup) -> SlurmJob:
    """One job of a /jobs answer; KeyError, TypeError or ValueError when malformed."""
    times = job["time"]
    user, group = str(job.get("user") or ""), str(job.get("group") or "")
    state = str(job["state"]["current"])
    killer = job.get("kill_request_user")
    if base_state(state) == "CANCELLED" and killer:
        # sacct says "CANCELLED by <uid>"; give the same where the name resolves here
        killer_uid = uid_lookup(str(killer))
        if killer_uid is not None:
            state = f"CANCELLED by {killer_uid}"
    return SlurmJob(
        job_id=str(int(job["job_id"])),
        name=str(job.get("name") or ""),
        account=str(job.get("account") or ""),
        group=group,
        user=user,
        partition=str(job.get("partition") or ""),
        qos=str(job.get("qos") or ""),
        state=state,
        exit_code=restd_exit_code(job.get("exit_code")),
        nodelist=str(job.get("nodes") or ""),
        workdir=str(job.get("working_directory") or ""),
        submitted_ms=_seconds_ms(times.get("submission")),
        started_ms=_seconds_ms(times.get("start")),
        ended_ms=_seconds_ms(times.get("end")),
        alloc=restd_allocation(job["tres"]["allocated"]),
        uid=uid_lookup(user) if user else None,
        gid=gid_lookup(group) if group else None,
    )


def parse_restd_jobs(
    cluster_id: str,
    payload: Mapping[str, Any],
    start: datetime,
    end: datetime,
    uid_lookup: NameLookup = uid_of,
    gid_lookup: NameLookup = gid_of,
) -> list[Unit]:
    """Units of the jobs that ran during [start, end] (sacct's `--state` selection).

    Jobs that never started are left out as on the sacct path; a malformed job is skipped
    with a warning naming its position and id.
    """
    start_ms, end_ms = to_ms(start), to_ms(end)

    def build(job: SlurmJob) -> Unit | None:
        if job.started_ms > end_ms or 0 < job.ended_ms < start_ms:
            return None
        return job.to_unit(cluster_id, start_ms, end_ms)

    return _parse_jobs(cluster_id, payload, build, uid_lookup, gid_lookup)


def parse_restd_records(
    cluster_id: str,
    payload: Mapping[str, Any],
    uid_lookup: NameLookup = uid_of,
    gid_lookup: NameLookup = gid_of,
) -> list[Unit]:
    """Units without usage of a /jobs answer to `jobs_by_id_query`, read as parse_restd_jobs
    does but whenever the jobs ran."""
    return _parse_jobs(
        cluster_id, payload, lambda job: job.record(cluster_id), uid_lookup, gid_lookup
    )


def _parse_jobs(
    cluster_id: str,
    payload: Mapping[str, Any],
    build: Callable[[SlurmJob], Unit | None],
    uid_lookup: NameLookup,
    gid_lookup: NameLookup,
) -> list[Unit]:
    jobs = payload.get("jobs")
    if not isinstance(jobs, list):
        raise ValueError("no 'jobs' list in the answer")
    units: list[Unit] = []
    for index, raw in enumerate(jobs):
        try:
            job = restd_job(raw, uid_lookup, gid_lookup)
            if job.started_ms == 0 or job.nodelist in ("", NEVER_RAN_NODELIST):
                continue
            unit = build(job)
            if unit is not None:
                units.append(unit)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            job_id = raw.get("job_id") if isinstance(raw, dict) else None
            log.warning(
                "skipping malformed slurmrestd job",
                extra={"cluster": cluster_id, "index": index, "job_id": job_id,
                       "reason": f"{type(err).__name__}: {err}"},
            )  # fmt: skip
    return units


def parse_restd_associations(
    cluster_id: str, payload: Mapping[str, Any], cluster_name: str = ""
) -> tuple[list[User], list[Project]]:
    """Users and projects of an /associations answer, as from sacctmgr."""
    associations = payload.get("associations")
    if not isinstance(associations, list):
        raise ValueError("no 'associations' list in the answer")
    pairs: list[tuple[str, str]] = []
    for index, assoc in enumerate(associations):
        if not isinstance(assoc, dict):
            log.warning(
                "skipping malformed slurmrestd association",
                extra={"cluster": cluster_id, "index": index, "content": repr(assoc)},
            )
            continue
        if cluster_name and assoc.get("cluster") != cluster_name:
            continue
        pairs.append((str(assoc.get("account") or ""), str(assoc.get("user") or "")))
    return users_projects(cluster_id, pairs)


def _errors(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        return []
    found = []
    for error in payload.get("errors") or []:
        if isinstance(error, dict) and error.get("error_number") == NOTHING_FOUND:
            continue
        if isinstance(error, dict):
            text = error.get("description") or error.get("error") or ""
            found.append(f"{text} (error {error.get('error_number')}, {error.get('source')})")
        else:
            found.append(str(error))
    return found


class RestdSource:
    """Fetches units, users and projects of one cluster from slurmrestd."""

    def __init__(
        self,
        cluster_id: str,
        web: HttpClientConfig,
        tokens: TokenSource,
        cluster_name: str = "",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cluster_id = cluster_id
        self.web = web
        self.tokens = tokens
        self.cluster_name = cluster_name
        self.clock = clock

    def get(self, path: str, query: str = "") -> dict[str, Any]:
        """The JSON object of one GET; ManagerError naming the endpoint on any failure."""
        kwargs = self.web.client_kwargs()
        # the token travels in slurmrestd's own headers, never as Authorization
        headers = {k: v for k, v in kwargs.pop("headers").items() if k.lower() != "authorization"}
        headers["X-SLURM-USER-NAME"] = self.tokens.user_name
        headers["X-SLURM-USER-TOKEN"] = self.tokens.current()
        endpoint = f"{self.web.url.rstrip('/')}{path}"
        where = f"cluster {self.cluster_id!r}: GET {endpoint}"
        try:
            with httpx.Client(headers=headers, **kwargs) as client:
                response = client.get(f"{path}?{query}" if query else path)
        except httpx.HTTPError as err:
            raise ManagerError(f"{where}: {type(err).__name__}: {err}") from err
        try:
            payload = response.json()
        except ValueError:
            payload = None
        problems = _errors(payload)
        if response.status_code != 200:
            detail = "; ".join(problems) or response.text.strip()[:300] or "(empty body)"
            raise ManagerError(f"{where}: HTTP {response.status_code}: {detail}")
        if not isinstance(payload, dict):
            raise ManagerError(f"{where}: HTTP 200 but not a JSON object")
        if problems:
            # a refused token comes back as 200 with errors and no jobs
            raise ManagerError(f"{where}: HTTP 200 with errors: {'; '.join(problems)}")
        return payload

    def fetch_units(self, start: datetime, end: datetime) -> list[Unit]:
        """Units that ran during [start, end), with their usage inside it."""
        payload = self.get(JOBS_PATH, jobs_query(start, end, self.clock(), self.cluster_name))
        try:
            return parse_restd_jobs(self.cluster_id, payload, start, end)
        except ValueError as err:
            raise ManagerError(f"cluster {self.cluster_id!r}: GET {JOBS_PATH}: {err}") from err

    def fetch_units_by_id(self, job_ids: Sequence[str]) -> list[Unit]:
        """Every record of these jobs (numbers), without usage; JOBS_BY_ID_PER_GET a request."""
        units: list[Unit] = []
        for first in range(0, len(job_ids), JOBS_BY_ID_PER_GET):
            chunk = job_ids[first : first + JOBS_BY_ID_PER_GET]
            payload = self.get(JOBS_PATH, jobs_by_id_query(chunk, self.cluster_name))
            try:
                units.extend(parse_restd_records(self.cluster_id, payload))
            except ValueError as err:
                raise ManagerError(f"cluster {self.cluster_id!r}: GET {JOBS_PATH}: {err}") from err
        return units

    def fetch_users_projects(self, now: datetime) -> tuple[list[User], list[Project]]:
        """Users and projects from the associations."""
        query = urlencode([("cluster", self.cluster_name)]) if self.cluster_name else ""
        payload = self.get(ASSOCIATIONS_PATH, query)
        try:
            return parse_restd_associations(self.cluster_id, payload, self.cluster_name)
        except ValueError as err:
            raise ManagerError(
                f"cluster {self.cluster_id!r}: GET {ASSOCIATIONS_PATH}: {err}"
            ) from err
