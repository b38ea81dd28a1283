"""SLURM job fields (times, TRES, states) and the CEEMS unit built from them.

Shared by the sacct and slurmrestd sources so both give the same Unit for the same job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ceems.api.managers.slurm.nodelist import nodelist_exp
from ceems.api.models import Unit

RESOURCE_MANAGER = "slurm"
MIB = 1024 * 1024
# sacct prints times with this layout when SLURM_TIME_FORMAT asks for it (CEEMS'
# base.DatetimezoneLayout, "2006-01-02T15:04:05-0700").
TIME_LAYOUT = "%Y-%m-%dT%H:%M:%S%z"
# What sacct prints for a time that has not happened (pending start, running end).
UNSET_TIMES = frozenset({"", "Unknown", "None", "N/A"})
NEVER_RAN_NODELIST = "None assigned"

_MEM = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGTP]?)$")
_MEM_FACTORS = {"K": 1024, "M": MIB, "G": 1024 * MIB, "T": 1024**2 * MIB, "P": 1024**3 * MIB}
_ELAPSED = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


def to_ms(moment: datetime) -> int:
    """UTC epoch milliseconds of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: resource managers need UTC times")
    return int(moment.timestamp() * 1000)


def parse_time_ms(text: str) -> int:
    """Epoch ms of a sacct time with a UTC offset (`2024-01-02T03:04:05+0100`); 0 when unset.

    A time without an offset is refused: sacct printed local time, and guessing its zone
    would shift every job (SLURM_TIME_FORMAT was lost, e.g. by sudo's env_reset).
    """
    text = text.strip()
    if text in UNSET_TIMES:
        return 0
    try:
        moment = datetime.strptime(text, TIME_LAYOUT)
    except ValueError as err:
        raise ValueError(f"bad time {text!r}: expected e.g. 2024-01-02T03:04:05+0100") from err
    return to_ms(moment)


def parse_elapsed_seconds(text: str) -> int:
    """Seconds of a sacct duration: `[D-]HH:MM:SS` or `MM:SS`."""
    match = _ELAPSED.match(text.strip())
    if match is None:
        raise ValueError(f"bad duration {text!r}: expected [D-]HH:MM:SS")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def job_ids(uuids: Iterable[str]) -> tuple[list[str], list[str]]:
    """The uuids that are SLURM job ids (decimal numbers), sorted and unique, and the others.

    Only numbers go to sacct or slurmrestd: one bad id makes sacct refuse the whole list.
    """
    unique = set(uuids)
    numbers = sorted((u for u in unique if u.isascii() and u.isdigit()), key=int)
    return numbers, sorted(unique.difference(numbers))


def base_state(state: str) -> str:
    """The state without sacct's qualifier: `CANCELLED by 1002` -> `CANCELLED`."""
    return state.split(" ", 1)[0]


def parse_mem_bytes(text: str) -> int:
    """Bytes of a TRES memory amount (`300M`, `320.5G`); a bare number is MiB, SLURM's unit."""
    match = _MEM.match(text.strip())
    if match is None:
        raise ValueError(f"bad memory amount {text!r}: expected e.g. 512M or 4.5G")
    number, unit = match.groups()
    return int(float(number) * _MEM_FACTORS[unit or "M"])


def gpu_count(counts: Iterable[tuple[str, int]]) -> int:
    """GPUs from `gres/gpu` TRES counts: the untyped total, else the sum of the typed ones.

    SLURM lists `gres/gpu:a100=2` next to `gres/gpu=2`; adding both would count twice.
    """
    untyped: int | None = None
    typed = 0
    for name, count in counts:
        if name == "gres/gpu":
            untyped = count
        elif name.startswith("gres/gpu:"):
            typed += count
    return typed if untyped is None else untyped


def allocation(cpus: int, mem_bytes: int, gpus: int, nodes: int, billing: int) -> dict[str, int]:
    """CEEMS' allocation map of a SLURM job."""
    return {"billing": billing, "cpus": cpus, "gpus": gpus, "mem": mem_bytes, "nodes": nodes}


