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
from collections.abc import Collection
from dataclasses import dataclass

import promql_parser

from ceems.tsdb.promql_ast import PromqlError, parse, vector_selectors

UUID_LABEL = "uuid"
# One alternative of a uuid regex: characters that are literal in RE2, or an escaped dot.
_LITERAL = re.compile(r"(?:[A-Za-z0-9_@:-]|\\\.)+")
MAX_QUERY_BYTES = 256 * 1024


class QueryRefusedError(Exception):
    """A query a non-admin may not run; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The units a query reads (empty when it reads only allow-listed node series)."""

    uuids: frozenset[str]


def _literal_values(matcher: promql_parser.Matcher) -> set[str]:
    """The uuids a positive uuid matcher selects; refused unless they are plain literals."""
    if matcher.op == promql_parser.MatchOp.Equal:
        if not matcher.value:
            raise QueryRefusedError('uuid="" selects every series without a uuid')
        return {matcher.value}
    if matcher.op == promql_parser.MatchOp.Re:
        values = set()
        for part in matcher.value.split("|"):
            if not _LITERAL.fullmatch(part):
                raise QueryRefusedError(
                    f"uuid=~{matcher.value!r}: only an alternation of literal uuids is allowed"
                )
            values.add(part.replace("\\.", "."))
        return values
    raise QueryRefusedError(f"negative uuid matcher {matcher}: it selects other users' units")


def _group_uuids(matchers: list[promql_parser.Matcher]) -> set[str] | None:
    """uuids one matcher group pins (the intersection of its uuid matchers), None if unpinned."""
    pinned: set[str] | None = None
    for matcher in matchers:
        if matcher.name != UUID_LABEL:
            continue
        values = _literal_values(matcher)
        pinned = values if pinned is None else pinned & values
    return pinned


def _exact_name(selector: promql_parser.VectorSelector) -> str | None:
    names = {selector.name} if selector.name else set()
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__":
            if matcher.op != promql_parser.MatchOp.Equal:
                return None
            names.add(matcher.value)
    return names.pop() if len(names) == 1 else None


def authorise(query: str, allowed_unpinned: Collection[str] = ()) -> Decision:
    """The uuids `query` reads; refused when a selector is neither pinned nor allow-listed."""
    if len(query.encode()) > MAX_QUERY_BYTES:
        raise QueryRefusedError(f"query longer than {MAX_QUERY_BYTES} bytes")
    try:
        expr = parse(query)
    except PromqlError as err:
        raise QueryRefusedError(str(err)) from err
    uuids: set[str] = set()
    for selector in vector_selectors(expr):
        groups = selector.matchers.or_matchers or [selector.matchers.matchers]
        pins = [_group_uuids(list(group)) for group in groups]
        if all(p is not None for p in pins):
            for pin in pins:
                assert pin is not None
                uuids |= pin
            continue
        name = _exact_name(selector)
        if any(p is not None for p in pins) or name is None or name not in allowed_unpinned:
            raise QueryRefusedError(
                f"selector {selector} is not pinned to units with a uuid matcher"
                + ("" if name is None else f" and {name} is not an allowed node metric")
            )
    return Decision(frozenset(uuids))
