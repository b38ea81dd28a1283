"""SLURM jobs from their cgroups (v1 `slurm[_host]/uid_N/job_N`, v2 `slurmstepd.scope/job_N`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ceems.exporter.cgroups.collector import CgroupUnitCollector
from ceems.exporter.cgroups.layouts import slurm_layout
from ceems.exporter.cgroups.options import (
    add_cgroup_flags,
    add_unit_metric_flags,
    build_unit_collector,
)
from ceems.exporter.collector import NodeContext
from ceems.exporter.gpu.flags import add_gpu_flags, add_slurm_gpu_flags


@dataclass(frozen=True, slots=True)
class SlurmCollectorFactory:
    """Builds the slurm collector."""

    name: str = "slurm"
    enabled_by_default: bool = False
    description: str = "Per-job CPU, memory, IO and GPU usage of SLURM jobs from cgroups."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """Cgroup, metric-group and GPU flags; CEEMS' dotted names are kept as aliases."""
        add_cgroup_flags(group)
        add_unit_metric_flags(
            group,
            "slurm",
            aliases={
                "swap-memory-metrics": "--collector.slurm.swap.memory.metrics",
                "psi-metrics": "--collector.slurm.psi.metrics",
            },
        )
        add_gpu_flags(group)
        add_slurm_gpu_flags(group)

    def build(self, node: NodeContext, options: argparse.Namespace) -> CgroupUnitCollector:
        """A unit collector over SLURM's job cgroups."""
        return build_unit_collector("slurm", slurm_layout(), node, options)


FACTORY = SlurmCollectorFactory()
