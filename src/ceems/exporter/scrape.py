"""The scrape guard: runs every collector, isolates failures and reports them as metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ceems.exporter.collector import Collector, NoDataError, SampledCollector

log = logging.getLogger(__name__)


def merge_families(merged: dict[str, Metric], families: list[Metric], collector: str) -> None:
    """Add a collector's families; one name emitted by several collectors becomes one family.

    Several unit collectors on one node (slurm and userslice, say) all emit
    `ceems_compute_units` and the per-unit families; the exposition format allows each name
    once, so their samples are joined. A name reused with another type is a plugin bug: the
    later family is dropped and logged rather than breaking the whole scrape.
    """
    for family in families:
        first = merged.get(family.name)
        if first is None:
            merged[family.name] = family
        elif first.type == family.type:
            first.samples.extend(family.samples)
        else:
            log.error(
                "metric name reused with another type",
                extra={"collector": collector, "metric": family.name, "type": family.type},
            )


@dataclass(frozen=True, slots=True, eq=False)  # registry keys collectors by identity
class ScrapeGuard:
    """One registry collector wrapping all enabled collectors, as CEEMS' `execute()` does.

    A collector that raises (missing file, permission denied, garbage, a stale background
    source) contributes no series of its own and `ceems_scrape_collector_success 0`; the
    scrape still answers with everything else. Families are materialised per collector so an
    exception half-way through a generator never leaks a partial family into the output.
    """

    collectors: Mapping[str, Collector]

    def collect(self) -> Iterator[Metric]:
        """Yield every collector's families, then the per-collector scrape metrics."""
        duration = GaugeMetricFamily(
            "ceems_scrape_collector_duration_seconds",
            "ceems_exporter: Duration of a collector scrape.",
            labels=["collector"],
        )
        success = GaugeMetricFamily(
            "ceems_scrape_collector_success",
            "ceems_exporter: Whether a collector succeeded.",
            labels=["collector"],
        )
        age = GaugeMetricFamily(
            "ceems_exporter_sample_age_seconds",
            "Age of the last good sample of a background-sampled source, in seconds.",
            labels=["collector", "source"],
        )
        merged: dict[str, Metric] = {}
        for name, collector in sorted(self.collectors.items()):
            started = time.perf_counter()
            try:
                families = list(collector.collect())
            except NoDataError as err:
                log.debug("collector returned no data", extra={"collector": name, "err": str(err)})
                families, ok = [], False
            except Exception as err:  # the guard is where collector failures are reported
                log.error(
                    "collector failed",
                    extra={"collector": name, "err": f"{type(err).__name__}: {err}"},
                )
                families, ok = [], False
            else:
                ok = True
            duration.add_metric([name], time.perf_counter() - started)
            success.add_metric([name], 1.0 if ok else 0.0)
            if isinstance(collector, SampledCollector):
                for sampler in collector.samplers():
                    sample_age = sampler.age_s()
                    if sample_age is not None:
                        age.add_metric([name, sampler.name], sample_age)
            merge_families(merged, families, name)
        yield from merged.values()
        yield duration
        yield success
        if age.samples:
            yield age
