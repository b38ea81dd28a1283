"""What a TSDB is configured with: intervals from its config, limits from its flags."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

import yaml

from ceems.common.durations import parse_duration

log = logging.getLogger(__name__)

# Prometheus' own defaults, used for whatever the TSDB does not tell (VictoriaMetrics has no
# /api/v1/status/config, and its flags are named differently).
DEFAULT_SCRAPE_INTERVAL = timedelta(minutes=1)
DEFAULT_EVALUATION_INTERVAL = timedelta(minutes=1)
DEFAULT_RETENTION = timedelta(days=15)
DEFAULT_QUERY_MAX_SAMPLES = 50_000_000
DEFAULT_LOOKBACK_DELTA = timedelta(minutes=5)
DEFAULT_QUERY_TIMEOUT = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class TsdbSettings:
    """Intervals and limits that shape the updater's queries."""

    scrape_interval: timedelta = DEFAULT_SCRAPE_INTERVAL
    evaluation_interval: timedelta = DEFAULT_EVALUATION_INTERVAL
    retention: timedelta = DEFAULT_RETENTION  # zero: only a size limit applies
    query_max_samples: int = DEFAULT_QUERY_MAX_SAMPLES
    lookback_delta: timedelta = DEFAULT_LOOKBACK_DELTA
    query_timeout: timedelta = DEFAULT_QUERY_TIMEOUT

    @property
    def rate_interval(self) -> timedelta:
        """Four scrape intervals, the `rate()` window Grafana's `$__rate_interval` uses."""
        return 4 * self.scrape_interval


def _duration(text: object, what: str) -> timedelta | None:
    if text is None or text == "":
        return None
    try:
        return parse_duration(str(text))
    except ValueError:
        log.warning("ignoring unparsable TSDB setting", extra={"setting": what, "value": text})
        return None


def apply_config(settings: TsdbSettings, config_yaml: str) -> TsdbSettings:
    """Settings with the `global` scrape and evaluation intervals of a prometheus.yml."""
    try:
        config = yaml.safe_load(config_yaml)
    except yaml.YAMLError as err:
        log.warning("ignoring unparsable TSDB config", extra={"err": str(err)})
        return settings
    section = config.get("global") if isinstance(config, dict) else None
    if not isinstance(section, dict):
        return settings
    scrape = _duration(section.get("scrape_interval"), "scrape_interval")
    evaluation = _duration(section.get("evaluation_interval"), "evaluation_interval")
    return replace(
        settings,
        scrape_interval=scrape or settings.scrape_interval,
        evaluation_interval=evaluation or settings.evaluation_interval,
    )


def apply_flags(settings: TsdbSettings, flags: Mapping[str, str]) -> TsdbSettings:
    """Settings with retention, max samples, lookback and timeout from Prometheus' flags."""
    retention = settings.retention
    # `storage.tsdb.retention` is the deprecated spelling; 0s in both means "the default"
    # unless a size limit is set, when time stops limiting retention at all.
    for flag in ("storage.tsdb.retention.time", "storage.tsdb.retention"):
        value = _duration(flags.get(flag), flag)
        if value:
            retention = value
            break
    else:
        size = flags.get("storage.tsdb.retention.size", "")
        if size not in ("", "0", "0B"):
            retention = timedelta(0)
    max_samples = settings.query_max_samples
    raw_max = flags.get("query.max-samples", "")
    if raw_max.isdigit() and int(raw_max) > 0:
        max_samples = int(raw_max)
    elif raw_max:
        log.warning(
            "ignoring unparsable TSDB setting",
            extra={"setting": "query.max-samples", "value": raw_max},
        )
    lookback = _duration(flags.get("query.lookback-delta"), "query.lookback-delta")
    timeout = _duration(flags.get("query.timeout"), "query.timeout")
    return replace(
        settings,
        retention=retention,
        query_max_samples=max_samples,
        lookback_delta=lookback or settings.lookback_delta,
        query_timeout=timeout or settings.query_timeout,
    )
