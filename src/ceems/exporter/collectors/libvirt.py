"""libvirt/QEMU virtual machines from their cgroups, identified by domain UUID."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ceems.exporter.cgroups.collector import CgroupUnitCollector
from ceems.exporter.cgroups.layouts import LibvirtUuidResolver, libvirt_layout
from ceems.exporter.cgroups.options import (
    add_cgroup_flags,
    add_unit_metric_flags,
    build_unit_collector,
)
from ceems.exporter.cgroups.unit import CgroupUnit
from ceems.exporter.collector import NodeContext
from ceems.exporter.gpu.flags import add_gpu_flags


@dataclass(frozen=True, slots=True)
class LibvirtCollectorFactory:
    """Builds the libvirt collector."""

    name: str = "libvirt"
    enabled_by_default: bool = False
    description: str = "Per-VM CPU, memory, IO and GPU usage of libvirt/QEMU domains."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """Domain XML locations, cgroup, metric-group and GPU flags."""
        add_cgroup_flags(group)
        add_unit_metric_flags(group, "libvirt")
        group.add_argument(
            "--collector.libvirt.xml-dir",
            dest="libvirt_xml_dir",
            default="/etc/libvirt/qemu",
            metavar="DIR",
            help="Directory of the persistent domain XML files. Default: %(default)s.",
        )
        group.add_argument(
            "--collector.libvirt.runtime-xml-dir",
            dest="libvirt_runtime_xml_dir",
            default="/run/libvirt/qemu",
            metavar="DIR",
            help="Directory of the running domains' XML, used when a domain has no persistent "
            "definition (OpenStack, transient domains). Default: %(default)s.",
        )
        add_gpu_flags(group)

    def build(self, node: NodeContext, options: argparse.Namespace) -> CgroupUnitCollector:
        """A unit collector over QEMU domain cgroups; uuid is the domain UUID."""
        resolver = LibvirtUuidResolver(
            Path(options.libvirt_xml_dir), Path(options.libvirt_runtime_xml_dir)
        )

        def keep_live(units: list[CgroupUnit]) -> None:
            resolver.forget_except({u.properties["instance"] for u in units})

        return build_unit_collector(
            "libvirt", libvirt_layout(resolver), node, options, on_units=keep_live
        )


FACTORY = LibvirtCollectorFactory()
