"""JSON of units, users, projects, usage and stats, byte-for-byte in CEEMS' formats.

Go's `encoding/json` decides the shapes: struct fields in declaration order, `omitempty`
fields left out when empty, map keys sorted, `<>&` escaped, and CEEMS' `JSONFloat`
writing a metric as an integer when it is one and with 8 decimals otherwise.
"""

from __future__ import annotations

import json
import math
import re
from _json import make_encoder
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, tzinfo
from json.encoder import encode_basestring
from typing import Any, TypeVar

from ceems.api.aggregate import UsageRow
from ceems.api.models import METRIC_FIELDS, Project, User
from ceems.api.store.queries import Stat

# Metric maps in CEEMS' struct order (not METRIC_FIELDS' order: Go writes fields in order).
METRIC_ORDER = (
    "avg_cpu_usage",
    "avg_cpu_mem_usage",
    "total_cpu_energy_usage_kwh",
    "total_cpu_emissions_gms",
    "avg_gpu_usage",
    "avg_gpu_mem_usage",
    "total_gpu_energy_usage_kwh",
    "total_gpu_emissions_gms",
    "total_io_write_stats",
    "total_io_read_stats",
    "total_ingress_stats",
    "total_egress_stats",
)

# Unit fields in CEEMS' `models.Unit` order, then ours (`provenance`).
UNIT_FIELDS = (
    "cluster_id",
    "resource_manager",
    "uuid",
    "name",
    "project",
    "groupname",
    "username",
    "created_at",
    "started_at",
    "ended_at",
    "created_at_ts",
    "started_at_ts",
    "ended_at_ts",
    "elapsed",
    "state",
    "allocation",
    "total_time_seconds",
    *METRIC_ORDER,
    "tags",
    "provenance",
)
# Usage fields in CEEMS' `models.Usage` order; the first six are always written.
USAGE_BASE_FIELDS = (
    "cluster_id",
    "resource_manager",
    "num_units",
    "project",
    "groupname",
    "username",
)
USAGE_FIELDS = (*USAGE_BASE_FIELDS, "total_time_seconds", *METRIC_ORDER)

_TIME_STRINGS = {
    "created_at": "created_at_ts",
    "started_at": "started_at_ts",
    "ended_at": "ended_at_ts",
}
_METRIC_MAPS = frozenset(("total_time_seconds", *METRIC_FIELDS))
NOT_AVAILABLE = "N/A"  # CEEMS' time string of a unit that has not started or ended yet


def unit_columns(fields: Sequence[str]) -> set[str]:
    """The `units` columns needed to render `fields`."""
    columns: set[str] = set()
    for field in fields:
        if field in _TIME_STRINGS:
            columns.add(_TIME_STRINGS[field])
        elif field == "elapsed":
            columns.update(("started_at_ts", "ended_at_ts"))
        else:
            columns.add(field)
    return columns


_GO_ESCAPES = re.compile("[<>&\u2028\u2029]")
# json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) builds a
# JSONEncoder and a C encoder per call, most of the cost of encoding a small map: build the
# same C encoder once (without the circular check: values come from JSON, so hold no cycle).
_ENCODE_SORTED = make_encoder(
    None, json.JSONEncoder().default, encode_basestring, None, ":", ",", True, False, True
)

# Memo tables of texts a response repeats many times (read with `.get(key) or
# _remember(...)`); cleared when full, so that no client grows them without bound.
_MEMO_LIMIT = 4096
_Key = TypeVar("_Key")


def _remember(table: dict[_Key, str], key: _Key, text: str) -> str:
    if len(table) >= _MEMO_LIMIT:
        table.clear()
    table[key] = text
    return text


def encode(value: Any) -> str:
    """Compact JSON with sorted keys and Go's HTML escaping of `<`, `>`, `&`."""
    # Strings and integers, most of a response, need neither the encoder nor the join.
    kind = type(value)
    if kind is str:
        text = encode_basestring(value)
    elif kind is int:
        return str(value)
    else:
        text = "".join(_ENCODE_SORTED(value, 0))
    return text if _GO_ESCAPES.search(text) is None else _go_escape(text)


def _go_escape(text: str) -> str:
    # Outside strings JSON never holds these characters, so replacing everywhere is safe.
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def encode_float(value: float) -> str:
    """CEEMS' JSONFloat: Inf/NaN as 0, integers without decimals, others with 8."""
    if value.is_integer():  # False for Inf and NaN
        return str(int(value)) if -1e21 < value < 1e21 else repr(value)
    return f"{value:.8f}" if math.isfinite(value) else "0"


