"""Unit collectors built directly over fixture cgroup trees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ceems.exporter.cgroups.collector import CgroupUnitCollector, UnitCollectorConfig
from ceems.exporter.cgroups.discover import Layout
from ceems.exporter.cgroups.fs import CgroupFS
from ceems.exporter.cgroups.stats import StatsOptions
from tests.conftest import FIXTURES

CGROUPS = FIXTURES / "cgroups"
Scrape = Callable[..., CollectorRegistry]


def make_collector(
    layout: Layout,
    root: Path,
    version: str = "",
    stats: StatsOptions | None = None,
    subsystem: str = "cpuacct",
    **config: object,
) -> CgroupUnitCollector:
    fs = CgroupFS.open(root, version)
    return CgroupUnitCollector(
        UnitCollectorConfig(
            layout=layout,
            fs=fs,
            hostname="n1",
            procfs=CGROUPS / "proc",
            active_subsystem=subsystem,
            stats=stats or StatsOptions(),
            **config,  # type: ignore[arg-type]
        )
    )


@pytest.fixture
def scrape() -> Scrape:
    """Register a unit collector in a fresh registry."""

    def run(collector: CgroupUnitCollector) -> CollectorRegistry:
        registry = CollectorRegistry()
        registry.register(collector)
        return registry

    return run
