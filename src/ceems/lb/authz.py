"""Which compute units a PromQL query reads, or why it may not run for a non-admin.

The query is parsed (promql-parser), never pattern-matched. Every vector selector, wherever it
sits (functions, aggregations, binary operations, subqueries, `@` and `offset`), must either
carry a positive `uuid` matcher naming units exactly (`uuid="a"`, or `uuid=~"a|b"` of plain
literals), or select by exact name a node-level metric on the operator's allow-list. Anything
else is refused: a regex that is not a plain alternation could match other users' units, an
empty uuid selects every series without one, and a negative matcher selects everyone else's.
The caller then checks that the user may see every uuid returned.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass

import promql_parser

from ceems.tsdb.promql_ast import PromqlError, parse, vector_selectors

UUID_LABEL = "uuid"
# Pyroscope profiles carry the unit's uuid as their service name.
SERVICE_LABEL = "service_name"
# An operator-set label naming the cluster; it routes the query when present (CEEMS).
CLUSTER_LABEL = "ceems_id"
# One alternative of a uuid regex: characters that are literal in RE2, or an escaped dot.
_LITERAL = re.compile(r"(?:[A-Za-z0-9_@:-]|\\\.)+")
MAX_QUERY_BYTES = 256 * 1024
# Memory the cache of decisions may hold (query text plus an estimate of the uuid sets).
DECISION_CACHE_BYTES = 32 << 20


class QueryRefusedError(Exception):
    """A query a non-admin may not run; the message says which part and why."""


class QueryInvalidError(QueryRefusedError):
    """A query that is not PromQL at all, or too long to parse: bad input rather than denial."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The units a query reads (empty when it reads only allow-listed node series), and the
    clusters its `ceems_id` matchers name."""

    uuids: frozenset[str]
    clusters: frozenset[str] = frozenset()


def _literal_values(matcher: promql_parser.Matcher) -> set[str]:
    """The values a positive matcher selects; refused unless they are plain literals."""
    if matcher.op == promql_parser.MatchOp.Equal:
        if not matcher.value:
            raise QueryRefusedError(f'{matcher.name}="" selects every series without one')
        return {matcher.value}
    if matcher.op == promql_parser.MatchOp.Re:
        values = set()
        for part in matcher.value.split("|"):
            if not _LITERAL.fullmatch(part):
                raise QueryRefusedError(
                    f"{matcher.name}=~{matcher.value!r}: only an alternation of literal "
                    "values is allowed"
                )
            values.add(part.replace("\\.", "."))
        return values
    raise QueryRefusedError(
        f"negative {matcher.name} matcher {matcher}: it selects other users' units"
    )


def _group_uuids(matchers: list[promql_parser.Matcher], label: str) -> set[str] | None:
    """Values one matcher group pins (the intersection of its `label` matchers), or None."""
    pinned: set[str] | None = None
    for matcher in matchers:
        if matcher.name != label:
            continue
        values = _literal_values(matcher)
        pinned = values if pinned is None else pinned & values
    return pinned


def _clusters(selectors: list[promql_parser.VectorSelector]) -> frozenset[str]:
    named: set[str] = set()
    for selector in selectors:
        for group in selector.matchers.or_matchers or [selector.matchers.matchers]:
            for matcher in group:
                if matcher.name == CLUSTER_LABEL and matcher.op in (
                    promql_parser.MatchOp.Equal,
                    promql_parser.MatchOp.Re,
                ):
                    named |= {v.replace("\\.", ".") for v in matcher.value.split("|") if v}
    return frozenset(named)


def query_clusters(query: str) -> frozenset[str]:
    """Clusters named by `ceems_id` matchers; none for a query that does not parse."""
    try:
        return _clusters(vector_selectors(parse(query)))
    except PromqlError:
        return frozenset()


def _exact_name(selector: promql_parser.VectorSelector) -> str | None:
    names = {selector.name} if selector.name else set()
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__":
            if matcher.op != promql_parser.MatchOp.Equal:
                return None
            names.add(matcher.value)
    return names.pop() if len(names) == 1 else None


def authorise(
    query: str, allowed_unpinned: Collection[str] = (), label: str = UUID_LABEL
) -> Decision:
    """The uuids `query` reads; refused when a selector is neither pinned nor allow-listed.

    `label` is the label carrying the unit's uuid (`service_name` in Pyroscope selectors).
    """
    if len(query.encode()) > MAX_QUERY_BYTES:
        raise QueryInvalidError(f"query longer than {MAX_QUERY_BYTES} bytes")
    try:
        expr = parse(query)
    except PromqlError as err:
        raise QueryInvalidError(str(err)) from err
    uuids: set[str] = set()
    selectors = vector_selectors(expr)
    for selector in selectors:
        groups = selector.matchers.or_matchers or [selector.matchers.matchers]
        pins = [_group_uuids(list(group), label) for group in groups]
        if all(p is not None for p in pins):
            for pin in pins:
                assert pin is not None
                uuids |= pin
            continue
        name = _exact_name(selector)
        if any(p is not None for p in pins) or name is None or name not in allowed_unpinned:
            raise QueryRefusedError(
                f"selector {selector} is not pinned to units with a {label} matcher"
                + ("" if name is None else f" and {name} is not an allowed node metric")
            )
    return Decision(frozenset(uuids), _clusters(selectors))


_Key = tuple[str, str, frozenset[str]]


class DecisionCache:
    """Least recently used decisions of `authorise`, within a byte budget.

    A decision is a function of the query text, the allow-list and the label alone (who
    asks and what they own are checked afterwards, every time), so it is reused for any
    user: dashboards send the same queries with every panel refresh. Refusals are not
    kept: they are rare and cheap to repeat.
    """

    def __init__(self, budget_bytes: int = DECISION_CACHE_BYTES) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._entries: OrderedDict[_Key, tuple[Decision, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def authorise(
        self, query: str, allowed_unpinned: frozenset[str], label: str = UUID_LABEL
    ) -> Decision:
        """`authorise(query, allowed_unpinned, label)`, parsed once per distinct query."""
        key = (query, label, allowed_unpinned)
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry[0]
        decision = authorise(query, allowed_unpinned, label)
        cost = len(query) + 64 * (len(decision.uuids) + len(decision.clusters)) + 256
        if cost <= self.budget:
            self._entries[key] = (decision, cost)
            self.used += cost
            while self.used > self.budget:
                _, (_, freed) = self._entries.popitem(last=False)
                self.used -= freed
        return decision


DECISIONS = DecisionCache()
