"""PromQL read as a tree (promql-parser), never as text: which series a query selects."""

from __future__ import annotations

import promql_parser


class PromqlError(ValueError):
    """A query that does not parse."""


def parse(query: str) -> promql_parser.Expr:
    """The query's AST; PromqlError with the parser's reason when it is not PromQL."""
    try:
        return promql_parser.parse(query)
    except (ValueError, TypeError) as err:
        raise PromqlError(f"invalid PromQL: {err}") from err


def vector_selectors(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    """Every vector selector, including those inside matrix selectors and subqueries."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        # walk() descends into a matrix selector's vector selector itself.
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(expr, pre_visit=visit)
    return found


def metric_names(query: str) -> set[str]:
    """Metric names the query selects by name (`foo{...}`)."""
    return {s.name for s in vector_selectors(parse(query)) if s.name}
