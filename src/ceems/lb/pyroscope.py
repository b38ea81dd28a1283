"""What a non-admin may ask Pyroscope: three querier calls, each selector pinned to units.

Grafana's Pyroscope data source speaks the Connect protocol: unary calls POSTed as
`application/proto` or `application/json`. Profiles carry a unit's uuid as `service_name`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ceems.lb.authz import DECISIONS, SERVICE_LABEL, Decision, QueryInvalidError, QueryRefusedError
from ceems.lb.protowire import WireError, string_fields

PREFIX = "/querier.v1.QuerierService/"


@dataclass(frozen=True, slots=True)
class Call:
    """Where a call's label selectors sit: protobuf field numbers and JSON keys."""

    proto_fields: tuple[int, ...]
    json_keys: tuple[str, ...]
    needs_selector: bool


CALLS = {
    PREFIX + "SelectMergeStacktraces": Call((2,), ("labelSelector", "label_selector"), True),
    # Grafana's "metrics" and "both" panels: the same selector field as the flame graph.
    PREFIX + "SelectSeries": Call((2,), ("labelSelector", "label_selector"), True),
    PREFIX + "SelectMergeProfile": Call((2,), ("labelSelector", "label_selector"), True),
    PREFIX + "LabelNames": Call((1,), ("matchers",), True),
    PREFIX + "LabelValues": Call((2,), ("matchers",), True),
}


def is_read_path(path: str) -> bool:
    """The calls non-admins may make."""
    return path in CALLS


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise QueryInvalidError("a JSON key appears twice")
    return dict(pairs)


def _json_selectors(body: bytes, call: Call) -> list[str]:
    try:
        message = json.loads(body, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as err:
        raise QueryInvalidError(f"body is not JSON: {err}") from None
    if not isinstance(message, dict):
        raise QueryInvalidError("body is not a JSON object")
    found: list[str] = []
    for key in call.json_keys:
        value = message.get(key)
        values = value if isinstance(value, list) else [] if value is None else [value]
        for item in values:
            if not isinstance(item, str):
                raise QueryInvalidError(f"{key} must hold strings")
            if not item.isascii():
                try:
                    item.encode()  # a lone \ud800 escape decodes to a str UTF-8 cannot hold
                except UnicodeEncodeError:
                    raise QueryInvalidError(f"{key} holds an unpaired surrogate") from None
            found.append(item)
    return found


def selectors(path: str, content_type: str, body: bytes) -> list[str]:
    """The label selectors of one call."""
    call = CALLS[path]
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("application/proto", "application/protobuf", "application/x-protobuf"):
        try:
            fields = string_fields(body, call.proto_fields)
        except WireError as err:
            raise QueryInvalidError(f"body is not a protobuf message: {err}") from None
        return [s for number in call.proto_fields for s in fields.get(number, [])]
    if media == "application/json":
        return _json_selectors(body, call)
    raise QueryInvalidError(
        f"body must be application/proto or application/json, not {media or 'missing'}"
    )


def inspect(path: str, content_type: str, body: bytes) -> Decision:
    """The units a call reads; QueryRefusedError when a selector is not pinned to units."""
    found = [s for s in selectors(path, content_type, body) if s.strip()]
    if not found and CALLS[path].needs_selector:
        raise QueryRefusedError(f"a label selector pinned with {SERVICE_LABEL} is needed")
    uuids: set[str] = set()
    clusters: set[str] = set()
    for selector in found:
        decision = DECISIONS.authorise(selector, frozenset(), label=SERVICE_LABEL)
        uuids |= decision.uuids
        clusters |= decision.clusters
    return Decision(frozenset(uuids), frozenset(clusters))
