"""The resource-manager extension point (entry-point group `ceems.resource_managers`)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

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
