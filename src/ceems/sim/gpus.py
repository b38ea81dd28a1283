"""Simulated GPUs: fake `nvidia-smi` and `amd-smi` commands printing what real ones print.

The exporter's real discovery code runs these tools, so a simulated GPU node exercises the same
parsing and mapping as a real one: whole GPUs, MIG instances and AMD partitions.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape


@dataclass(frozen=True, slots=True)
class SimMig:
    """One MIG instance: GPU instance id, compute instance id, its SMs."""

    gpu_instance_id: int
    compute_instance_id: int
    sm_count: int
    profile: str = "3g.40gb"


@dataclass(frozen=True, slots=True)
class SimGpu:
    """One physical GPU as the driver lists it."""

    uuid: str
    pci_bus_id: str  # "00000000:3B:00.0"
    minor: int
    product: str = "NVIDIA A100-SXM4-80GB"
    migs: tuple[SimMig, ...] = ()


def nvidia_smi_xml(gpus: Sequence[SimGpu]) -> str:
    """`nvidia-smi --query --xml-format` output for these GPUs (the fields the exporter reads)."""
    parts = [
        '<?xml version="1.0" ?>',
        "<nvidia_smi_log>",
        "<driver_version>550.54.15</driver_version>",
    ]
    parts.append(f"<attached_gpus>{len(gpus)}</attached_gpus>")
    for gpu in gpus:
        mig_mode = "Enabled" if gpu.migs else "Disabled"
        parts += [
            f'<gpu id="{escape(gpu.pci_bus_id)}">',
            f"<product_name>{escape(gpu.product)}</product_name>",
            f"<mig_mode><current_mig>{mig_mode}</current_mig><pending_mig>{mig_mode}</pending_mig></mig_mode>",
            "<mig_devices>",
        ]
        for index, mig in enumerate(gpu.migs):
            parts += [
                "<mig_device>",
                f"<index>{index}</index>",
                f"<gpu_instance_id>{mig.gpu_instance_id}</gpu_instance_id>",
                f"<compute_instance_id>{mig.compute_instance_id}</compute_instance_id>",
                "<device_attributes><shared>",
                f"<multiprocessor_count>{mig.sm_count}</multiprocessor_count>",
                "</shared></device_attributes>",
                "</mig_device>",
            ]
        parts += [
            "</mig_devices>",
            f"<uuid>{escape(gpu.uuid)}</uuid>",
            f"<minor_number>{gpu.minor}</minor_number>",
            "<gpu_virtualization_mode><virtualization_mode>None</virtualization_mode>"
            "</gpu_virtualization_mode>",
            "</gpu>",
        ]
    parts.append("</nvidia_smi_log>")
    return "\n".join(parts) + "\n"


def nvidia_smi_list(gpus: Sequence[SimGpu]) -> str:
    """`nvidia-smi -L` output: GPUs and their MIG devices with UUIDs."""
    lines = []
    for index, gpu in enumerate(gpus):
        lines.append(f"GPU {index}: {gpu.product} (UUID: {gpu.uuid})")
        for mig_index, mig in enumerate(gpu.migs):
            mig_uuid = f"MIG-{gpu.uuid[4:12]}-{mig.gpu_instance_id:04d}-{mig_index:04d}-sim"
            lines.append(f"  MIG {mig.profile}     Device  {mig_index}: (UUID: {mig_uuid})")
    return "\n".join(lines) + "\n"


def _executable(path: Path, script: str) -> Path:
    path.write_text(script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def write_fake_nvidia_smi(bin_dir: Path, gpus: Sequence[SimGpu]) -> Path:
    """An `nvidia-smi` in `bin_dir` answering `--query --xml-format` and `-L`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "nvidia-smi.xml").write_text(nvidia_smi_xml(gpus))
    (bin_dir / "nvidia-smi.list").write_text(nvidia_smi_list(gpus))
    return _executable(
        bin_dir / "nvidia-smi",
        "#!/bin/sh\n"
        'here=$(dirname "$0")\n'
        'case "$*" in\n'
        '  "--query --xml-format") cat "$here/nvidia-smi.xml" ;;\n'
        '  "-L") cat "$here/nvidia-smi.list" ;;\n'
        '  *) echo "nvidia-smi (simulated): unsupported arguments: $*" >&2; exit 2 ;;\n'
        "esac\n",
    )


def amd_smi_static(gpus: Sequence[SimGpu], compute_units: int = 304) -> str:
    """`amd-smi static --json` output for AMD GPUs (serial in `uuid`)."""
    data = [
        {
            "gpu": index,
            "asic": {"num_compute_units": compute_units, "market_name": gpu.product},
            "bus": {"bdf": gpu.pci_bus_id.lower().removeprefix("0000")},
            "board": {"product_serial": gpu.uuid, "product_name": gpu.product},
            "partition": {"compute_partition": "SPX", "partition_id": 0},
        }
        for index, gpu in enumerate(gpus)
    ]
    return json.dumps(data, indent=2) + "\n"


def write_fake_amd_smi(bin_dir: Path, gpus: Sequence[SimGpu]) -> Path:
    """An `amd-smi` in `bin_dir` answering `static ... --json`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "amd-smi.json").write_text(amd_smi_static(gpus))
    return _executable(
        bin_dir / "amd-smi",
        "#!/bin/sh\n"
        'case "$1" in\n'
        '  static) cat "$(dirname "$0")/amd-smi.json" ;;\n'
        '  *) echo "amd-smi (simulated): unsupported command: $1" >&2; exit 2 ;;\n'
        "esac\n",
    )


def demo_gpus() -> list[SimGpu]:
    """A GPU node as the demo runs it: two whole GPUs and one split into two MIG instances."""
    return [
        SimGpu("GPU-5a1c0001-0000-4000-8000-00000000a100", "00000000:17:00.0", 0),
        SimGpu("GPU-5a1c0002-0000-4000-8000-00000000a100", "00000000:65:00.0", 1),
        SimGpu(
            "GPU-5a1c0003-0000-4000-8000-00000000a100",
            "00000000:CA:00.0",
            2,
            migs=(SimMig(1, 0, 42, "3g.40gb"), SimMig(2, 0, 28, "2g.20gb")),
        ),
    ]
