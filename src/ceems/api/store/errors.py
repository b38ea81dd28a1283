"""Errors of the compute-unit store."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot be opened, read or written; the message names what and why."""


class StoreInputError(StoreError):
    """Values handed to the writer do not fit the store; nothing of the call was stored."""


class CheckpointError(StoreError):
    """A window at or before the stored checkpoint: committing it would count it twice."""


class MigrationError(StoreError):
    """The database schema cannot be brought to the version asked for."""
