"""The updater extension point (entry-point group `ceems.updaters`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from ceems.api.models import Unit


class UpdaterError(Exception):
    """An updater could not enrich units; the writer stores them un-updated and counts it."""


class Updater(Protocol):
    """Built once per configured updater as `Factory(config: UpdaterConfig)`."""

    def update(self, start: datetime, end: datetime, units: Sequence[Unit]) -> list[Unit]:
        """The same units with aggregate metrics for the window [start, end) filled in."""
        ...
