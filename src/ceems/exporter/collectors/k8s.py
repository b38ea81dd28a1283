"""Kubernetes pods of every QoS class from their cgroups, GPUs from the kubelet."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ceems.exporter.cgroups.collector import CgroupUnitCollector
from ceems.exporter.cgroups.layouts import k8s_layout, pod_cpus
from ceems.exporter.cgroups.options import (
    add_cgroup_flags,
    add_unit_metric_flags,
    build_unit_collector,
)
from ceems.exporter.collector import NodeContext
from ceems.exporter.gpu.flags import add_gpu_flags, add_k8s_gpu_flags


@dataclass(frozen=True, slots=True)
class K8sCollectorFactory:
    """Builds the k8s collector."""

    name: str = "k8s"
    enabled_by_default: bool = False
    description: str = "Per-pod CPU, memory, IO and GPU usage of Kubernetes pods from cgroups."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """Cgroup, metric-group and GPU (kubelet PodResources) flags."""
        add_cgroup_flags(group)
        add_unit_metric_flags(group, "k8s")
        add_gpu_flags(group)
        add_k8s_gpu_flags(group)

    def build(self, node: NodeContext, options: argparse.Namespace) -> CgroupUnitCollector:
        """A unit collector over pod cgroups; uuid is the pod UID."""
        return build_unit_collector("k8s", k8s_layout(), node, options, cpus=pod_cpus)


FACTORY = K8sCollectorFactory()
