"""The writer loop: fetch units from every cluster, run its updaters, store one window at a time.

One loop per server. Each window is committed in a single transaction together with the
cluster's checkpoint (`updates.last_update_ts`), so a crash or kill at any point loses nothing
committed and, on restart, the next window starts exactly where the last committed one ended:
no unit's usage is counted twice. A cycle's last window also carries the final records of
running units it no longer lists (ceems.api.reconcile).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from ceems.api.config import ApiServerConfig, ClusterConfig
from ceems.api.managers.protocol import ManagerError, ResourceManager, UnitsById
from ceems.api.models import Project, Unit, User
from ceems.api.reconcile import Reconciler, RunningUnitsSource, StoreRunningUnits
from ceems.api.updaters.protocol import Updater, UpdaterError

log = logging.getLogger(__name__)


def to_ms(moment: datetime) -> int:
    """UTC epoch milliseconds of an aware datetime."""
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """Aware UTC datetime of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class WindowStore(Protocol):
    """What the loop needs of the store (ceems.api.store.writes.StoreWriter)."""

    def last_update(self, cluster_id: str) -> int | None:
        """Checkpoint of a cluster, epoch ms."""
        ...

    def commit_update(
        self,
        cluster_id: str,
        window_end_ms: int,
        units: list[Unit],
        users: list[User] | None,
        projects: list[Project] | None,
        now_ms: int,
    ) -> None:
        """Store one window and move the checkpoint, atomically."""
        ...

    def sync_admins(self, source: str, names: list[str]) -> None:
        """Replace the admins of one source."""
        ...

    def purge(self, retention: timedelta, now_ms: int) -> object:
        """Delete what is older than the retention period."""
        ...

    def backup(self, dest_dir: Path, now: datetime) -> Path:
        """An online, consistent copy of the database in `dest_dir`."""
        ...


