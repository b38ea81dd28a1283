"""The scrape guard isolates failing collectors and reports each one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from ceems.exporter.collector import Collector, NoDataError
from ceems.exporter.scrape import ScrapeGuard


@dataclass(eq=False)
class Fixed:
    name: str
    fail_after_first: Exception | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        first = GaugeMetricFamily(f"{self.name}_a", "a", value=1)
        yield first
        if self.fail_after_first is not None:
            raise self.fail_after_first
        yield GaugeMetricFamily(f"{self.name}_b", "b", value=2)


def scrape(collectors: dict[str, Collector]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ScrapeGuard(collectors))
    return registry


def test_a_failing_collector_leaks_nothing_and_reports_zero() -> None:
    registry = scrape(
        {
            "good": Fixed("good"),
            "bad": Fixed("bad", PermissionError("denied")),
            "empty": Fixed("empty", NoDataError("no RAPL")),
        }
    )
    assert registry.get_sample_value("good_b") == 2
    assert registry.get_sample_value("bad_a") is None  # half a collector is none of it
    success = "ceems_scrape_collector_success"
    assert registry.get_sample_value(success, {"collector": "good"}) == 1
    assert registry.get_sample_value(success, {"collector": "bad"}) == 0
    assert registry.get_sample_value(success, {"collector": "empty"}) == 0
    duration = registry.get_sample_value(
        "ceems_scrape_collector_duration_seconds", {"collector": "bad"}
    )
    assert duration is not None and duration >= 0


@dataclass(eq=False)
class Units:
    manager: str
    kind: str = "gauge"

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "ceems_compute_units", "Total number of jobs", labels=["manager"]
        )
        family.add_metric([self.manager], 2)
        if self.kind != "gauge":
            family.type = self.kind
        yield family


def test_same_family_from_two_collectors_is_merged() -> None:
    from prometheus_client import generate_latest

    registry = scrape({"slurm": Units("slurm"), "userslice": Units("userslice")})
    text = generate_latest(registry).decode()
    assert text.count("# HELP ceems_compute_units ") == 1
    assert 'ceems_compute_units{manager="slurm"} 2.0' in text
    assert 'ceems_compute_units{manager="userslice"} 2.0' in text


def test_same_name_with_another_type_is_dropped_not_fatal() -> None:
    registry = scrape({"a": Units("slurm"), "b": Units("k8s", kind="counter")})
    assert registry.get_sample_value("ceems_compute_units", {"manager": "slurm"}) == 2
    assert registry.get_sample_value("ceems_compute_units", {"manager": "k8s"}) is None
    assert registry.get_sample_value("ceems_scrape_collector_success", {"collector": "b"}) == 1
