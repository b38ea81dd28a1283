"""Finishing units a window missed: running in the store, ended at the resource manager.

SLURM's accounting (slurmdbd) records a job's end some time after it happens. A window fetched
in between stores the job as running; the next window starts after its end, so sacct or
slurmrestd no longer list it, and it would stay running in the store for good. So after a
cycle's last window, the units of the cluster that the store holds as running (ended_at_ts 0)
and that the window did not list are looked up by id (UnitsById), and those whose record has
changed are stored with it in the window's transaction. They carry no usage figures: the
windows that listed them counted their time already.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import sqlalchemy as sa

from ceems.api.config import DataConfig
from ceems.api.managers.protocol import ManagerError, UnitsById
from ceems.api.models import Unit
from ceems.api.store import schema
from ceems.api.store.engine import read_only_engine
from ceems.api.store.errors import StoreError

log = logging.getLogger(__name__)

# Units looked up per cluster and cycle: a store full of stale units (after an accounting
# outage) is worked through over several cycles instead of holding one up.
RECONCILE_LIMIT = 1000
# uuids per manager call: a failing call costs the lookups of one batch, not of the cycle.
RECONCILE_BATCH = 100

UnitKey = tuple[str, int]  # (uuid, created_at_ts), the store's key within a cluster


@dataclass(frozen=True, slots=True)
class RunningUnit:
    """A unit the store holds as not ended, with what tells whether its record changed."""

    uuid: str
    created_at_ts: int
    started_at_ts: int
    state: str

    @property
    def key(self) -> UnitKey:
        """The store's key of the unit within its cluster."""
        return (self.uuid, self.created_at_ts)


def select_running(conn: sa.Connection, cluster_id: str) -> list[RunningUnit]:
    """The units of a cluster with ended_at_ts 0, oldest start first."""
    t = schema.units
    query = (
        sa.select(t.c.uuid, t.c.created_at_ts, t.c.started_at_ts, t.c.state)
        .where(t.c.cluster_id == cluster_id, t.c.ended_at_ts == 0)
        .order_by(t.c.started_at_ts, t.c.uuid)
    )
    return [RunningUnit(*row) for row in conn.execute(query)]


@runtime_checkable
class RunningUnitsSource(Protocol):
    """Where the writer loop reads the units a cluster has running in the store."""

    def running_units(self, cluster_id: str) -> list[RunningUnit]:
        """The cluster's units with ended_at_ts 0."""
        ...


