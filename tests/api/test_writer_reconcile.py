"""Running units a window missed: the writer loop stores their final record, counted once.

SLURM's accounting records a job's end late: a window fetched in between stores the job as
running, and the next window, starting after its end, no longer lists it. These tests replay
that race with the real store (SQLite and PostgreSQL), a scripted accounting and the real
SLURM manager over the simulated sacct.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ceems.api.config import ApiServerConfig, DataConfig
from ceems.api.managers.protocol import ManagerError, ResourceManager
from ceems.api.managers.registry import build_managers
from ceems.api.managers.slurm.units import SlurmJob
from ceems.api.models import Project, Unit, User
from ceems.api.reconcile import Reconciler, RunningUnit
from ceems.api.store import schema
from ceems.api.store.engine import create_store_engine
from ceems.api.store.errors import StoreError
from ceems.api.store.migrate import migrate
from ceems.api.store.writes import StoreWriter
from ceems.api.writer import WriterLoop, to_ms
from ceems.sim.slurm import SimJob, append_jobs, write_shims

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
STEP = timedelta(minutes=15)
T1, T2, T3 = T0 + STEP, T0 + 2 * STEP, T0 + 3 * STEP
ENDED = T1 - timedelta(minutes=2)  # alice's job ends inside the first window
ALICE_START = T0 + timedelta(minutes=5)


def job(job_id: str, user: str, started: datetime, **changes: Any) -> SlurmJob:
    """A running 2-CPU job, as sacct or slurmrestd would give it."""
    return replace(
        SlurmJob(
            job_id=job_id, name=f"job-{job_id}", account="research", group=user, user=user,
            partition="batch", qos="normal", state="RUNNING", exit_code="0:0",
            nodelist="node1", workdir="/tmp", submitted_ms=to_ms(started) - 60_000,
            started_ms=to_ms(started), ended_ms=0,
            alloc={"billing": 2, "cpus": 2, "gpus": 0, "mem": 2**30, "nodes": 1},
        ),
        **changes,
    )  # fmt: skip


@dataclass
class Accounting:
    """A resource manager answering from `jobs`: what slurmdbd holds at the time of a fetch."""

    jobs: dict[str, SlurmJob] = field(default_factory=dict)
    lookups: list[list[str]] = field(default_factory=list)
    lookup_error: ManagerError | None = None

    def fetch_units(self, start: datetime, end: datetime) -> list[Unit]:
        """The jobs active in [start, end), as sacct's --state selection."""
        lo, hi = to_ms(start), to_ms(end)
        return [
            j.to_unit("c1", lo, hi)
            for j in self.jobs.values()
            if j.started_ms < hi and (j.ended_ms == 0 or j.ended_ms >= lo)
        ]

    def fetch_users_projects(self, now: datetime) -> tuple[list[User], list[Project]]:
        return [], []

    def fetch_units_by_id(self, uuids: Sequence[str]) -> list[Unit]:
        self.lookups.append(list(uuids))
        if self.lookup_error is not None:
            raise self.lookup_error
        return [self.jobs[u].record("c1") for u in uuids if u in self.jobs]


@dataclass
class WindowsOnly:
    """A third-party manager without fetch_units_by_id."""

    accounting: Accounting

    def fetch_units(self, start: datetime, end: datetime) -> list[Unit]:
        return self.accounting.fetch_units(start, end)

    def fetch_users_projects(self, now: datetime) -> tuple[list[User], list[Project]]:
        return [], []


@dataclass
class Stack:
    """The writer loop over a real store, and reads of what it stored."""

    loop: WriterLoop
    engine: sa.Engine

    def cycle(self, now: datetime) -> int:
        self.loop.clock = lambda: now
        return self.loop.run_once()

    def unit(self, uuid: str) -> dict[str, Any]:
        t = schema.units
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.uuid == uuid)).mappings().one()
        return {k: json.loads(v) if isinstance(v, str) and v[:1] == "{" else v
                for k, v in row.items()}  # fmt: skip

    def usage(self, user: str) -> dict[str, Any]:
        t = schema.usage
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.username == user)).mappings().one()
        times = row["total_time_seconds"]
        return {**row, "total_time_seconds": json.loads(times) if isinstance(times, str) else times}

    def checkpoint(self) -> int:
        t = schema.updates
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(t.c.last_update_ts)).scalar_one())

    def metric(self, name: str) -> float:
        value = self.loop.metrics.registry.get_sample_value(name, {"cluster": "c1"})
        return value or 0.0


