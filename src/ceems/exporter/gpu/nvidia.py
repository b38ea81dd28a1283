"""NVIDIA GPUs as reported by nvidia-smi or NVML, flattened into CEEMS-indexed devices."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from ceems.exporter.gpu.devices import NVIDIA, GpuDevice

log = logging.getLogger(__name__)

# SMs of whole GPUs by model, for the sm_count metric: nvidia-smi's XML gives SM counts only
# for MIG instances, and NVML's device attributes only answer for MIG handles. Values are
# the vendors' published specifications (CEEMS keeps the same kind of table in gpu.go).
_MODEL_SMS: dict[str, float] = {
    "T4": 40,
    "V100": 80,
    "A2": 10,
    "A10": 72,
    "A30": 56,
    "A40": 84,
    "A100": 108,
    "A800": 108,
    "L4": 58,
    "L40": 142,
    "L40S": 142,
    "H100": 132,
    "H200": 132,
    "GH200": 132,
}
_PCIE_SMS: dict[str, float] = {"H100": 114}  # the PCIe H100 is a cut-down part


@dataclass(frozen=True, slots=True)
class MigInstance:
    """One MIG GPU instance (with its compute instance) of a physical GPU."""

    mig_index: str
    gpu_instance_id: str
    compute_instance_id: str
    sm_count: float
    mig_uuid: str = ""
    profile: str = ""


@dataclass(frozen=True, slots=True)
class NvidiaGpu:
    """A physical NVIDIA GPU as the driver lists it."""

    uuid: str
    pci_bus_id: str
    minor_number: str
    name: str
    mig_enabled: bool
    vgpu_host: bool
    instances: tuple[MigInstance, ...] = ()


@dataclass(frozen=True, slots=True)
class VgpuInstance:
    """An active vGPU: the mdev a VM is given, on a whole GPU or a MIG GPU instance."""

    pci_bus_id: str
    mdev_uuid: str
    gpu_instance_id: str = ""  # "" when the vGPU sits on a whole GPU
    vm_uuid: str = ""
    name: str = ""


def nvidia_sm_count(product_name: str) -> float:
    """SMs of a whole GPU from its product name (`NVIDIA A100-SXM4-40GB`), 0 if unknown."""
    tokens = [t.upper() for t in re.split(r"[\s\-]+", product_name) if t]
    for token in tokens:
        model = next((m for m in _MODEL_SMS if m.upper() == token), None)
        if model is not None:
            if "PCIE" in tokens and model in _PCIE_SMS:
                return _PCIE_SMS[model]
            return _MODEL_SMS[model]
    return 0.0


def instance_shares(instances: Sequence[MigInstance]) -> list[float]:
    """Each instance's fraction of its GPU: its SMs over the SMs of all the GPU's instances.

    CEEMS (testdata at 04adf47) divides by the sum over the instances that exist, so the
    instances of a GPU always share its whole power. When an SM count is missing, the
    instances share equally.
    """
    total = sum(inst.sm_count for inst in instances)
    if total <= 0 or any(inst.sm_count <= 0 for inst in instances):
        return [1.0 / len(instances)] * len(instances)
    return [inst.sm_count / total for inst in instances]


def flatten_nvidia(gpus: Sequence[NvidiaGpu]) -> list[GpuDevice]:
    """Whole GPUs and MIG instances, numbered together in listing order as CEEMS does."""
    devices: list[GpuDevice] = []
    index = 0
    for position, gpu in enumerate(gpus):
        physical = GpuDevice(
            index="",
            hindex="",
            uuid=gpu.uuid,
            vendor=NVIDIA,
            pci_bus_id=gpu.pci_bus_id,
            physical_index=position,
            minor_number=gpu.minor_number,
            name=gpu.name,
            vgpu_host=gpu.vgpu_host,
        )
        if not gpu.mig_enabled:
            devices.append(
                replace(physical.with_index(str(index)), sm_count=nvidia_sm_count(gpu.name))
            )
            index += 1
            continue
        if not gpu.instances:
            log.info("MIG enabled without instances", extra={"gpu": gpu.uuid})
        for inst, share in zip(gpu.instances, instance_shares(gpu.instances), strict=True):
            devices.append(
                replace(
                    physical.with_index(str(index)),
                    instance_id=inst.gpu_instance_id,
                    sm_count=inst.sm_count,
                    share_of_parent=share,
                    mig_index=inst.mig_index,
                    mig_uuid=inst.mig_uuid,
                    profile=inst.profile,
                )
            )
            index += 1
    return devices


def attach_mig_uuids(
    devices: Sequence[GpuDevice], listing: Mapping[str, Mapping[str, tuple[str, str]]]
) -> list[GpuDevice]:
    """MIG UUIDs and profiles filled in from `nvidia-smi -L` (see parse_nvidia_smi_list)."""
    out = []
    for dev in devices:
        found = listing.get(dev.uuid, {}).get(dev.mig_index) if dev.is_instance else None
        out.append(replace(dev, mig_uuid=found[0], profile=found[1]) if found else dev)
    return out


def attach_vgpus(devices: Sequence[GpuDevice], vgpus: Sequence[VgpuInstance]) -> list[GpuDevice]:
    """Record on each GPU or MIG instance the mdev UUIDs of the vGPUs created on it."""
    out = []
    for dev in devices:
        mdevs = tuple(
            v.mdev_uuid.lower()
            for v in vgpus
            if v.pci_bus_id == dev.pci_bus_id and v.gpu_instance_id == dev.instance_id
        )
        out.append(replace(dev, mdev_uuids=mdevs))
    return out
