"""The resource-manager extension point (entry-point group `ceems.resource_managers`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from ceems.api.models import Project, Unit, User


class ManagerError(Exception):
    """A resource manager could not answer (command failed, API down): nothing is stored."""


class ResourceManager(Protocol):
    """Built once per configured cluster as `Factory(cluster: ClusterConfig)`."""

    def fetch_units(self, start: datetime, end: datetime) -> list[Unit]:
        """Units active in [start, end) with their usage within that window."""
        ...

    def fetch_users_projects(self, now: datetime) -> tuple[list[User], list[Project]]:
        """Every user and project of the cluster, with their memberships."""
        ...


@runtime_checkable
class UnitsById(Protocol):
    """Optional for a ResourceManager: the current records of units named by uuid.

    The writer loop asks for the units it holds as running that a window no longer lists
    (their end reached the manager's accounting late), to store their final state. Managers
    without this method are simply not asked.
    """

    def fetch_units_by_id(self, uuids: Sequence[str]) -> list[Unit]:
        """The records of these units, without usage (empty total_time_seconds and metrics).

        A uuid may give several records (runs told apart by created_at_ts, as a requeued
        SLURM job) or none (unknown to the manager). ManagerError when it cannot answer.
        """
        ...