def build_stack(data: DataConfig, manager: ResourceManager) -> Iterator[Stack]:
    config = ApiServerConfig.model_validate(
        {
            "ceems_api_server": {
                "data": {**data.model_dump(exclude_unset=True), "update_from": T0,
                         "update_interval": "15m", "retention_period": "10y"},
            },
            "clusters": [{"id": "c1", "manager": "slurm"}],
        }
    )  # fmt: skip
    engine = create_store_engine(config.ceems_api_server.data)
    migrate(engine)
    writer = StoreWriter(engine)
    try:
        yield Stack(WriterLoop(config, writer, {"c1": manager}, {}), engine)
    finally:
        writer.close()
        engine.dispose()


@pytest.fixture
def accounting() -> Accounting:
    return Accounting(
        {
            "1": job("1", "alice", ALICE_START),
            "2": job("2", "bob", T0 + timedelta(minutes=1)),  # runs on throughout
        }
    )


@pytest.fixture
def stack(data: DataConfig, accounting: Accounting) -> Iterator[Stack]:
    yield from build_stack(data, accounting)


def end_recorded(accounting: Accounting, state: str = "FAILED", exit_code: str = "3:0") -> None:
    """slurmdbd catches up: alice's job ended at ENDED, inside the window stored at T1."""
    accounting.jobs["1"] = replace(
        accounting.jobs["1"], state=state, exit_code=exit_code, ended_ms=to_ms(ENDED)
    )


def test_late_end_is_stored_with_the_next_window_and_counted_once(
    stack: Stack, accounting: Accounting
) -> None:
    assert stack.cycle(T1) == 2
    first = stack.unit("1")
    assert (first["state"], first["ended_at_ts"]) == ("RUNNING", 0)
    # counted to the end of the window: the accounting did not know better at T1
    assert first["total_time_seconds"]["walltime"] == (T1 - ALICE_START).total_seconds()
    end_recorded(accounting)

    assert stack.cycle(T2) == 1  # the window lists bob's job only
    assert accounting.lookups == [["1"]]
    alice = stack.unit("1")
    assert (alice["state"], alice["ended_at_ts"]) == ("FAILED", to_ms(ENDED))
    assert alice["tags"]["exit_code"] == "3:0"
    assert alice["total_time_seconds"] == first["total_time_seconds"]  # nothing added
    assert alice["num_updates"] == 2  # the commit that stored its end counts as an update
    usage = stack.usage("alice")
    assert usage["total_time_seconds"] == first["total_time_seconds"]
    assert (usage["num_units"], usage["num_updates"]) == (1, 2)
    assert stack.checkpoint() == to_ms(T2)
    assert stack.metric("ceems_api_server_units_reconciled_total") == 1
    assert stack.metric("ceems_api_server_units_stored_total") == 3  # window units only

    stack.cycle(T3)
    assert accounting.lookups == [["1"]]  # ended now: never looked up again
    assert stack.unit("1")["num_updates"] == 2
    assert stack.unit("2")["total_time_seconds"]["walltime"] == (T3 - T0).total_seconds() - 60


def test_manager_without_lookup_keeps_working(data: DataConfig, accounting: Accounting) -> None:
    for stack in build_stack(data, WindowsOnly(accounting)):
        stack.cycle(T1)
        end_recorded(accounting)
        assert stack.cycle(T2) == 1
        assert stack.checkpoint() == to_ms(T2)
        assert (stack.unit("1")["state"], stack.unit("1")["ended_at_ts"]) == ("RUNNING", 0)
        assert stack.metric("ceems_api_server_reconcile_failures_total") == 0


