"""The collector extension point: a Protocol, its factory and the node context they share."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:
    from ceems.exporter.sampler import BackgroundSampler


class NoDataError(Exception):
    """A collector has nothing to report on this node (no RAPL zones, no BMC): not a fault."""


class CollectorError(Exception):
    """A collector cannot be built from its options (bad regex, missing command, ...)."""


@dataclass(frozen=True, slots=True)
class NodeContext:
    """Where a collector reads from and how it labels the node, fixed at start-up."""

    procfs: Path = Path("/proc")
    sysfs: Path = Path("/sys")
    cgroupfs: Path = Path("/sys/fs/cgroup")
    hostname: str = ""


@runtime_checkable
class Collector(Protocol):
    """What prometheus_client's registry calls: fresh metric families at every scrape.

    `collect` may raise; the scrape guard turns that into `ceems_scrape_collector_success 0`.
    """

    def collect(self) -> Iterable[Metric]:
        """Yield this scrape's metric families."""
        ...


@runtime_checkable
class ClosableCollector(Collector, Protocol):
    """A collector that owns background threads or processes to stop on shutdown."""

    def close(self) -> None:
        """Stop background work; called once when the exporter exits."""
        ...


@runtime_checkable
class SampledCollector(Collector, Protocol):
    """A collector serving values sampled in the background; the guard reports their age."""

    def samplers(self) -> Sequence[BackgroundSampler[Any]]:
        """The samplers whose last good values this collector serves."""
        ...


class CollectorFactory(Protocol):
    """Registered under the `ceems.collectors` entry-point group; builds one collector."""

    name: str
    enabled_by_default: bool
    description: str

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """Declare this collector's `--collector.<name>.<option>` flags."""
        ...

    def build(self, node: NodeContext, options: argparse.Namespace) -> Collector:
        """Build the collector from parsed flags; raise CollectorError on bad options."""
        ...
