"""GPU flags the slurm, libvirt and k8s collectors share, declared once whoever asks first."""

from __future__ import annotations

import argparse
from typing import Any

from ceems.exporter.gpu.discovery import DEFAULT_NVIDIA_SMI, GPU_TYPES

DEFAULT_KUBELET_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"


def _add_once(group: argparse._ArgumentGroup, name: str, **kwargs: Any) -> None:
    # Several collectors declare the same flag; argparse refuses a second declaration.
    if name not in group._option_string_actions:
        group.add_argument(name, **kwargs)


def add_gpu_flags(group: argparse._ArgumentGroup) -> None:
    """`--collector.gpu.*`: vendor and the SMI tools used when NVML is not available."""
    _add_once(
        group,
        "--collector.gpu.type",
        dest="gpu_type",
        choices=GPU_TYPES,
        default="",
        help="GPU vendor of this node; nogpu turns GPU mapping off. Default: detected from "
        "the PCI devices under --path.sysfs.",
    )
    _add_once(
        group,
        "--collector.gpu.nvidia-smi-path",
        dest="gpu_nvidia_smi_path",
        default=DEFAULT_NVIDIA_SMI,
        metavar="PATH",
        help="nvidia-smi to run when NVML (nvidia-ml-py) is unavailable; a path other than "
        "the default is used instead of NVML. Default: %(default)s.",
    )
    _add_once(
        group,
        "--collector.gpu.amd-smi-path",
        dest="gpu_amd_smi_path",
        default="amd-smi",
        metavar="PATH",
        help="amd-smi to list AMD GPUs with. Default: %(default)s.",
    )
    _add_once(
        group,
        "--collector.gpu.rocm-smi-path",
        dest="gpu_rocm_smi_path",
        default="rocm-smi",
        metavar="PATH",
        help="rocm-smi, used when amd-smi is not found. Default: %(default)s.",
    )


def add_slurm_gpu_flags(group: argparse._ArgumentGroup) -> None:
    """gres.conf (shards, MPS) and the SLURM-to-driver GPU order."""
    _add_once(
        group,
        "--collector.slurm.gres-config-file",
        dest="slurm_gres_config_file",
        default="/etc/slurm/gres.conf",
        metavar="FILE",
        help="SLURM gres.conf, read for GPU shards and MPS counts. Default: %(default)s.",
    )
    _add_once(
        group,
        "--collector.slurm.gpu-order-map",
        dest="slurm_gpu_order_map",
        default="",
        metavar="MAP",
        help="SLURM GPU index to nvidia-smi/amd-smi index, with .<MIG GPU instance id> for MIG, "
        'as "<slurm>:<smi>[.<gi>]" pairs separated by commas, e.g. 0:1,1:0.3,2:0.4. '
        "Default: SLURM's order is the tool's.",
    )


def add_k8s_gpu_flags(group: argparse._ArgumentGroup) -> None:
    """The kubelet PodResources socket, and where pod UIDs are read from."""
    _add_once(
        group,
        "--collector.k8s.kubelet-podresources-socket.file",
        dest="k8s_kubelet_podresources_socket_file",
        default="",
        metavar="FILE",
        help=f"kubelet PodResources socket, usually {DEFAULT_KUBELET_SOCKET}; pods are mapped "
        "to GPUs only when it is set.",
    )
    _add_once(
        group,
        "--collector.k8s.pod-logs-dir",
        dest="k8s_pod_logs_dir",
        default="/var/log/pods",
        metavar="DIR",
        help="The kubelet's pod log folders (<namespace>_<pod>_<uid>), read to match "
        "PodResources' pod names to pod UIDs. Default: %(default)s.",
    )