def test_failed_lookup_stores_the_window_and_is_retried(
    stack: Stack, accounting: Accounting, caplog: pytest.LogCaptureFixture
) -> None:
    stack.cycle(T1)
    end_recorded(accounting)
    accounting.lookup_error = ManagerError("cluster 'c1': sacct exited with status 1")
    with caplog.at_level(logging.WARNING, logger="ceems.api.reconcile"):
        assert stack.cycle(T2) == 1
    assert stack.checkpoint() == to_ms(T2)
    assert stack.unit("2")["total_time_seconds"]["walltime"] == (T2 - T0).total_seconds() - 60
    assert stack.unit("1")["state"] == "RUNNING"
    assert stack.metric("ceems_api_server_reconcile_failures_total") == 1
    assert any("stay running" in r.getMessage() for r in caplog.records)

    accounting.lookup_error = None
    stack.cycle(T3)
    assert (stack.unit("1")["state"], stack.unit("1")["ended_at_ts"]) == ("FAILED", to_ms(ENDED))
    walltime = (T1 - ALICE_START).total_seconds()
    assert stack.unit("1")["total_time_seconds"]["walltime"] == walltime


def test_unreadable_running_units_leave_the_window_stored(
    stack: Stack, accounting: Accounting
) -> None:
    class Broken:
        def running_units(self, cluster_id: str) -> list[RunningUnit]:
            raise StoreError("database is locked")

    stack.cycle(T1)
    stack.loop.running_source = Broken()
    end_recorded(accounting)
    assert stack.cycle(T2) == 1
    assert stack.checkpoint() == to_ms(T2)
    assert accounting.lookups == []
    assert stack.metric("ceems_api_server_reconcile_failures_total") == 1


def test_unit_unknown_to_the_manager_is_kept_and_reported_once(
    stack: Stack, accounting: Accounting, caplog: pytest.LogCaptureFixture
) -> None:
    stack.cycle(T1)
    del accounting.jobs["1"]  # purged from the accounting, or never there
    with caplog.at_level(logging.DEBUG, logger="ceems.api.reconcile"):
        stack.cycle(T2)
        stack.cycle(T3)
    assert accounting.lookups == [["1"], ["1"]]
    assert (stack.unit("1")["state"], stack.unit("1")["num_updates"]) == ("RUNNING", 1)
    unknown = [r for r in caplog.records if "unknown to its resource manager" in r.getMessage()]
    assert [r.levelno for r in unknown] == [logging.WARNING, logging.DEBUG]


def test_unchanged_record_is_not_stored_again(stack: Stack, accounting: Accounting) -> None:
    stack.cycle(T1)
    still = accounting.jobs.pop("1")  # missing from the window, still running by its record
    real_lookup = accounting.fetch_units_by_id

    def lookup(uuids: Sequence[str]) -> list[Unit]:
        real_lookup(uuids)
        return [still.record("c1")]

    accounting.fetch_units_by_id = lookup  # type: ignore[method-assign]
    stack.cycle(T2)
    assert accounting.lookups == [["1"]]
    assert stack.unit("1")["num_updates"] == 1
    assert stack.metric("ceems_api_server_units_reconciled_total") == 0


# ---- the real SLURM manager over the simulated sacct ---------------------------------------


def test_simulated_slurmdbd_lag_is_caught_up_through_sacct_jobs(tmp_path: Path) -> None:
    log = tmp_path / "jobs.jsonl"
    submit, start = to_ms(T0), to_ms(ALICE_START)
    append_jobs(log, [SimJob(41, "alice", "research", submit, start, cpus=2)])
    write_shims(tmp_path / "bin", log)
    config = ApiServerConfig.model_validate(
        {
            "ceems_api_server": {
                "data": {"path": str(tmp_path / "data"), "update_from": T0,
                         "update_interval": "15m", "retention_period": "10y"},
            },
            "clusters": [{"id": "c1", "manager": "slurm", "cli": {"path": str(tmp_path / "bin")}}],
        }
    )  # fmt: skip
    engine = create_store_engine(config.ceems_api_server.data)
    migrate(engine)
    with StoreWriter(engine) as writer:
        stack = Stack(WriterLoop(config, writer, build_managers(config.clusters), {}), engine)
        stack.cycle(T1)
        assert stack.unit("41")["state"] == "RUNNING"
        ended = SimJob(41, "alice", "research", submit, start, to_ms(ENDED), "TIMEOUT",
                       cpus=2, exit_code="0:15")  # fmt: skip
        append_jobs(log, [ended])
        stack.cycle(T2)
        alice = stack.unit("41")
        assert (alice["state"], alice["ended_at_ts"]) == ("TIMEOUT", to_ms(ENDED))
        assert alice["tags"]["exit_code"] == "0:15"
        assert alice["total_time_seconds"]["alloc_cputime"] == 2 * (T1 - ALICE_START).seconds
    engine.dispose()


