"""Durations as Prometheus and CEEMS configs write them: `90s`, `1h30m`, `30d`, `1y`."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")


def parse_duration(text: str) -> timedelta:
    """Parse `1h30m`-style durations (units ms, s, m, h, d, w, y; y = 365 d); `0` is zero."""
    value = text.strip()
    if value == "0":
        return timedelta(0)
    position = 0
    total_s = 0.0
    for match in _PART.finditer(value):
        if match.start() != position:
            break
        total_s += float(match.group(1)) * _UNITS_S[match.group(2)]
        position = match.end()
    if position != len(value) or not value:
        raise ValueError(
            f"invalid duration {text!r}: expected e.g. 30s, 5m, 1h30m, 7d, 1y "
            "(units ms s m h d w y)"
        )
    return timedelta(seconds=total_s)


def format_duration(delta: timedelta) -> str:
    """Shortest `1h30m` form of a duration (whole seconds), the inverse of parse_duration."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit in ("y", "w", "d", "h", "m", "s"):
        size = int(_UNITS_S[unit])
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts)


def coerce_duration(value: object) -> timedelta:
    """A config value as a duration: a timedelta, seconds as a number, or `1h30m` text."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return parse_duration(str(value))
