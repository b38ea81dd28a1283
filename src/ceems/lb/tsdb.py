"""What a non-admin may ask a TSDB: the read endpoints, with every selector authorised."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime

from ceems.lb.authz import CLUSTER_LABEL, DECISIONS, Decision, QueryRefusedError, query_clusters
from ceems.lb.params import Params

QUERY_PATHS = frozenset({"/api/v1/query", "/api/v1/query_range"})
SELECTOR_PATHS = frozenset({"/api/v1/series", "/api/v1/labels"})
_LABEL_VALUES = re.compile(r"/api/v1/label/[^/]+/values")


def is_read_path(path: str) -> bool:
    """The endpoints non-admins may use: queries, series, label names and values."""
    return path in QUERY_PATHS or path in SELECTOR_PATHS or bool(_LABEL_VALUES.fullmatch(path))


def _expressions(path: str, params: Params) -> list[str]:
    if path in QUERY_PATHS:
        return params.values("query")
    return params.values("match[]")


def inspect(path: str, params: Params, allowed_unpinned: Collection[str]) -> Decision:
    """The units a read request touches; QueryRefusedError when it may touch others'."""
    expressions = _expressions(path, params)
    if path in QUERY_PATHS:
        if len(expressions) != 1:
            raise QueryRefusedError(f"one query parameter is needed, not {len(expressions)}")
    elif not expressions:
        # Without match[] these endpoints read the labels of every unit of every user.
        raise QueryRefusedError("at least one match[] selector pinned to your units is needed")
    allowed = frozenset(allowed_unpinned)  # no copy when it is one already
    if len(expressions) == 1:
        # The cached decision itself: its uuid set keeps its hash for the ownership cache.
        return DECISIONS.authorise(expressions[0], allowed)
    uuids: set[str] = set()
    clusters: set[str] = set()
    for expression in expressions:
        decision = DECISIONS.authorise(expression, allowed)
        uuids |= decision.uuids
        clusters |= decision.clusters
    return Decision(frozenset(uuids), frozenset(clusters))


def named_clusters(path: str, params: Params) -> frozenset[str]:
    """Clusters named by `ceems_id` matchers of the request's expressions (admins too)."""
    found: set[str] = set()
    for expression in _expressions(path, params):
        # A label is spelt with its name, or quoted with an escape (`"ceems\x5fid"`).
        if CLUSTER_LABEL in expression or "\\" in expression:
            found |= query_clusters(expression)
    return frozenset(found)


def oldest_time(path: str, params: Params, now: float) -> float:
    """Unix time of the oldest sample asked for: `start`, else `time`, else now."""
    found = requested_time(params)
    return now if found is None else found


def requested_time(params: Params) -> float | None:
    """`start`, else `time`, as Unix time; None without either, or when unreadable (the
    backend will refuse it): a function of the parameters alone, unlike `oldest_time`."""
    for name in ("start", "time"):
        values = params.values(name)
        if values:
            try:
                return float(values[0])
            except ValueError:
                try:
                    return datetime.fromisoformat(values[0].replace("Z", "+00:00")).timestamp()
                except ValueError:
                    return None
    return None
