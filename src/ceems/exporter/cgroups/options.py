"""Flags shared by the unit collectors, and building a collector from them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ceems.exporter.cgroups.collector import (
    CgroupUnitCollector,
    GpuMapperLike,
    UnitCollectorConfig,
)
from ceems.exporter.cgroups.discover import Layout
from ceems.exporter.cgroups.fs import CgroupError, CgroupFS
from ceems.exporter.cgroups.stats import StatsOptions
from ceems.exporter.cgroups.unit import CgroupUnit
from ceems.exporter.collector import CollectorError, NodeContext


def add_shared_flag(group: argparse._ArgumentGroup, *names: str, **kwargs: Any) -> None:
    """Add a flag several collectors share, once: the first collector to ask declares it."""
    if names[0] not in group._option_string_actions:
        group.add_argument(*names, **kwargs)


def add_cgroup_flags(group: argparse._ArgumentGroup) -> None:
    """`--collector.cgroups.*`: cgroup version and the v1 hierarchy units are found in."""
    add_shared_flag(
        group,
        "--collector.cgroups.force-version",
        dest="cgroups_force_version",
        choices=("v1", "v2"),
        default=None,
        help="Cgroup version to assume instead of detecting it from --path.cgroupfs.",
    )
    add_shared_flag(
        group,
        "--collector.cgroups.active-subsystem",
        dest="cgroups_active_subsystem",
        default="cpuacct",
        metavar="CONTROLLER",
        help="cgroup v1 controller whose hierarchy is walked to find units. Default: %(default)s.",
    )


def add_unit_metric_flags(
    group: argparse._ArgumentGroup, manager: str, aliases: dict[str, str] | None = None
) -> None:
    """Opt-in metric groups per manager: swap, PSI and block IO."""
    aliases = aliases or {}
    for option, what in (
        ("swap-memory-metrics", "swap usage (memsw) metrics"),
        ("psi-metrics", "CPU and memory pressure (PSI) metrics (cgroup v2)"),
        ("blkio-metrics", "block IO metrics per device"),
    ):
        names = [f"--collector.{manager}.{option}"]
        if option in aliases:
            names.append(aliases[option])
        group.add_argument(
            *names,
            dest=f"{manager}_{option.replace('-', '_')}",
            action="store_true",
            help=f"Export per-unit {what}.",
        )


def build_unit_collector(
    manager: str,
    layout: Layout,
    node: NodeContext,
    options: argparse.Namespace,
    cpus: Callable[[CgroupFS, CgroupUnit], float | None] | None = None,
    on_units: Callable[[list[CgroupUnit]], None] | None = None,
) -> CgroupUnitCollector:
    """A unit collector over `--path.cgroupfs`, with GPU mapping when the node has GPUs."""
    try:
        fs = CgroupFS.open(node.cgroupfs, options.cgroups_force_version or "")
    except CgroupError as err:
        raise CollectorError(f"--collector.{manager}: {err}") from err
    subsystem = options.cgroups_active_subsystem
    if fs.version == "v1" and fs.controller_root(subsystem) is None:
        raise CollectorError(
            f"--collector.cgroups.active-subsystem: {subsystem!r} is not mounted under "
            f"{node.cgroupfs}"
        )
    stats = StatsOptions(
        swap=getattr(options, f"{manager}_swap_memory_metrics", False),
        psi=getattr(options, f"{manager}_psi_metrics", False),
        blkio=getattr(options, f"{manager}_blkio_metrics", False),
    )
    config = UnitCollectorConfig(
        layout=layout,
        fs=fs,
        hostname=node.hostname,
        procfs=node.procfs,
        active_subsystem=subsystem,
        stats=stats,
        cpus=cpus,
        on_units=on_units,
    )
    return CgroupUnitCollector(config, gpu=build_gpu(manager, node, options))


def build_gpu(manager: str, node: NodeContext, options: argparse.Namespace) -> GpuMapperLike | None:
    """The GPU mapper for this manager, or None on a node without GPUs."""
    if manager == "userslice":
        return None  # GPUs of a user session are not assigned by any scheduler
    from ceems.exporter.gpu.mapper import build_gpu_mapper

    return build_gpu_mapper(manager, options, node.sysfs, node.procfs)
