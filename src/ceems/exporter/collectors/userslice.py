"""Users' login sessions (`user.slice/user-<uid>.slice`) as compute units, for small clusters
without a batch scheduler: energy per user and per reservation where people work by hand."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ceems.exporter.cgroups.collector import CgroupUnitCollector
from ceems.exporter.cgroups.layouts import userslice_layout
from ceems.exporter.cgroups.options import (
    add_cgroup_flags,
    add_unit_metric_flags,
    build_unit_collector,
)
from ceems.exporter.collector import NodeContext


@dataclass(frozen=True, slots=True)
class UserSliceCollectorFactory:
    """Builds the userslice collector."""

    name: str = "userslice"
    enabled_by_default: bool = False
    description: str = "Per-user usage of login sessions (systemd user slices) from cgroups."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """Cgroup and metric-group flags."""
        add_cgroup_flags(group)
        add_unit_metric_flags(group, "userslice")

    def build(self, node: NodeContext, options: argparse.Namespace) -> CgroupUnitCollector:
        """A unit collector over user slices; uuid is the user's login name."""
        return build_unit_collector("userslice", userslice_layout(), node, options)


FACTORY = UserSliceCollectorFactory()