def parse_alloc_tres(text: str) -> dict[str, int]:
    """The allocation map of a sacct AllocTRES (`billing=4,cpu=2,mem=4G,node=1,gres/gpu=2`)."""
    values: dict[str, int] = {"billing": 0, "cpu": 0, "node": 0}
    mem = 0
    gres: list[tuple[str, int]] = []
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"bad TRES {item!r} in {text!r}: expected name=value")
        if name == "mem":
            mem = parse_mem_bytes(value)
        elif name in values or name == "gres/gpu" or name.startswith("gres/gpu:"):
            # not gres/gpumem or gres/gpuutil (SLURM 23.02+ GPU usage TRES)
            if not value.isdigit():
                raise ValueError(f"bad TRES count {item!r} in {text!r}")
            if name in values:
                values[name] = int(value)
            else:
                gres.append((name, int(value)))
    return allocation(values["cpu"], mem, gpu_count(gres), values["node"], values["billing"])


def window_times(
    started_ms: int, ended_ms: int, window_start_ms: int, window_end_ms: int, alloc: dict[str, int]
) -> dict[str, float]:
    """CEEMS' `total_time_seconds` for the part of a job inside [window_start, window_end).

    A job not started has none; a running job (ended 0) counts up to the window's end.
    Memory time is in MiB-seconds; with no memory recorded it is the walltime, and GPU
    memory time is the walltime when GPUs are allocated (both as CEEMS' cli.go).
    """
    walltime_s = 0.0
    if started_ms > 0:
        lo = max(started_ms, window_start_ms)
        hi = window_end_ms if ended_ms <= 0 else min(ended_ms, window_end_ms)
        walltime_s = max(0, hi - lo) / 1000
    mem, cpus, gpus = alloc.get("mem", 0), alloc.get("cpus", 0), alloc.get("gpus", 0)
    return {
        "walltime": walltime_s,
        "alloc_cputime": walltime_s * cpus,
        "alloc_cpumemtime": walltime_s * mem / MIB if mem > 0 else walltime_s,
        "alloc_gputime": walltime_s * gpus,
        "alloc_gpumemtime": walltime_s if gpus > 0 else 0.0,
    }


@dataclass(frozen=True, slots=True)
class SlurmJob:
    """One job allocation as either source reports it, before it becomes a Unit."""

    job_id: str
    name: str
    account: str
    group: str
    user: str
    partition: str
    qos: str
    state: str
    exit_code: str
    nodelist: str
    workdir: str
    submitted_ms: int
    started_ms: int
    ended_ms: int
    alloc: dict[str, int]
    uid: int | None = None  # slurmrestd 22.05 gives names only; None when not resolvable
    gid: int | None = None

    def to_unit(self, cluster_id: str, window_start_ms: int, window_end_ms: int) -> Unit:
        """The CEEMS unit, with usage times for the window."""
        times = window_times(
            self.started_ms, self.ended_ms, window_start_ms, window_end_ms, self.alloc
        )
        return self._unit(cluster_id, times)

    def record(self, cluster_id: str) -> Unit:
        """The CEEMS unit without usage: the job's current record (fetch_units_by_id)."""
        return self._unit(cluster_id, {})

    def _unit(self, cluster_id: str, times: dict[str, float]) -> Unit:
        tags: dict[str, str | int] = {"exit_code": self.exit_code}
        if self.gid is not None:
            tags["gid"] = self.gid
        tags["nodelist"] = self.nodelist
        tags["nodelistexp"] = nodelist_exp(self.nodelist)
        tags["partition"] = self.partition
        tags["qos"] = self.qos
        if self.uid is not None:
            tags["uid"] = self.uid
        tags["workdir"] = self.workdir
        return Unit(
            cluster_id=cluster_id,
            resource_manager=RESOURCE_MANAGER,
            uuid=self.job_id,
            name=self.name,
            project=self.account,
            groupname=self.group,
            username=self.user,
            created_at_ts=self.submitted_ms,
            started_at_ts=self.started_ms,
            ended_at_ts=self.ended_ms,
            state=self.state,
            allocation=dict(self.alloc),
            tags=tags,
            total_time_seconds=times,
        )
