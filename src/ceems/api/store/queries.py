"""Read queries of the API server: one statement per request, on SQLite or PostgreSQL.

Every function takes a Connection (readers use the read-only engine and never wait on
the writer) and keeps CEEMS' semantics: a unit is in a window when it *ended* in it
(`running` adds units that have not ended), usage "current" sums the units last updated
in the window, and a user sees the usage of every project they are a member of.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa

from ceems.api.aggregate import UsageRow, aggregate_usage, usage_row
from ceems.api.models import METRIC_FIELDS, Project, User
from ceems.api.store.engine import loads_json
from ceems.api.store.schema import (
    admin_users,
    daily_usage,
    memberships,
    projects,
    units,
    updates,
)
from ceems.api.store.schema import usage as usage_table
from ceems.api.store.schema import users as users_table

DAY_MS = 86_400_000
_STREAM = 2_000  # rows fetched at a time when folding units into usage


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """An inclusive window in UTC epoch milliseconds."""

    from_ms: int
    to_ms: int


@dataclass(frozen=True, slots=True)
class UnitFilter:
    """Which units to list; empty sequences do not filter."""

    cluster_ids: Sequence[str] = ()
    uuids: Sequence[str] = ()
    projects: Sequence[str] = ()
    users: Sequence[str] = ()  # owners (`username IN`)
    # Units these users own or that belong to a project they are members of (in the unit's
    # cluster): what a non-admin may see.
    members_of: Sequence[str] = ()
    window: TimeWindow | None = None  # ignored when uuids are given, as in CEEMS
    running: bool = False  # also units that have not ended, whatever the window


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Which usage rows to sum; `members_of=None` means every project (admins)."""

    cluster_ids: Sequence[str] = ()
    projects: Sequence[str] = ()
    members_of: Sequence[str] | None = None  # rows of projects these users belong to
    window: TimeWindow | None = None


@dataclass(frozen=True, slots=True)
class Stat:
    """Quick counts of one cluster (CEEMS' `models.Stat`)."""

    cluster_id: str
    resource_manager: str
    num_units: int
    num_inactive_units: int
    num_active_units: int
    num_projects: int
    num_users: int


def projects_of(conn: sa.Connection, names: Sequence[str]) -> dict[str, list[str]]:
    """Projects these users belong to, per cluster (one indexed lookup in memberships)."""
    rows = conn.execute(_projects_statement(len(names)), _numbered("user", names, {}))
    found: dict[str, list[str]] = {}
    for cluster_id, project in rows:
        found.setdefault(cluster_id, []).append(project)
    return found


@functools.lru_cache(maxsize=64)
def _projects_statement(count: int) -> sa.Select[Any]:
    m = memberships
    names = _in_numbered(m.c.username, "user", count)
    return sa.select(m.c.cluster_id, m.c.project).distinct().where(names)


def _numbered(prefix: str, values: Iterable[Any], params: dict[str, Any]) -> dict[str, Any]:
    """`params` with `values` added as `prefix_0`, `prefix_1`, ..."""
    params.update((f"{prefix}_{i}", value) for i, value in enumerate(values))
    return params


def _in_numbered(column: sa.ColumnElement[Any], prefix: str, count: int) -> sa.ColumnElement[bool]:
    """`column IN (:prefix_0, ..)`: one parameter per value, so that the statement is
    complete SQL that can be kept and run again with other values."""
    return column.in_([sa.bindparam(f"{prefix}_{i}", type_=column.type) for i in range(count)])


def _member_projects(
    conn: sa.Connection,
    names: Sequence[str],
    params: dict[str, Any],
    cluster_ids: Sequence[str] = (),
) -> tuple[int, ...]:
    """The projects `names` belong to (in `cluster_ids` when given), added to `params` as
    `member_cluster_k` and `member_project_k_i`; returns how many projects each cluster has
    (what _in_projects is built from)."""
    mine = projects_of(conn, names)
    if cluster_ids:
        mine = {c: p for c, p in mine.items() if c in cluster_ids}
    clusters = sorted(mine.items())
    for k, (cluster_id, names_in) in enumerate(clusters):
        params[f"member_cluster_{k}"] = cluster_id
        _numbered(f"member_project_{k}", sorted(names_in), params)
    return tuple(len(p) for _, p in clusters)


