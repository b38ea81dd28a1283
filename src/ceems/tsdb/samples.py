"""Query results: instant samples and sample streams parsed from Prometheus JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ceems.tsdb.errors import TsdbError


@dataclass(frozen=True, slots=True)
class Sample:
    """One element of an instant vector (or a scalar, with no labels)."""

    labels: Mapping[str, str]
    value: float
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class SampleStream:
    """One series of a range query: its labels and (epoch ms, value) points."""

    labels: Mapping[str, str]
    points: tuple[tuple[int, float], ...] = field(default_factory=tuple)


def parse_value(text: Any) -> float:
    """A Prometheus sample value: a decimal string, or `NaN`, `+Inf`, `-Inf`."""
    if not isinstance(text, str):
        raise TsdbError(f"sample value {text!r} is not a string")
    try:
        return float(text)  # float() reads NaN, +Inf and -Inf as Prometheus writes them
    except ValueError as err:
        raise TsdbError(f"sample value {text!r} is not a number") from err


def _point(raw: Any) -> tuple[int, float]:
    if not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[0], int | float):
        raise TsdbError(f"sample {raw!r} is not [timestamp, value]")
    return round(raw[0] * 1000), parse_value(raw[1])


def _labels(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise TsdbError(f"metric {raw!r} is not a label map")
    return {str(k): str(v) for k, v in raw.items()}


def parse_instant(data: Any) -> list[Sample]:
    """Samples of an instant query's `data` (vector or scalar result)."""
    if not isinstance(data, dict):
        raise TsdbError(f"query data {data!r} is not an object")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        timestamp_ms, value = _point(result)
        return [Sample({}, value, timestamp_ms)]
    if kind != "vector" or not isinstance(result, list):
        raise TsdbError(f"expected a vector or scalar result, got resultType {kind!r}")
    samples = []
    for item in result:
        timestamp_ms, value = _point(item.get("value") if isinstance(item, dict) else None)
        samples.append(Sample(_labels(item.get("metric", {})), value, timestamp_ms))
    return samples


def parse_matrix(data: Any) -> list[SampleStream]:
    """Sample streams of a range query's `data` (matrix result)."""
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        kind = data.get("resultType") if isinstance(data, dict) else None
        raise TsdbError(f"expected a matrix result, got resultType {kind!r}")
    streams = []
    for item in data.get("result") or []:
        if not isinstance(item, dict):
            raise TsdbError(f"matrix element {item!r} is not an object")
        points = tuple(_point(p) for p in item.get("values") or [])
        streams.append(SampleStream(_labels(item.get("metric", {})), points))
    return streams
