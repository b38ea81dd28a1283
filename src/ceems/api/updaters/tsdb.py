"""The `tsdb` updater: each unit's aggregate metrics for a window, queried from Prometheus.

Behaves as CEEMS' `pkg/api/updater/tsdb`: templated PromQL per metric and sub-key, uuids
batched into `uuid=~"a|b|c"` regexes, every query evaluated at the window's end, units
shorter than `cutoff_duration` marked ignored (and their series deleted if asked). Unlike
CEEMS, which queries every unit over the whole window, a unit is queried over the part of
the window since it started, rounded up to one of a few range buckets so that the number of
queries depends on the metrics and the window, not on the number of units.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field, ValidationError, field_validator

from ceems.api.config import UpdaterConfig
from ceems.api.models import METRIC_FIELDS, MetricMap, Unit, merge_provenance
from ceems.api.updaters.protocol import UpdaterError
from ceems.api.updaters.queries import DEFAULT_QUERIES, PLACEHOLDERS
from ceems.common.config import ConfigError, StrictModel
from ceems.common.durations import parse_duration
from ceems.tsdb.client import TsdbClient
from ceems.tsdb.errors import TsdbError
from ceems.tsdb.promql import alternation, format_duration, regex_selector
from ceems.tsdb.samples import Sample
from ceems.tsdb.settings import TsdbSettings
from ceems.tsdb.templates import QueryTemplate, TemplateError, compile_template

log = logging.getLogger(__name__)

# Batch sizing as CEEMS: assume a unit may have up to 50 series in one query (one per node
# or GPU before `sum by (uuid)`) and use at most half of the TSDB's query.max-samples.
SERIES_PER_UNIT = 50
SAMPLES_BUDGET = 0.5
# Units are grouped by their range rounded up to window / RANGE_BUCKETS (whole scrape
# intervals): at most this many distinct ranges, so this many query rounds, per update.
RANGE_BUCKETS = 4


# Provenance: the recording rules label each unit's power series with how it was made
# (docs/attribution.md); one query per family reads those labels back.
PROVENANCE_LABELS = ("power_source", "attribution", "pue")
PROVENANCE_FAMILIES = {
    "cpu": ("total_cpu_energy_usage_kwh", "uuid:ceems_host_power_watts:pue"),
    "gpu": ("total_gpu_energy_usage_kwh", "uuid:ceems_gpu_power_watts:pue"),
}
EMISSION_METRICS = {"cpu": "total_cpu_emissions_gms", "gpu": "total_gpu_emissions_gms"}
_PROVENANCE = (
    f"group by (uuid, {', '.join(PROVENANCE_LABELS)}) "
    "(last_over_time(SERIES{uuid=~`{{.UUIDs}}`}[{{.Range}}]))"
)


class TsdbExtraConfig(StrictModel):
    """`extra_config` of a `tsdb` updater."""

    cutoff_duration: timedelta = timedelta(0)
    delete_ignored: bool = False
    query_batch_size: int | None = Field(default=None, gt=0)
    queries: dict[str, dict[str, str]] = Field(default_factory=dict)
    # Read where each unit's energy figures come from (labels of the rule series).
    provenance: bool = True

    @field_validator("cutoff_duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        if isinstance(value, timedelta):
            delta = value
        elif isinstance(value, int | float):
            delta = timedelta(seconds=value)
        else:
            delta = parse_duration(str(value))
        if delta < timedelta(0):
            raise ValueError("must not be negative")
        return delta


@dataclass(frozen=True, slots=True)
class MetricQuery:
    """One sub-key of one metric: the sub-key (may use `{{.Labels.x}}`) and its PromQL."""

    metric: str
    key: QueryTemplate
    promql: QueryTemplate


@dataclass(frozen=True, slots=True)
class Batch:
    """Units queried together: same range, at most the batch size of them."""

    range_ms: int
    uuids: tuple[str, ...]


def _ms(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at.isoformat()}: update windows must be aware")
    return round(at.timestamp() * 1000)


def _delta_ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)


def parse_extra_config(config: UpdaterConfig) -> TsdbExtraConfig:
    """The validated `extra_config`; errors name the updater and the key."""
    try:
        return TsdbExtraConfig.model_validate(config.extra_config)
    except ValidationError as err:
        problems = "; ".join(
            f"extra_config.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"updater {config.id!r}: {problems}") from err


def compile_queries(
    updater_id: str, queries: Mapping[str, Mapping[str, str]]
) -> tuple[MetricQuery, ...]:
    """Check and compile every query template; errors name the metric and sub-key."""
    compiled = []
    for metric, subs in queries.items():
        where = f"updater {updater_id!r}: extra_config.queries.{metric}"
        if metric not in METRIC_FIELDS:
            raise ConfigError(f"{where}: unknown metric (known: {', '.join(METRIC_FIELDS)})")
        if not subs:
            raise ConfigError(f"{where}: no queries")
        for key, promql in subs.items():
            if not key.strip() or not promql.strip():
                raise ConfigError(f"{where}.{key}: empty sub-key or query")
            try:
                compiled.append(
                    MetricQuery(
                        metric,
                        compile_template(key, (), labels=True),
                        compile_template(promql, PLACEHOLDERS),
                    )
                )
            except TemplateError as err:
                raise ConfigError(f"{where}.{key}: {err}") from err
    return tuple(compiled)


def batch_size_for(range_ms: int, settings: TsdbSettings) -> int:
    """Units per query so that units x series x samples stays within the sample budget."""
    step_ms = max(1, _delta_ms(min(settings.scrape_interval, settings.evaluation_interval)))
    samples_per_series = range_ms // step_ms + 1
    budget = int(settings.query_max_samples * SAMPLES_BUDGET)
    return max(1, budget // (SERIES_PER_UNIT * samples_per_series))


def plan_batches(
    units: Sequence[Unit],
    start: datetime,
    end: datetime,
    settings: TsdbSettings,
    batch_size: int | None = None,
) -> list[Batch]:
    """Group the units that ran in [start, end) by range, then split groups into batches.

    A unit's range is the stretch from its start (or the window's) to `end`, rounded up to a
    bucket of window / RANGE_BUCKETS (whole scrape intervals), capped at the window: extra
    time before a unit started holds none of its samples, so rounding up loses nothing.
    Units not started, started after `end` or ended before `start` are not queried.
    """
    start_ms, end_ms = _ms(start), _ms(end)
    # The whole window, to the millisecond: CEEMS truncates it to whole seconds, which drops
    # every unit's samples in the cut-off fraction of a window not a whole number of seconds
    # long (Prometheus ranges take milliseconds).
    window_ms = end_ms - start_ms
    if window_ms <= 0:
        return []
    scrape_ms = max(1, _delta_ms(settings.scrape_interval))
    bucket_ms = max(scrape_ms, math.ceil(window_ms / RANGE_BUCKETS / scrape_ms) * scrape_ms)
    groups: dict[int, list[str]] = {}
    seen: set[str] = set()
    for unit in units:
        if not unit.uuid or unit.uuid in seen or unit.started_at_ts <= 0:
            continue
        if unit.started_at_ts >= end_ms or 0 < unit.ended_at_ts < start_ms:
            continue
        seen.add(unit.uuid)
        span_ms = end_ms - max(start_ms, unit.started_at_ts)
        range_ms = min(window_ms, math.ceil(span_ms / bucket_ms) * bucket_ms)
        groups.setdefault(range_ms, []).append(unit.uuid)
    batches = []
    for range_ms in sorted(groups):
        uuids = groups[range_ms]
        size = batch_size or batch_size_for(range_ms, settings)
        for first in range(0, len(uuids), size):
            batches.append(Batch(range_ms, tuple(uuids[first : first + size])))
    return batches


def placeholder_values(batch: Batch, settings: TsdbSettings) -> dict[str, str]:
    """Values of the template placeholders for one batch."""
    scrape, evaluation = settings.scrape_interval, settings.evaluation_interval
    return {
        "UUIDs": alternation(batch.uuids),
        # 1 ms short: Prometheus 2 ranges include both ends, so a full-window range would
        # count the sample at the window's start in this update and in the previous one.
        "Range": format_duration(timedelta(milliseconds=batch.range_ms - 1)),
        "ScrapeInterval": format_duration(scrape),
        "ScrapeIntervalMilli": str(_delta_ms(scrape)),
        "EvaluationInterval": format_duration(evaluation),
        "EvaluationIntervalMilli": str(_delta_ms(evaluation)),
        "RateInterval": format_duration(settings.rate_interval),
    }


def _sanitize(value: float) -> float:
    # as CEEMS' sanitizeValue: NaN, infinities and negatives are stored as 0
    return 0.0 if math.isnan(value) or math.isinf(value) or value < 0 else value


class TsdbUpdater:
    """Fills units' aggregate metric maps from a Prometheus-compatible TSDB."""

    def __init__(self, config: UpdaterConfig, *, client: TsdbClient | None = None) -> None:
        self.id = config.id
        self.config = parse_extra_config(config)
        self.queries = compile_queries(config.id, self.config.queries or DEFAULT_QUERIES)
        self.metrics = tuple(dict.fromkeys(q.metric for q in self.queries))
        self.provenance_queries = {
            family: compile_template(_PROVENANCE.replace("SERIES", series), PLACEHOLDERS)
            for family, (metric, series) in PROVENANCE_FAMILIES.items()
            if self.config.provenance and metric in self.metrics
        }
        if client is None:
            if not config.web.url:
                raise ConfigError(f"updater {config.id!r}: web.url is empty")
            client = TsdbClient(config.web)
        self.client = client

    def close(self) -> None:
        """Close the TSDB client."""
        self.client.close()

    def update(self, start: datetime, end: datetime, units: Sequence[Unit]) -> list[Unit]:
        """The units with this updater's metric maps for [start, end) filled in."""
        # As CEEMS: only ended units can be too short; their metrics are still fetched.
        cutoff_ms = _delta_ms(self.config.cutoff_duration)
        short = {
            unit.uuid
            for unit in units
            if unit.ended_at_ts > 0 and unit.ended_at_ts - unit.started_at_ts < cutoff_ms
        }
        flagged = [replace(unit, ignore=True) if unit.uuid in short else unit for unit in units]
        if not flagged:
            return []
        try:
            settings = self.client.settings()
        except TsdbError as err:
            raise UpdaterError(f"updater {self.id!r}: cannot read TSDB settings: {err}") from err
        batches = plan_batches(flagged, start, end, settings, self.config.query_batch_size)
        results: dict[str, dict[str, MetricMap]] = {}
        origins: dict[str, dict[str, str]] = {}
        for batch in batches:
            self._query_batch(batch, end, settings, results)
            self._query_provenance(batch, end, settings, origins)
        log.info(
            "units updated from TSDB",
            extra={
                "updater": self.id,
                "units": len(flagged),
                "batches": len(batches),
                "queries": len(batches) * len(self.queries),
            },
        )
        updated = []
        for unit in flagged:
            found = results.get(unit.uuid, {})
            filled = {metric: found.get(metric, {}) for metric in self.metrics}
            origin = merge_provenance(unit.provenance, origins.get(unit.uuid, {}))
            for family, metric in EMISSION_METRICS.items():
                providers = [k.removesuffix("_total") for k in filled.get(metric, {})]
                if providers:
                    origin = merge_provenance(
                        origin, {f"{family}_emission_providers": ",".join(providers)}
                    )
            updated.append(replace(unit, metrics={**unit.metrics, **filled}, provenance=origin))
        if self.config.delete_ignored and short - {""}:
            self._delete_ignored(sorted(short - {""}), start, end)
        return updated

    def _query(
        self, promql: str, at: datetime, what: str, lookback_delta: timedelta | None = None
    ) -> list[Sample]:
        """One instant query; a TSDB failure becomes an UpdaterError naming `what`."""
        try:
            return self.client.query(promql, at, lookback_delta=lookback_delta)
        except TsdbError as err:
            raise UpdaterError(f"updater {self.id!r}: {what} failed: {err}") from err

    def _query_batch(
        self,
        batch: Batch,
        at: datetime,
        settings: TsdbSettings,
        results: dict[str, dict[str, MetricMap]],
    ) -> None:
        values = placeholder_values(batch, settings)
        members = set(batch.uuids)
        for query in self.queries:
            samples = self._query(
                query.promql.render(values),
                at,
                f"query for {query.metric}.{query.key.source}",
                settings.scrape_interval,
            )
            log.debug(
                "TSDB query",
                extra={
                    "updater": self.id,
                    "metric": query.metric,
                    "key": query.key.source,
                    "units": len(batch.uuids),
                    "range": values["Range"],
                    "results": len(samples),
                },
            )
            for sample in samples:
                uuid = sample.labels.get("uuid", "")
                if uuid not in members or not query.key.labels <= sample.labels.keys():
                    continue
                key = query.key.render({f"Labels.{k}": v for k, v in sample.labels.items()})
                unit_maps = results.setdefault(uuid, {})
                unit_maps.setdefault(query.metric, {})[key] = _sanitize(sample.value)

    def _query_provenance(
        self,
        batch: Batch,
        at: datetime,
        settings: TsdbSettings,
        origins: dict[str, dict[str, str]],
    ) -> None:
        values = placeholder_values(batch, settings)
        members = set(batch.uuids)
        for family, template in self.provenance_queries.items():
            samples = self._query(template.render(values), at, f"provenance query for {family}")
            for sample in samples:
                uuid = sample.labels.get("uuid", "")
                if uuid not in members:
                    continue
                found = {
                    f"{family}_{label}": sample.labels[label]
                    for label in PROVENANCE_LABELS
                    if sample.labels.get(label)
                }
                origins[uuid] = merge_provenance(origins.get(uuid, {}), found)

    def _delete_ignored(self, uuids: Sequence[str], start: datetime, end: datetime) -> None:
        # never called with no uuids: an empty regex would delete every series with a uuid;
        # an ignored unit ran less than cutoff_duration and ended inside the window
        since = start - self.config.cutoff_duration
        try:
            self.client.delete_series([regex_selector("uuid", uuids)], since, end)
        except TsdbError as err:
            # the metrics are good: keep them, report the failed clean-up
            log.error(
                "cannot delete ignored units' series",
                extra={"updater": self.id, "units": len(uuids), "err": str(err)},
            )
            return
        log.info("deleted ignored units' series", extra={"updater": self.id, "units": len(uuids)})