def _in_projects(table: sa.Table, counts: Sequence[int]) -> sa.ColumnElement[bool]:
    """The row's project is one of the members' projects in its cluster (`_member_projects`'
    parameters, `counts[k]` projects in cluster k).

    Spelled out as `(cluster_id = c AND project IN (...)) OR ...` rather than an EXISTS on
    memberships: each term is then an index lookup (SQLite's multi-index OR, PostgreSQL's
    bitmap OR) instead of a scan of every unit.
    """
    cluster = table.c.cluster_id
    terms = [
        sa.and_(
            cluster == sa.bindparam(f"member_cluster_{k}", type_=cluster.type),
            _in_numbered(table.c.project, f"member_project_{k}", count),
        )
        for k, count in enumerate(counts)
    ]
    return sa.or_(*terms) if terms else sa.false()


def _member_of(table: sa.Table, names: Sequence[str]) -> sa.Exists:
    """The row's (cluster_id, project) is a project one of `names` belongs to."""
    m = memberships
    return sa.exists().where(
        m.c.cluster_id == table.c.cluster_id,
        m.c.project == table.c.project,
        m.c.username.in_(names),
    )


def _ended_in(
    from_ms: int | sa.BindParameter[Any], to_ms: int | sa.BindParameter[Any], running: bool
) -> sa.ColumnElement[bool]:
    """Units that ended in [from_ms, to_ms] (values or parameters), and running ones if
    `running`."""
    # `ended_at_ts > 0` first: a window starting at the epoch must not take running units.
    ended = sa.and_(units.c.ended_at_ts > 0, units.c.ended_at_ts.between(from_ms, to_ms))
    return sa.or_(ended, units.c.ended_at_ts == 0) if running else ended


# Metric maps, tags and the like. SQLAlchemy's JSON type decodes each value through two
# Python-level processors (psycopg through json.loads), which cost more than the query on a
# list of 500 units: they are selected as text and decoded with loads_json in one pass.
_JSON_UNIT_COLUMNS = frozenset(c.name for c in units.c if isinstance(c.type, sa.JSON))
# Columns whose values SQLAlchemy converts after the driver (SQLite's booleans are integers);
# the others, JSON selected as text included, come from both drivers as they are returned.
_PROCESSED_UNIT_COLUMNS = frozenset(
    c.name for c in units.c if not isinstance(c.type, sa.String | sa.Integer | sa.JSON)
)


class UnitRows(NamedTuple):
    """Unit rows as the store returns them, before any decoding: text and numbers only, so
    that a row can be a dict key."""

    names: tuple[str, ...]
    split: int  # columns from `split` on hold JSON text to decode
    rows: Sequence[Sequence[Any]]


def fetch_unit_rows(
    conn: sa.Connection, flt: UnitFilter, columns: Collection[str] | None = None
) -> UnitRows:
    """The rows fetch_units decodes: `columns` (all when None), JSON columns last."""
    names = unit_row_columns(columns)
    plain = sum(1 for name in names if name not in _JSON_UNIT_COLUMNS)
    result = conn.execute(*unit_query(conn, flt, names))
    if _PROCESSED_UNIT_COLUMNS.isdisjoint(names):
        # Nothing for SQLAlchemy to convert: the driver's own tuples, without building a
        # Row for each (a third of the query's time on 500 units; Rows compare slowly too).
        with result:
            return UnitRows(tuple(names), plain, result.cursor.fetchall())
    return UnitRows(tuple(names), plain, result.all())


def unit_row_columns(columns: Collection[str] | None = None) -> list[str]:
    """`columns` (all when None) in the order fetch_unit_rows selects them."""
    names = list(units.c.keys()) if columns is None else list(columns)
    # JSON columns last, so that a row is its plain values then the maps to decode.
    plain = [name for name in names if name not in _JSON_UNIT_COLUMNS]
    return [*plain, *(name for name in names if name in _JSON_UNIT_COLUMNS)]


def unit_dicts(found: UnitRows) -> list[dict[str, Any]]:
    """Rows as dicts, JSON text decoded."""
    names, split = found.names, found.split
    if split == len(names):
        return [dict(zip(names, row, strict=True)) for row in found.rows]
    # JSON columns are NOT NULL: each value past `split` is JSON text.
    return [
        dict(zip(names, (*row[:split], *map(loads_json, row[split:])), strict=True))
        for row in found.rows
    ]


