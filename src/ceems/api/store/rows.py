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
    if type(amounts) is not dict and not isinstance(amounts, Mapping):
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


def _amounts_ok(amounts: object) -> bool:
    """check_amounts' common case, without building its messages."""
    if type(amounts) is not dict:
        return False
    for name, value in amounts.items():
        kind = type(value)
        if type(name) is not str or not (
            (kind is float and value - value == 0.0)
            or (kind is int and -_MAX_AMOUNT_INT < value < _MAX_AMOUNT_INT)
        ):
            return False
    return True


def _unit_ok(cluster_id: str, unit: Unit) -> bool:
    """Whether check_unit passes, in the exact types most units have: a commit checks them all,
    and naming the unit for a message it will not need took a tenth of that."""
    if unit.cluster_id != cluster_id or not unit.uuid or type(unit.ignore) is not bool:
        return False
    for field, limit in _UNIT_TEXT_LIMITS:
        value = getattr(unit, field)
        if type(value) is not str or len(value) > limit or "\x00" in value:
            return False
    for value in (unit.created_at_ts, unit.started_at_ts, unit.ended_at_ts):
        if type(value) is not int or not 0 <= value <= MAX_TS:
            return False
    provenance = unit.provenance
    if type(provenance) is not dict:
        return False
    for key, text in provenance.items():
        if type(key) is not str or type(text) is not str:
            return False
    metrics = unit.metrics
    if not _KNOWN_METRICS.issuperset(metrics) or not _amounts_ok(unit.total_time_seconds):
        return False
    # a loop, not all(): the generator's frames cost more than the checks
    for values in metrics.values():  # noqa: SIM110
        if not _amounts_ok(values):
            return False
    return True


def check_unit(cluster_id: str, unit: Unit) -> None:
    """Refuse a unit that would not store as given, naming it and the offending field."""
    if not _unit_ok(cluster_id, unit):
        _check_unit_closely(cluster_id, unit)


def _check_unit_closely(cluster_id: str, unit: Unit) -> None:
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
    if not isinstance(unit.provenance, Mapping):
        raise StoreInputError(f"{what}: provenance must be a mapping")
    for key, value in unit.provenance.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise StoreInputError(f"{what}: provenance {key!r}: {value!r} is not text to text")


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


# The units columns a commit writes, in the order of unit_params' values: the table's order
# (all but `id`), the order of the compiled INSERT's parameters, so no row is rearranged.
UNIT_COLUMNS = (
    "cluster_id", "resource_manager", "uuid", "name", "project", "groupname", "username",
    "created_at_ts", "started_at_ts", "ended_at_ts", "state", "allocation", "tags",
    "total_time_seconds", *METRIC_FIELDS, "provenance", "ignore", "num_updates",
    "last_updated_at_ts",
)  # fmt: skip


def _encoded(value: Mapping[str, Any] | None) -> str:
    """A JSON column's text; a missing or empty map is `{}`."""
    if not value:
        return "{}"
    return dumps_json(value if type(value) is dict else dict(value))


def unit_params(
    unit: Unit, figures: Mapping[str, Any], num_updates: int, now_ms: int
) -> tuple[Any, ...]:
    """A units row as UNIT_COLUMNS values: the unit's latest metadata with its lifetime
    `figures` (Figures.columns), JSON columns encoded."""
    return (
        unit.cluster_id, unit.resource_manager, unit.uuid, unit.name, unit.project,
        unit.groupname, unit.username, unit.created_at_ts, unit.started_at_ts, unit.ended_at_ts,
        unit.state, _encoded(unit.allocation), _encoded(unit.tags),
        _encoded(figures["total_time_seconds"]), *[_encoded(figures[m]) for m in METRIC_FIELDS],
        _encoded(unit.provenance), unit.ignore, num_updates, now_ms,
    )  # fmt: skip


def fresh_unit_params(unit: Unit, now_ms: int) -> tuple[Any, ...]:
    """unit_params of a unit new to the store, seen once: its window figures are its
    lifetime ones, so they are encoded as they come (times as floats, as accumulated ones
    are). Most of an ingest takes this path, without the accumulation's work."""
    times = {key: float(value) for key, value in unit.total_time_seconds.items()}
    maps = map(unit.metrics.get, METRIC_FIELDS)
    return (
        unit.cluster_id, unit.resource_manager, unit.uuid, unit.name, unit.project,
        unit.groupname, unit.username, unit.created_at_ts, unit.started_at_ts, unit.ended_at_ts,
        unit.state, _encoded(unit.allocation), _encoded(unit.tags), _encoded(times),
        # most metric maps are empty: spare them the call
        *[_encoded(value) if value else "{}" for value in maps], _encoded(unit.provenance),
        unit.ignore, 1, now_ms,
    )  # fmt: skip
