"""PromQL literals: durations with millisecond precision and regex-escaped label values."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

# RE2 metacharacters; a backslash before ASCII punctuation is always a literal in RE2.
_REGEX_META = frozenset("\\.+*?()|[]{}^$")
# Quotes become \x escapes so an escaped value is safe inside any PromQL string literal.
_REGEX_HEX = {'"': r"\x22", "'": r"\x27", "`": r"\x60"}
_UNITS_MS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def format_duration(delta: timedelta) -> str:
    """`1h2m3s450ms`-style PromQL duration (whole milliseconds); zero is `0s`."""
    total_ms = round(delta.total_seconds() * 1000)
    if total_ms < 0:
        raise ValueError(f"PromQL durations cannot be negative: {delta}")
    if total_ms == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS_MS:
        if total_ms >= size:
            parts.append(f"{total_ms // size}{unit}")
            total_ms %= size
    return "".join(parts)


def escape_regex(value: str) -> str:
    """The RE2 pattern matching exactly `value` (LSF array ids like `300[1]` need it)."""
    out = []
    for char in value:
        if char in _REGEX_META:
            out.append("\\" + char)
        else:
            out.append(_REGEX_HEX.get(char, char))
    return "".join(out)


def alternation(values: Iterable[str]) -> str:
    """One RE2 pattern matching any of `values` exactly: escaped and joined by `|`."""
    return "|".join(escape_regex(v) for v in values)


def quote_string(value: str) -> str:
    """A double-quoted PromQL string literal holding `value`."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def regex_selector(label: str, values: Iterable[str]) -> str:
    """A series selector `{label=~"v1|v2"}` matching exactly the given label values."""
    return f"{{{label}=~{quote_string(alternation(values))}}}"