# ---- the reconciler alone ------------------------------------------------------------------


@dataclass
class Lookups:
    """fetch_units_by_id answering from `records`, failing on call number `fail_on`."""

    records: list[Unit] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)
    fail_on: int | None = None

    def fetch_units_by_id(self, uuids: Sequence[str]) -> list[Unit]:
        self.calls.append(list(uuids))
        if len(self.calls) == self.fail_on:
            raise ManagerError("slurmrestd: HTTP 502")
        return [r for r in self.records if r.uuid in uuids]


def running(*uuids: str) -> list[RunningUnit]:
    return [RunningUnit(u, 1_000, 2_000 + n, "RUNNING") for n, u in enumerate(uuids)]


def ended(uuid: str, created: int = 1_000, cluster: str = "c1") -> Unit:
    return Unit(
        cluster_id=cluster, resource_manager="slurm", uuid=uuid, created_at_ts=created,
        started_at_ts=2_000, ended_at_ts=9_000, state="COMPLETED",
        total_time_seconds={"walltime": 7.0}, metrics={"total_io_read_stats": {"bytes": 1.0}},
        provenance={"cpu_power_source": "rapl"},
    )  # fmt: skip


def test_lookups_are_bounded_batched_and_take_turns() -> None:
    reconciler = Reconciler(limit=3, batch=2)
    manager = Lookups()  # knows none of them
    stale = running("1", "2", "3", "4", "5")
    reconciler.reconcile("c1", manager, stale, [])
    assert manager.calls == [["1", "2"], ["3"]]
    reconciler.reconcile("c1", manager, stale, [])
    # those never looked up first, then the longest ago
    assert manager.calls[2:] == [["4", "5"], ["1"]]


def test_units_the_window_listed_are_not_looked_up() -> None:
    manager = Lookups()
    listed = [Unit("c1", "slurm", "2", created_at_ts=1_000)]
    Reconciler().reconcile("c1", manager, running("1", "2", "3"), listed)
    assert manager.calls == [["1", "3"]]


def test_failing_batch_keeps_what_earlier_batches_found() -> None:
    manager = Lookups([ended("1"), ended("3")], fail_on=2)
    outcome = Reconciler(batch=2).reconcile("c1", manager, running("1", "2", "3"), [])
    assert outcome.failed and outcome.looked_up == 2
    assert [u.uuid for u in outcome.units] == ["1"]


def test_records_lose_their_figures_and_must_match_run_and_cluster() -> None:
    manager = Lookups([ended("1"), ended("2", created=5_000), ended("3", cluster="c2")])
    outcome = Reconciler().reconcile("c1", manager, running("1", "2", "3"), [])
    (finished,) = outcome.units
    assert finished.uuid == "1" and finished.ended_at_ts == 9_000
    assert (finished.total_time_seconds, finished.metrics, finished.provenance) == ({}, {}, {})


def test_runs_of_one_job_are_looked_up_once() -> None:
    """A requeued job: two runs of one id, told apart by their submit time."""
    manager = Lookups([ended("7", created=1_000), ended("7", created=3_000)])
    runs = [RunningUnit("7", 1_000, 2_000, "RUNNING"), RunningUnit("7", 3_000, 4_000, "RUNNING")]
    outcome = Reconciler().reconcile("c1", manager, runs, [])
    assert manager.calls == [["7"]]
    assert sorted(u.created_at_ts for u in outcome.units) == [1_000, 3_000]