_MAP_KEYS: dict[str, str] = {}  # metric map key -> its JSON and the colon


def _map_key(key: Any) -> str:
    if type(key) is not str:
        return encode(str(key)) + ":"
    return _MAP_KEYS.get(key) or _remember(_MAP_KEYS, key, encode(key) + ":")


def encode_metric_map(values: Mapping[str, Any]) -> str:
    """A metric map, keys sorted, numbers as JSONFloat (non-numbers dropped)."""
    parts = []
    for key in sorted(values):
        value = values[key]
        if type(value) is not float:  # floats are the common case: skip the checks
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            value = float(value)
        parts.append(_map_key(key) + encode_float(value))
    return "{" + ",".join(parts) + "}"


_TWO_DIGITS = tuple(f"{n:02d}" for n in range(60))
_DATES: dict[int, str] = {}  # proleptic ordinal -> "2023-02-21T"
_OFFSETS: dict[timedelta | None, str] = {}  # UTC offset -> "+0100"


def format_time(ts_ms: int, zone: tzinfo | None) -> str:
    """`2023-02-21T15:48:20+0100` in `zone` (None: the host's local zone); 0 is N/A."""
    if ts_ms <= 0:
        return NOT_AVAILABLE
    moment = datetime.fromtimestamp(ts_ms / 1000, zone)
    if zone is None:
        moment = moment.astimezone()
    # strftime was two thirds of the cost of a time string: the date and the offset come
    # from it once each and are reused; the clock is read from the same datetime, so DST
    # folds and gaps are whatever datetime says they are.
    day, offset = moment.toordinal(), moment.utcoffset()
    date = _DATES.get(day) or _remember(_DATES, day, moment.strftime("%Y-%m-%dT"))
    zone_text = _OFFSETS.get(offset) or _remember(_OFFSETS, offset, moment.strftime("%z"))
    two = _TWO_DIGITS
    return f"{date}{two[moment.hour]}:{two[moment.minute]}:{two[moment.second]}{zone_text}"


