"""The slurm manager against a real SLURM 22.05: sacct/sacctmgr and slurmrestd must agree."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ceems.api.config import ClusterConfig
from ceems.api.managers.slurm.manager import SlurmManager
from ceems.api.models import Unit
from tests.slurm_service import END_STATES, SlurmService

MIB = 1024 * 1024


def now_s() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def sacct_manager() -> SlurmManager:
    # runs as root here, so every user's jobs are visible even with PrivateData set
    return SlurmManager(ClusterConfig.model_validate({"id": "real", "manager": "slurm"}))


def restd_manager(service: SlurmService, **extra: Any) -> SlurmManager:
    extra = extra or {"jwt_key_file": str(service.jwt_key_file), "cluster_name": "testcluster"}
    return SlurmManager(
        ClusterConfig.model_validate(
            {
                "id": "real",
                "manager": "slurm",
                "web": {"url": service.restd_url},
                "extra_config": {"source": "slurmrestd", **extra},
            }
        )
    )


@dataclass
class Jobs:
    """Jobs run once for the module, and the window that holds them."""

    service: SlurmService
    alice: str  # research, 2 CPUs, 300 MiB, completes
    carol: str  # physics, 1 CPU, 200 MiB, completes
    bob: str  # research, 1 CPU, 100 MiB, cancelled by root while running
    start: datetime
    running_at: datetime  # when bob was running and the others had ended
    running: dict[str, dict[str, Unit]]  # source -> job id -> unit, at running_at
    end: datetime

    def fetch(self, manager: SlurmManager, start: datetime, end: datetime) -> dict[str, Unit]:
        ours = {self.alice, self.carol, self.bob}
        return {u.uuid: u for u in manager.fetch_units(start, end) if u.uuid in ours}


@pytest.fixture(scope="module")
def jobs(slurm_service: SlurmService) -> Iterator[Jobs]:
    service = slurm_service
    start = now_s() - timedelta(seconds=2)
    alice = service.submit("alice", "research", "sleep 3", cpus=2, mem_mb=300, name="ceems-alice")
    carol = service.submit("carol", "physics", "sleep 3", cpus=1, mem_mb=200, name="ceems-carol")
    bob = service.submit("bob", "research", "sleep 300", cpus=1, mem_mb=100, name="ceems-bob")
    try:
        for job in (alice, carol):
            assert service.wait_state(job, END_STATES, timeout=60) == "COMPLETED"
        service.wait_state(bob, "RUNNING", timeout=60)
        time.sleep(1.1)  # bob's start lies a whole second before the window's end
        running_at = now_s()
        sources = {"sacct": sacct_manager(), "slurmrestd": restd_manager(service)}
        partial = Jobs(service, alice, carol, bob, start, running_at, {}, running_at)
        running = {name: partial.fetch(m, start, running_at) for name, m in sources.items()}
        service.cancel(bob)
        service.wait_state(bob, "CANCELLED", timeout=60)
        yield Jobs(service, alice, carol, bob, start, running_at, running,
                   now_s() + timedelta(seconds=1))  # fmt: skip
    finally:
        service.cancel(bob)


@pytest.fixture(scope="module")
def by_sacct(jobs: Jobs) -> dict[str, Unit]:
    return jobs.fetch(sacct_manager(), jobs.start, jobs.end)


@pytest.fixture(scope="module")
def by_restd(jobs: Jobs) -> dict[str, Unit]:
    return jobs.fetch(restd_manager(jobs.service), jobs.start, jobs.end)


def test_sacct_owners_accounts_states(jobs: Jobs, by_sacct: dict[str, Unit]) -> None:
    assert {u.uuid: (u.username, u.project, u.state) for u in by_sacct.values()} == {
        jobs.alice: ("alice", "research", "COMPLETED"),
        jobs.carol: ("carol", "physics", "COMPLETED"),
        jobs.bob: ("bob", "research", "CANCELLED by 0"),
    }


def test_sacct_allocations(jobs: Jobs, by_sacct: dict[str, Unit]) -> None:
    expected = {jobs.alice: (2, 300), jobs.carol: (1, 200), jobs.bob: (1, 100)}
    for job_id, (cpus, mem_mb) in expected.items():
        alloc = by_sacct[job_id].allocation
        assert (alloc["cpus"], alloc["mem"], alloc["nodes"], alloc["gpus"]) == (
            cpus, mem_mb * MIB, 1, 0,
        )  # fmt: skip


def test_sacct_times(jobs: Jobs, by_sacct: dict[str, Unit]) -> None:
    for unit in by_sacct.values():
        assert 0 < unit.created_at_ts <= unit.started_at_ts < unit.ended_at_ts
        assert jobs.start <= from_ms(unit.created_at_ts)
        assert from_ms(unit.ended_at_ts) <= jobs.end
        walltime = (unit.ended_at_ts - unit.started_at_ts) / 1000
        assert unit.total_time_seconds["walltime"] == walltime
        assert unit.total_time_seconds["alloc_cputime"] == walltime * unit.allocation["cpus"]
    alice = by_sacct[jobs.alice]
    assert 3 <= alice.total_time_seconds["walltime"] <= 10
    times = alice.total_time_seconds
    assert times["alloc_cpumemtime"] == 300 * times["walltime"]
    assert alice.tags["uid"] != by_sacct[jobs.carol].tags["uid"]
    assert alice.tags["workdir"] == "/tmp"
    assert alice.tags["exit_code"] == "0:0"


def test_both_sources_agree(by_sacct: dict[str, Unit], by_restd: dict[str, Unit]) -> None:
    assert by_restd == by_sacct


def test_both_sources_agree_on_a_running_job(jobs: Jobs) -> None:
    by_source = jobs.running
    assert by_source["slurmrestd"] == by_source["sacct"]
    bob = by_source["sacct"][jobs.bob]
    assert (bob.state, bob.ended_at_ts) == ("RUNNING", 0)
    # a running job counts up to the window's end
    expected = (jobs.running_at - from_ms(bob.started_at_ts)).total_seconds()
    assert bob.total_time_seconds["walltime"] == expected > 0


def test_window_clips_a_job_in_both_sources(jobs: Jobs, by_sacct: dict[str, Unit]) -> None:
    started = from_ms(by_sacct[jobs.alice].started_at_ts)
    for manager in (sacct_manager(), restd_manager(jobs.service)):
        units = jobs.fetch(manager, jobs.start, started + timedelta(seconds=1))
        assert units[jobs.alice].total_time_seconds["walltime"] == 1.0
        assert jobs.carol not in units  # it had not started yet


def test_window_after_the_jobs_holds_none(jobs: Jobs) -> None:
    later = jobs.end + timedelta(seconds=5)
    for manager in (sacct_manager(), restd_manager(jobs.service)):
        assert jobs.fetch(manager, later, later + timedelta(seconds=10)) == {}


def test_records_by_id_in_both_sources(jobs: Jobs, by_sacct: dict[str, Unit]) -> None:
    """`sacct --jobs` and slurmrestd's `/jobs?step=` give each job's final record, no usage."""
    ours = [jobs.alice, jobs.carol, jobs.bob]
    unknown = str(int(max(ours, key=int)) + 100_000)
    by_source = {
        name: {u.uuid: u for u in manager.fetch_units_by_id([*ours, unknown])}
        for name, manager in (
            ("sacct", sacct_manager()),
            ("slurmrestd", restd_manager(jobs.service)),
        )
    }
    assert by_source["slurmrestd"] == by_source["sacct"]
    records = by_source["sacct"]
    assert sorted(records) == sorted(ours)
    for job_id, record in records.items():
        assert record.total_time_seconds == {}
        windowed = by_sacct[job_id]
        assert replace(record, total_time_seconds=windowed.total_time_seconds) == windowed
    assert records[jobs.bob].state == "CANCELLED by 0" and records[jobs.bob].ended_at_ts > 0


def test_users_projects_from_sacctmgr_and_rest_agree(jobs: Jobs) -> None:
    users, projects = sacct_manager().fetch_users_projects(now_s())
    projects_of = {u.name: u.projects for u in users}
    assert projects_of["alice"] == projects_of["bob"] == ("research",)
    assert projects_of["carol"] == ("physics",)
    assert "root" not in projects_of
    users_of = {p.name: p.users for p in projects}
    assert {"alice", "bob"} <= set(users_of["research"])
    assert users_of["physics"] == ("carol",)
    given = restd_manager(jobs.service, token=jobs.service.token("slurm"))
    assert given.fetch_users_projects(now_s()) == (users, projects)
    assert restd_manager(jobs.service).fetch_users_projects(now_s()) == (users, projects)