@dataclass(eq=False)
class WriterMetrics:
    """The loop's own health, served on the API server's /metrics."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.windows = Counter(
            "ceems_api_server_update_windows", "Windows committed per cluster.", ["cluster"],
            registry=self.registry,
        )  # fmt: skip
        self.failures = Counter(
            "ceems_api_server_update_failures", "Failed cluster updates (nothing stored).",
            ["cluster", "stage"], registry=self.registry,
        )  # fmt: skip
        self.updater_failures = Counter(
            "ceems_api_server_updater_failures",
            "Updater failures; the window's units were stored without its metrics.",
            ["cluster", "updater"], registry=self.registry,
        )  # fmt: skip
        self.units = Counter(
            "ceems_api_server_units_stored", "Units written per cluster.", ["cluster"],
            registry=self.registry,
        )  # fmt: skip
        self.reconciled = Counter(
            "ceems_api_server_units_reconciled",
            "Units stored as running that a window missed, stored with their final record.",
            ["cluster"], registry=self.registry,
        )  # fmt: skip
        self.reconcile_failures = Counter(
            "ceems_api_server_reconcile_failures",
            "Failed lookups of running units a window missed (the window was stored).",
            ["cluster"], registry=self.registry,
        )  # fmt: skip
        self.lag = Gauge(
            "ceems_api_server_update_lag_seconds",
            "Seconds between now and the cluster's last committed window end.",
            ["cluster"], registry=self.registry,
        )  # fmt: skip


@dataclass(eq=False)
class WriterLoop:
    """Every `update_interval`: for each cluster, commit the windows since its checkpoint."""

    config: ApiServerConfig
    store: WindowStore
    managers: Mapping[str, ResourceManager]
    updaters: Mapping[str, Updater]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    metrics: WriterMetrics = field(default_factory=WriterMetrics)
    admin_source: Callable[[], list[str]] | None = None  # Grafana team members, when configured
    reconciler: Reconciler = field(default_factory=Reconciler)
    # where running units are read; None: the store if it offers them, else a read-only engine
    running_source: RunningUnitsSource | None = None
    _last_backup: datetime | None = None

    def first_window_start(self, now: datetime) -> datetime:
        """Where a cluster with no checkpoint starts: `update_from`, else one interval ago."""
        data = self.config.ceems_api_server.data
        return data.update_from or now - data.update_interval

    def update_cluster(self, cluster: ClusterConfig, now: datetime) -> int:
        """Commit every window of one cluster up to `now`; returns the units stored.

        Back-filling from `update_from` walks in `max_update_interval` steps, each its own
        transaction, so a long back-fill that is interrupted resumes where it stopped.
        """
        data = self.config.ceems_api_server.data
        manager = self.managers[cluster.id]
        last = self.store.last_update(cluster.id)
        start = from_ms(last) if last is not None else self.first_window_start(now)
        stored = 0
        while start < now:
            end = min(start + data.max_update_interval, now)
            final = end >= now
            try:
                units = manager.fetch_units(start, end)
                users, projects = manager.fetch_users_projects(end) if final else (None, None)
            except ManagerError as err:
                self.metrics.failures.labels(cluster.id, "fetch").inc()
                log.error("resource manager failed", extra={"cluster": cluster.id, "err": str(err)})
                return stored  # retried next cycle from the same checkpoint
            units = self.run_updaters(cluster, start, end, units)
            finished = self.finish_missed_units(cluster, manager, units) if final else []
            self.store.commit_update(
                cluster.id, to_ms(end), [*units, *finished],
                list(users) if users is not None else None,
                list(projects) if projects is not None else None,
                to_ms(self.clock()),
            )  # fmt: skip
            self.metrics.reconciled.labels(cluster.id).inc(len(finished))
            self.metrics.windows.labels(cluster.id).inc()
            self.metrics.units.labels(cluster.id).inc(len(units))
            stored += len(units)
            start = end
        self.metrics.lag.labels(cluster.id).set((self.clock() - start).total_seconds())
        return stored

    def finish_missed_units(
        self, cluster: ClusterConfig, manager: ResourceManager, units: list[Unit]
    ) -> list[Unit]:
        """Final records (without figures) of the cluster's running units that `units` miss.

        Only the last window of a cycle does this: back-fill windows would look up the same
        units again. A manager without fetch_units_by_id is not asked; any failure here is
        a warning that leaves the window to be stored as it is.
        """
        if not isinstance(manager, UnitsById):
            return []
        source = self.running_source
        if source is None:
            store = self.store
            source = (
                store
                if isinstance(store, RunningUnitsSource)
                else StoreRunningUnits(self.config.ceems_api_server.data)
            )
        try:
            running = source.running_units(cluster.id)
            outcome = self.reconciler.reconcile(cluster.id, manager, running, units)
        except Exception as err:  # finishing stale units must never cost the window
            self.metrics.reconcile_failures.labels(cluster.id).inc()
            log.warning(
                "cannot look up running units the window missed",
                extra={"cluster": cluster.id, "err": f"{type(err).__name__}: {err}"},
            )
            return []
        if outcome.failed:
            self.metrics.reconcile_failures.labels(cluster.id).inc()
        return outcome.units

    def run_updaters(
        self, cluster: ClusterConfig, start: datetime, end: datetime, units: list[Unit]
    ) -> list[Unit]:
        """Enrich units with each configured updater; one that fails is skipped and counted."""
        for updater_id in cluster.updaters:
            try:
                units = self.updaters[updater_id].update(start, end, units)
            except UpdaterError as err:
                self.metrics.updater_failures.labels(cluster.id, updater_id).inc()
                log.error(
                    "updater failed; units stored without its metrics",
                    extra={"cluster": cluster.id, "updater": updater_id, "err": str(err)},
                )
        return units

    def run_once(self) -> int:
        """One cycle over all clusters, then admins and retention; returns units stored.

        Windows end on whole seconds: sacct takes and prints whole seconds, so a job that
        started in a window's last fraction of a second would otherwise be printed as started
        inside that window without being listed in it, and lose that fraction of its time.
        """
        now = self.clock().replace(microsecond=0)
        stored = 0
        for cluster in self.config.clusters:
            try:
                stored += self.update_cluster(cluster, now)
            except Exception:  # one cluster's bug must not stop the others' updates
                self.metrics.failures.labels(cluster.id, "store").inc()
                log.exception("cluster update failed", extra={"cluster": cluster.id})
        if self.admin_source is not None:
            try:
                self.store.sync_admins("grafana", self.admin_source())
            except Exception as err:  # keep the previous Grafana admins
                log.error("grafana admin sync failed", extra={"err": str(err)})
        data = self.config.ceems_api_server.data
        if not data.skip_delete_old_units:
            self.store.purge(data.retention_period, to_ms(now))
        self.backup_if_due(now)
        return stored

    def backup_if_due(self, now: datetime) -> Path | None:
        """Copy the database to `backup_path` when `backup_interval` has passed since the last."""
        data = self.config.ceems_api_server.data
        if not data.backup_path:
            return None
        if self._last_backup is not None and now - self._last_backup < data.backup_interval:
            return None
        try:
            path = self.store.backup(Path(data.backup_path), now)
        except Exception as err:  # a full disk must not stop updates; retried next cycle
            log.error("backup failed", extra={"path": data.backup_path, "err": str(err)})
            return None
        self._last_backup = now
        log.info("database backed up", extra={"path": str(path)})
        return path

    def serve(self, stop: threading.Event, on_cycle: Callable[[], None] | None = None) -> None:
        """Run cycles every `update_interval` until `stop` is set."""
        interval = self.config.ceems_api_server.data.update_interval.total_seconds()
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.run_once()
                if on_cycle is not None:
                    on_cycle()
            except Exception:  # the loop must outlive any single failure
                log.exception("update cycle failed")
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