def format_elapsed(seconds: int) -> str:
    """SLURM's elapsed format: `HH:MM:SS`, or `D-HH:MM:SS` past a day."""
    days, rest = divmod(max(seconds, 0), 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    two = _TWO_DIGITS
    clock = f"{two[hours]}:{two[minutes]}:{two[secs]}"
    return f"{days}-{clock}" if days else clock


# One field of a unit: its JSON, or None when the field is left out of this row.
_FieldValue = Callable[[Mapping[str, Any]], str | None]
UnitRenderer = Callable[[Mapping[str, Any]], str]


def _empty(value: Any) -> bool:
    """Go's `omitempty` test; callers skip it for truthy values, which are never empty."""
    return value is None or value == "" or value == 0 or value == {}


def _time_value(column: str, zone: tzinfo | None) -> _FieldValue:
    # Time strings are digits, `-T:+` or N/A: nothing to escape, never empty.
    return lambda row: '"' + format_time(int(row[column]), zone) + '"'


def _elapsed_value(now_ms: int) -> _FieldValue:
    def text(row: Mapping[str, Any]) -> str:
        started, ended = int(row["started_at_ts"]), int(row["ended_at_ts"])
        seconds = ((ended or now_ms) - started) // 1000 if started > 0 else 0
        return '"' + format_elapsed(seconds) + '"'

    return text


def _plain_value(field: str, encoder: Callable[[Any], str]) -> _FieldValue:
    def text(row: Mapping[str, Any]) -> str | None:
        value = row[field]
        return None if not value and _empty(value) else encoder(value)

    return text


def _field_value(
    field: str, wanted: set[str], zone: tzinfo | None, now_ms: int
) -> _FieldValue | None:
    """How `field` is rendered; None when it is never written."""
    if field == "uuid":
        # No `omitempty` on uuid in CEEMS: always there, empty when not selected.
        return (lambda row: encode(row["uuid"])) if field in wanted else (lambda _: '""')
    if field not in wanted:
        return None
    if field in _TIME_STRINGS:
        return _time_value(_TIME_STRINGS[field], zone)
    if field == "elapsed":
        return _elapsed_value(now_ms)
    return _plain_value(field, encode_metric_map if field in _METRIC_MAPS else encode)


def unit_renderer(fields: Sequence[str], zone: tzinfo | None, now_ms: int) -> UnitRenderer:
    """`render_unit` for the rows of one request: how to write each field is decided once."""
    wanted = set(fields)
    plan = [
        (f'"{field}":', text_of)
        for field in UNIT_FIELDS
        if (text_of := _field_value(field, wanted, zone, now_ms)) is not None
    ]

    def render(row: Mapping[str, Any]) -> str:
        parts = [key + text for key, text_of in plan if (text := text_of(row)) is not None]
        return "{" + ",".join(parts) + "}"

    return render


def render_unit(
    row: Mapping[str, Any], fields: Sequence[str], zone: tzinfo | None, now_ms: int
) -> str:
    """One unit as CEEMS writes it: `fields` in struct order, empty values left out.

    `uuid` has no `omitempty` in CEEMS, so it is always there (empty when not selected).
    """
    return unit_renderer(fields, zone, now_ms)(row)


def render_usage(row: UsageRow, fields: Sequence[str]) -> str:
    """One usage row: the six base keys always (zero when not selected), maps if not empty."""
    wanted = set(fields)
    base = {
        "cluster_id": row.cluster_id,
        "resource_manager": row.resource_manager,
        "num_units": row.num_units,
        "project": row.project,
        "groupname": row.groupname,
        "username": row.username,
    }
    parts = []
    for field, value in base.items():
        if field not in wanted:
            value = 0 if field == "num_units" else ""
        parts.append(f'"{field}":{encode(value)}')
    maps: dict[str, Mapping[str, float]] = {"total_time_seconds": row.total_time_seconds}
    maps.update(row.metrics)
    for field in USAGE_FIELDS[len(USAGE_BASE_FIELDS) :]:
        if field in wanted and maps.get(field):
            parts.append(f'"{field}":{encode_metric_map(maps[field])}')
    return "{" + ",".join(parts) + "}"


def _object(pairs: Sequence[tuple[str, Any]]) -> str:
    """A JSON object with keys in the given (Go struct) order."""
    return "{" + ",".join(f"{encode(k)}:{encode(v)}" for k, v in pairs) + "}"


def _optional(parts: list[str], field: str, value: Any) -> None:
    if value:
        parts.append(f'"{field}":{encode(value)}')


def render_user(user: User) -> str:
    """CEEMS' `models.User`: uid and tags only when set."""
    parts: list[str] = []
    _optional(parts, "uid", user.uid)
    parts += [
        f'"cluster_id":{encode(user.cluster_id)}',
        f'"resource_manager":{encode(user.resource_manager)}',
        f'"name":{encode(user.name)}',
        f'"projects":{encode(list(user.projects))}',
    ]
    _optional(parts, "tags", dict(user.tags))
    return "{" + ",".join(parts) + "}"


def render_admin_user(name: str, sources: Sequence[str]) -> str:
    """An admin for `/users/admin?role=admin`: CEEMS' admin_users row, sources as tags."""
    pairs = [("cluster_id", "all"), ("resource_manager", ""), ("name", name), ("projects", [])]
    return _object([*pairs, ("tags", list(sources))])


def render_project(project: Project) -> str:
    """CEEMS' `models.Project`: uid and tags only when set."""
    parts: list[str] = []
    _optional(parts, "uid", project.uid)
    parts += [
        f'"cluster_id":{encode(project.cluster_id)}',
        f'"resource_manager":{encode(project.resource_manager)}',
        f'"name":{encode(project.name)}',
        f'"users":{encode(list(project.users))}',
    ]
    _optional(parts, "tags", dict(project.tags))
    return "{" + ",".join(parts) + "}"


def render_stat(stat: Stat) -> str:
    """CEEMS' `models.Stat`."""
    return _object(
        [
            ("cluster_id", stat.cluster_id),
            ("resource_manager", stat.resource_manager),
            ("num_units", stat.num_units),
            ("num_inactive_units", stat.num_inactive_units),
            ("num_active_units", stat.num_active_units),
            ("num_projects", stat.num_projects),
            ("num_users", stat.num_users),
        ]
    )


def render_cluster(cluster_id: str, manager: str) -> str:
    """CEEMS' `models.Cluster` as the API shows it: id and manager."""
    return _object([("id", cluster_id), ("manager", manager)])