def fetch_units(
    conn: sa.Connection, flt: UnitFilter, columns: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """Units that are not ignored, matching every filter, by cluster, uuid and submit time.

    `columns` names the `units` columns to return (all when None).
    """
    return unit_dicts(fetch_unit_rows(conn, flt, columns))


def select_units(conn: sa.Connection, flt: UnitFilter, names: Sequence[str]) -> sa.Select[Any]:
    """The statement fetch_units runs, its values bound (it looks the members' projects
    up first); JSON columns come back as text."""
    statement, params = unit_query(conn, flt, names)
    return statement.params(params)


class _UnitShape(NamedTuple):
    """What a unit statement is built from: the columns and how many values each filter
    has, never the values themselves."""

    dialect: str
    names: tuple[str, ...]
    users: int
    members: int
    # With members: how many of their projects there are in each of their clusters.
    member_projects: tuple[int, ...]
    cluster_ids: int
    projects: int
    uuids: int
    window: bool
    running: bool


def unit_query(
    conn: sa.Connection, flt: UnitFilter, names: Sequence[str]
) -> tuple[sa.Select[Any], dict[str, Any]]:
    """The statement fetch_units runs and its parameters' values.

    Statements are kept per shape (`_UnitShape`) and run with other values: building one
    and deriving SQLAlchemy's cache key from it cost a quarter of the query on a list of
    500 units; a kept statement keeps its key.
    """
    params: dict[str, Any] = {}
    member_projects: tuple[int, ...] = ()
    if flt.members_of:
        member_projects = _member_projects(conn, flt.members_of, params, flt.cluster_ids)
    window = flt.window is not None and not flt.uuids
    if window:
        assert flt.window is not None
        params["from_ms"], params["to_ms"] = flt.window.from_ms, flt.window.to_ms
    for prefix, values in (
        ("user", flt.users),
        ("member", flt.members_of),
        ("cluster", flt.cluster_ids),
        ("project", flt.projects),
        ("uuid", flt.uuids),
    ):
        _numbered(prefix, values, params)
    shape = _UnitShape(
        conn.dialect.name, tuple(names), len(flt.users), len(flt.members_of), member_projects,
        len(flt.cluster_ids), len(flt.projects), len(flt.uuids), window, flt.running,
    )  # fmt: skip
    if len(params) > _KEPT_PARAMS:
        # Long lists of uuids or projects: rare, and many such statements would be large.
        return _build_unit_statement(shape), params
    return _unit_statement(shape), params


# Statements with more parameters than this are built afresh every time.
_KEPT_PARAMS = 64


@functools.lru_cache(maxsize=256)
def _unit_statement(shape: _UnitShape) -> sa.Select[Any]:
    return _build_unit_statement(shape)


def _build_unit_statement(shape: _UnitShape) -> sa.Select[Any]:
    t = units
    # SQLite stores JSON as text already; PostgreSQL's JSONB is cast (its canonical text).
    as_text = sa.type_coerce if shape.dialect == "sqlite" else sa.cast
    selected = [
        as_text(t.c[n], sa.Text) if n in _JSON_UNIT_COLUMNS else t.c[n] for n in shape.names
    ]
    stmt = sa.select(*selected).where(t.c.ignore == sa.false())
    if shape.users:
        stmt = stmt.where(_in_numbered(t.c.username, "user", shape.users))
    if shape.members:
        # The cluster restriction goes inside each OR term: a separate `cluster_id IN`
        # makes SQLite walk every unit of the cluster instead of the user's and projects'.
        own = _in_numbered(t.c.username, "member", shape.members)
        if shape.cluster_ids:
            own = sa.and_(_in_numbered(t.c.cluster_id, "cluster", shape.cluster_ids), own)
        stmt = stmt.where(sa.or_(own, _in_projects(t, shape.member_projects)))
    elif shape.cluster_ids:
        stmt = stmt.where(_in_numbered(t.c.cluster_id, "cluster", shape.cluster_ids))
    if shape.projects:
        stmt = stmt.where(_in_numbered(t.c.project, "project", shape.projects))
    if shape.uuids:
        # A lookup by uuid is not bounded by the window (CEEMS skips it too).
        stmt = stmt.where(_in_numbered(t.c.uuid, "uuid", shape.uuids))
    elif shape.window:
        from_ms, to_ms = (sa.bindparam(n, type_=t.c.ended_at_ts.type) for n in ("from_ms", "to_ms"))
        ended = _ended_in(from_ms, to_ms, shape.running)
        stmt = stmt.where(ended)
    elif shape.running:
        stmt = stmt.where(t.c.ended_at_ts == 0)
    return stmt.order_by(t.c.cluster_id, t.c.uuid, t.c.created_at_ts)


def verify_ownership(
    conn: sa.Connection, user: str, uuids: Collection[str], cluster_ids: Sequence[str] = ()
) -> bool:
    """True when `user` owns, or is a member of the project of, every one of `uuids`.

    A uuid that does not exist fails the check, as in CEEMS; membership counts only in
    the unit's own cluster.
    """
    wanted = set(uuids)
    if not wanted:
        return False
    t = units
    stmt = (
        sa.select(t.c.uuid)
        .distinct()
        .where(t.c.uuid.in_(wanted), sa.or_(t.c.username == user, _member_of(t, [user])))
    )
    if cluster_ids:
        stmt = stmt.where(t.c.cluster_id.in_(cluster_ids))
    return set(conn.execute(stmt).scalars()) == wanted


def fetch_users(
    conn: sa.Connection, names: Sequence[str] | None, cluster_ids: Sequence[str] = ()
) -> list[User]:
    """Users (all when `names` is None) with their projects, by cluster and name."""
    u, m = users_table, memberships
    join = u.outerjoin(m, sa.and_(m.c.cluster_id == u.c.cluster_id, m.c.username == u.c.name))
    stmt = sa.select(u, m.c.project).select_from(join)
    if names is not None:
        stmt = stmt.where(u.c.name.in_(names))
    if cluster_ids:
        stmt = stmt.where(u.c.cluster_id.in_(cluster_ids))
    stmt = stmt.order_by(u.c.cluster_id, u.c.name, m.c.project)
    return [
        User(**first, projects=others)
        for first, others in _with_members(conn.execute(stmt).mappings(), "project")
    ]


def fetch_projects(
    conn: sa.Connection,
    members_of: Sequence[str] | None,
    names: Sequence[str] = (),
    cluster_ids: Sequence[str] = (),
) -> list[Project]:
    """Projects with all their users; only those `members_of` belong to unless None."""
    p, m = projects, memberships
    join = p.outerjoin(m, sa.and_(m.c.cluster_id == p.c.cluster_id, m.c.project == p.c.name))
    stmt = sa.select(p, m.c.username).select_from(join)
    if members_of is not None:
        mine = memberships.alias("mine")
        stmt = stmt.where(
            sa.exists().where(
                mine.c.cluster_id == p.c.cluster_id,
                mine.c.project == p.c.name,
                mine.c.username.in_(members_of),
            )
        )
    if names:
        stmt = stmt.where(p.c.name.in_(names))
    if cluster_ids:
        stmt = stmt.where(p.c.cluster_id.in_(cluster_ids))
    stmt = stmt.order_by(p.c.cluster_id, p.c.name, m.c.username)
    return [
        Project(**first, users=others)
        for first, others in _with_members(conn.execute(stmt).mappings(), "username")
    ]


def _with_members(
    rows: Iterable[sa.RowMapping], member: str
) -> Iterator[tuple[dict[str, Any], tuple[str, ...]]]:
    """Group (account, member) join rows by account: its fields and its members' names."""
    for _, group in itertools.groupby(rows, key=lambda r: (r["cluster_id"], r["name"])):
        members = list(group)
        first = members[0]
        fields = {
            "cluster_id": first["cluster_id"],
            "resource_manager": first["resource_manager"],
            "name": first["name"],
            "uid": first["uid"],
            "tags": first["tags"] or {},
        }
        yield fields, tuple(r[member] for r in members if r[member] is not None)


def is_admin(conn: sa.Connection, name: str) -> bool:
    """Whether `name` is an admin from any source (config file, Grafana teams)."""
    stmt = sa.select(admin_users.c.name).where(admin_users.c.name == name).limit(1)
    return conn.execute(stmt).first() is not None


def fetch_admin_users(conn: sa.Connection) -> dict[str, tuple[str, ...]]:
    """Every admin and the sources that make them one, by name."""
    a = admin_users
    rows = conn.execute(sa.select(a.c.name, a.c.source).order_by(a.c.name, a.c.source))
    return {
        name: tuple(source for _, source in group)
        for name, group in itertools.groupby(rows, key=lambda r: r[0])
    }


def _usage_columns(table: sa.Table) -> list[sa.ColumnClause[Any] | sa.Column[Any]]:
    names = ("cluster_id", "resource_manager", "project", "username", "groupname")
    return [table.c[n] for n in (*names, "total_time_seconds", *METRIC_FIELDS)]


def _filter_usage(
    conn: sa.Connection, stmt: sa.Select[Any], table: sa.Table, flt: UsageFilter
) -> sa.Select[Any]:
    if flt.members_of is not None:
        params: dict[str, Any] = {}
        counts = _member_projects(conn, flt.members_of, params)
        stmt = stmt.where(_in_projects(table, counts)).params(params)
    if flt.projects:
        stmt = stmt.where(table.c.project.in_(flt.projects))
    if flt.cluster_ids:
        stmt = stmt.where(table.c.cluster_id.in_(flt.cluster_ids))
    return stmt


def fetch_current_usage(conn: sa.Connection, flt: UsageFilter) -> list[UsageRow]:
    """Usage of the units last updated in the window, per cluster, user and project.

    CEEMS filters on `last_updated_at`: a unit counts in the window of its last update, so
    windows side by side never count a finished unit twice. Rows are streamed and folded.
    """
    stmt = _filter_usage(conn, sa.select(*_usage_columns(units)), units, flt)
    if flt.window is not None:
        w = flt.window
        stmt = stmt.where(units.c.last_updated_at_ts.between(w.from_ms, w.to_ms))
    rows = conn.execution_options(yield_per=_STREAM).execute(stmt).mappings()
    return aggregate_usage(rows)


def fetch_daily_usage(conn: sa.Connection, flt: UsageFilter) -> list[UsageRow]:
    """Usage summed over the UTC days that overlap the window (CEEMS' `experimental`)."""
    t = daily_usage
    stmt = _filter_usage(conn, sa.select(*_usage_columns(t), t.c.num_units), t, flt)
    if flt.window is not None:
        first_day = flt.window.from_ms - flt.window.from_ms % DAY_MS
        stmt = stmt.where(t.c.day_ts.between(first_day, flt.window.to_ms))
    rows = conn.execution_options(yield_per=_STREAM).execute(stmt).mappings()
    return aggregate_usage(rows)


def fetch_global_usage(conn: sa.Connection, flt: UsageFilter) -> list[UsageRow]:
    """Cumulative usage since the first unit, per cluster, user and project."""
    t = usage_table
    stmt = _filter_usage(conn, sa.select(*_usage_columns(t), t.c.num_units), t, flt)
    stmt = stmt.order_by(t.c.cluster_id, t.c.username, t.c.project)
    return [usage_row(row) for row in conn.execute(stmt).mappings()]


def fetch_stats(
    conn: sa.Connection, cluster_ids: Sequence[str] = (), window: TimeWindow | None = None
) -> list[Stat]:
    """Counts per cluster; with a window, the units that ended in it or still run."""
    t = units
    stmt = sa.select(
        t.c.cluster_id,
        sa.func.max(t.c.resource_manager),
        sa.func.count(),
        sa.func.count(sa.case((t.c.ended_at_ts > 0, 1))),
        sa.func.count(sa.case((t.c.ended_at_ts == 0, 1))),
        sa.func.count(sa.distinct(t.c.project)),
        sa.func.count(sa.distinct(t.c.username)),
    )
    if window is not None:
        stmt = stmt.where(_ended_in(window.from_ms, window.to_ms, running=True))
    if cluster_ids:
        stmt = stmt.where(t.c.cluster_id.in_(cluster_ids))
    stmt = stmt.group_by(t.c.cluster_id).order_by(t.c.cluster_id)
    return [Stat(*row) for row in conn.execute(stmt)]


def fetch_clusters(conn: sa.Connection) -> list[tuple[str, str]]:
    """(cluster_id, resource_manager) of every cluster with users, projects or updates.

    The writer's `updates` row stands for the units (scanning `units` for its distinct
    clusters, as CEEMS does, reads the whole table); its manager is "" when no user or
    project says it.
    """
    parts = [
        sa.select(t.c.cluster_id, t.c.resource_manager).distinct() for t in (users_table, projects)
    ]
    parts.append(sa.select(updates.c.cluster_id, sa.literal("").label("resource_manager")))
    union = sa.union(*parts).subquery()
    stmt = sa.select(union.c.cluster_id, sa.func.max(union.c.resource_manager))
    stmt = stmt.group_by(union.c.cluster_id).order_by(union.c.cluster_id)
    return [(str(c), str(m)) for c, m in conn.execute(stmt)]
