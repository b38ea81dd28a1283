"""Domain values as table rows, checked against the columns before anything is written."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ceems.api.models import METRIC_FIELDS, Project, Unit, User
from ceems.api.store import schema
from ceems.api.store.engine import dumps_json
from ceems.api.store.errors import StoreInputError

MAX_TS = 2**63 - 1  # BIGINT
_UNIT_TEXT = ("resource_manager", "uuid", "name", "project", "groupname", "username", "state")
_UNIT_TIMES = ("created_at_ts", "started_at_ts", "ended_at_ts")
_UNIT_JSON = ("allocation", "tags", "provenance", "total_time_seconds", "metrics")
_KNOWN_METRICS = frozenset(METRIC_FIELDS)


def _limit(table: sa.Table, column: str) -> int | None:
    kind = table.c[column].type
    return kind.length if isinstance(kind, sa.String) else None


# Text is unlimited for the store, but no SLURM or OpenStack name comes near this length.
_NO_LIMIT = 2**31
_UNIT_TEXT_LIMITS = [(name, _limit(schema.units, name) or _NO_LIMIT) for name in _UNIT_TEXT]
_NAME_LIMITS = {
    "cluster_id": _limit(schema.users, "cluster_id"),
    "resource_manager": _limit(schema.users, "resource_manager"),
    "name": _limit(schema.users, "name"),
    "uid": _limit(schema.users, "uid"),
}


def check_text(what: str, field: str, value: object, limit: int | None) -> None:
    """A text column value: a str without NUL (PostgreSQL refuses it) within the column length."""
    if not isinstance(value, str):
        raise StoreInputError(f"{what}: {field} must be a string, not {type(value).__name__}")
    if limit is not None and len(value) > limit:
        raise StoreInputError(
            f"{what}: {field} is {len(value)} characters long, the store keeps at most {limit}"
        )
    if "\x00" in value:
        raise StoreInputError(f"{what}: {field} contains a NUL character")


_MAX_AMOUNT_INT = 2**1023  # larger ints do not convert to a float, which accumulating needs


def check_amounts(what: str, field: str, amounts: object) -> None:
    """A map of name to amount: every amount a finite number (JSON has no NaN or Infinity)."""
    if not isinstance(amounts, Mapping):
        raise StoreInputError(f"{what}: {field} must be a mapping, not {type(amounts).__name__}")
    for name, value in amounts.items():
        # exact type tests: bool is an int, and a commit checks a million of these
        kind = type(value)
        if type(name) is str and (
            (kind is float and value - value == 0.0)  # false for inf and nan
            or (kind is int and -_MAX_AMOUNT_INT < value < _MAX_AMOUNT_INT)
        ):
            continue
        if not isinstance(name, str):
            raise StoreInputError(f"{what}: {field} has a non-string key {name!r}")
        raise StoreInputError(f"{what}: {field}[{name!r}] = {value!r} is not a finite number")


def check_unit(cluster_id: str, unit: Unit) -> None:
    """Refuse a unit that would not store as given, naming it and the offending field."""
    what = f"unit {unit.uuid!r} of cluster {cluster_id!r}"
    if unit.cluster_id != cluster_id:
        raise StoreInputError(f"{what}: belongs to cluster {unit.cluster_id!r}")
    for field, limit in _UNIT_TEXT_LIMITS:
        value = getattr(unit, field)
        # the common case in one expression; check_text then says what is wrong
        if type(value) is not str or len(value) > limit or "\x00" in value:
            check_text(what, field, value, limit)
    if not unit.uuid:
        raise StoreInputError(f"{what}: uuid is empty")
    for field in _UNIT_TIMES:
        value = getattr(unit, field)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TS:
            raise StoreInputError(
                f"{what}: {field} = {value!r} is not epoch milliseconds (0 to {MAX_TS})"
            )
    if not isinstance(unit.ignore, bool):
        raise StoreInputError(f"{what}: ignore must be true or false, not {unit.ignore!r}")
    check_amounts(what, "total_time_seconds", unit.total_time_seconds)
    unknown = set(unit.metrics) - _KNOWN_METRICS
    if unknown:
        raise StoreInputError(
            f"{what}: unknown metric(s) {', '.join(sorted(map(str, unknown)))}"
            f" (known: {', '.join(METRIC_FIELDS)})"
        )
    for metric, values in unit.metrics.items():
        check_amounts(what, metric, values)


def check_names(
    cluster_id: str, kind: str, entries: Sequence[User] | Sequence[Project]
) -> list[tuple[str, str]]:
    """Check users or projects of one cluster; returns their (user, project) memberships."""
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for entry in entries:
        what = f"{kind} {entry.name!r} of cluster {cluster_id!r}"
        if entry.cluster_id != cluster_id:
            raise StoreInputError(f"{what}: belongs to cluster {entry.cluster_id!r}")
        for field, limit in _NAME_LIMITS.items():
            check_text(what, field, getattr(entry, field), limit)
        if entry.name in seen:
            raise StoreInputError(f"{what}: listed twice")
        seen.add(entry.name)
        others = entry.projects if isinstance(entry, User) else entry.users
        for other in others:
            check_text(what, "member", other, _NAME_LIMITS["name"])
            pairs.append((entry.name, other) if isinstance(entry, User) else (other, entry.name))
    return pairs


def name_row(entry: User | Project, now_ms: int) -> dict[str, Any]:
    """A users or projects row."""
    return {
        "cluster_id": entry.cluster_id,
        "resource_manager": entry.resource_manager,
        "name": entry.name,
        "uid": entry.uid,
        "tags": dict(entry.tags),
        "last_updated_at_ts": now_ms,
    }


def describe_unencodable(
    units: Iterable[Unit], users: Iterable[User] = (), projects: Iterable[Project] = ()
) -> str | None:
    """Which value cannot be stored as JSON, for an error message; None when all can."""
    for unit in units:
        for field in _UNIT_JSON:
            problem = _json_problem(getattr(unit, field))
            if problem:
                return f"unit {unit.uuid!r}: {field}: {problem}"
    for kind, entries in (("user", users), ("project", projects)):
        for entry in entries:
            problem = _json_problem(entry.tags)
            if problem:
                return f"{kind} {entry.name!r}: tags: {problem}"
    return None


def _json_problem(value: Mapping[str, Any]) -> str | None:
    try:
        dumps_json(dict(value))
    except (TypeError, ValueError, OverflowError, RecursionError) as err:
        return str(err)
    return None


def unit_row(
    unit: Unit, figures: Mapping[str, Any], num_updates: int, now_ms: int
) -> dict[str, Any]:
    """A units row: the unit's latest metadata with its lifetime `figures` (Figures.columns)."""
    return {
        "cluster_id": unit.cluster_id,
        "resource_manager": unit.resource_manager,
        "uuid": unit.uuid,
        "name": unit.name,
        "project": unit.project,
        "groupname": unit.groupname,
        "username": unit.username,
        "created_at_ts": unit.created_at_ts,
        "started_at_ts": unit.started_at_ts,
        "ended_at_ts": unit.ended_at_ts,
        "state": unit.state,
        "allocation": dict(unit.allocation),
        "tags": dict(unit.tags),
        "provenance": dict(unit.provenance),
        "ignore": unit.ignore,
        "num_updates": num_updates,
        "last_updated_at_ts": now_ms,
        **figures,
    }