@dataclass(frozen=True, slots=True)
class StoreRunningUnits:
    """Reads running units from the store of `data`, as any reader does.

    A read-only engine is opened for each read and disposed after it: one query per cluster
    and cycle, with nothing held between cycles. The writer loop is the only writer, and it
    reads before committing, so the read sees every window committed so far.
    """

    data: DataConfig

    def running_units(self, cluster_id: str) -> list[RunningUnit]:
        """The cluster's units with ended_at_ts 0; StoreError when the store cannot answer."""
        engine = read_only_engine(self.data)
        try:
            with engine.connect() as conn:
                return select_running(conn, cluster_id)
        except sa.exc.SQLAlchemyError as err:
            raise StoreError(f"reading the running units of {cluster_id!r}: {err}") from err
        finally:
            engine.dispose()


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What one reconciliation found: final records to store, and whether a lookup failed."""

    units: list[Unit]
    looked_up: int
    failed: bool


@dataclass(eq=False)
class Reconciler:
    """Looks up the running units a window missed, least recently looked-up first.

    It remembers, per cluster, when each stale unit was last looked up, so units the manager
    keeps answering about unchanged (or not at all) do not crowd the others out of the
    per-cycle `limit`; and which unknown units it has warned about, to warn once.
    """

    limit: int = RECONCILE_LIMIT
    batch: int = RECONCILE_BATCH
    _cycle: int = 0
    _looked_up: dict[str, dict[UnitKey, int]] = field(default_factory=dict)
    _warned: dict[str, set[UnitKey]] = field(default_factory=dict)

    def stale(
        self, cluster_id: str, running: Iterable[RunningUnit], listed: Iterable[Unit]
    ) -> list[RunningUnit]:
        """The running units the window did not list, in lookup order, at most `limit`."""
        window = {(unit.uuid, unit.created_at_ts) for unit in listed}
        stale = [unit for unit in running if unit.key not in window]
        keys = {unit.key for unit in stale}
        # forget units that ended or went: the memory stays as large as the stale set
        looked_up = {k: v for k, v in self._looked_up.get(cluster_id, {}).items() if k in keys}
        self._looked_up[cluster_id] = looked_up
        self._warned[cluster_id] = self._warned.get(cluster_id, set()) & keys
        stale.sort(key=lambda unit: looked_up.get(unit.key, -1))  # stable: oldest start first
        return stale[: self.limit]

    def reconcile(
        self,
        cluster_id: str,
        manager: UnitsById,
        running: Iterable[RunningUnit],
        listed: Iterable[Unit],
    ) -> Reconciled:
        """Final records of the stale units whose state or end changed, without figures.

        A failing lookup is logged and ends this cycle's lookups; what earlier batches found
        is still returned. The units it missed stay running and are looked up next cycle.
        """
        self._cycle += 1
        stale = self.stale(cluster_id, running, listed)
        if not stale:
            return Reconciled([], 0, False)
        by_uuid: dict[str, list[RunningUnit]] = {}
        for unit in stale:
            by_uuid.setdefault(unit.uuid, []).append(unit)
        uuids = list(by_uuid)
        finished: list[Unit] = []
        looked_up = 0
        for first in range(0, len(uuids), self.batch):
            batch = uuids[first : first + self.batch]
            asked = [unit for uuid in batch for unit in by_uuid[uuid]]
            for unit in asked:
                self._looked_up[cluster_id][unit.key] = self._cycle
            try:
                records = manager.fetch_units_by_id(batch)
            except Exception as err:  # a third-party manager may fail in any way
                log.warning(
                    "looking up units the window missed failed; they stay running and are"
                    " looked up again next cycle",
                    extra={"cluster": cluster_id, "units": len(uuids) - first, "err": str(err)},
                    exc_info=not isinstance(err, ManagerError),
                )
                return Reconciled(finished, looked_up, True)
            looked_up += len(asked)
            finished.extend(self._changed(cluster_id, asked, records))
        log.log(
            logging.INFO if finished else logging.DEBUG,  # unknown units are warned about once
            "looked up running units the window missed",
            extra={"cluster": cluster_id, "looked_up": looked_up, "finished": len(finished)},
        )
        return Reconciled(finished, looked_up, False)

    def _changed(
        self, cluster_id: str, asked: Sequence[RunningUnit], records: Iterable[Unit]
    ) -> list[Unit]:
        """The records of `asked` whose state or end differs from the store's, emptied of
        figures; asked units without a record are reported once."""
        found: dict[UnitKey, Unit] = {}
        for answer in records:
            if answer.cluster_id == cluster_id:  # the store would refuse the whole window
                found[(answer.uuid, answer.created_at_ts)] = answer
        changed: list[Unit] = []
        for unit in asked:
            record = found.get(unit.key)
            if record is None:
                self._report_unknown(cluster_id, unit)
            elif record.ended_at_ts != 0 or record.state != unit.state:
                # no figures: the windows that listed the unit counted its time
                changed.append(replace(record, total_time_seconds={}, metrics={}, provenance={}))
        return changed

    def _report_unknown(self, cluster_id: str, unit: RunningUnit) -> None:
        warned = self._warned.setdefault(cluster_id, set())
        level = logging.DEBUG if unit.key in warned else logging.WARNING
        warned.add(unit.key)
        log.log(
            level,
            "a unit stored as running is unknown to its resource manager; left as it is",
            extra={"cluster": cluster_id, "uuid": unit.uuid, "created_at_ts": unit.created_at_ts},
        )
