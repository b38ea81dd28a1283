"""NVIDIA GPUs, MIG instances and vGPUs through NVML (the `pynvml` module of nvidia-ml-py)."""

from __future__ import annotations

import importlib
import logging
import re
from types import ModuleType
from typing import Any

from ceems.exporter.gpu.devices import normalize_pci_bus_id
from ceems.exporter.gpu.nvidia import MigInstance, NvidiaGpu, VgpuInstance

log = logging.getLogger(__name__)

_MIG_PROFILE = re.compile(r"\bMIG\s+(\S+)")


def load_nvml() -> ModuleType | None:
    """The pynvml module, or None when nvidia-ml-py (extra `nvidia`) is not installed."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


def _str(value: Any) -> str:
    """NVML strings arrive as bytes from older bindings and struct fields."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _mig_instances(nvml: ModuleType, handle: Any) -> tuple[MigInstance, ...]:
    instances = []
    for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except nvml.NVMLError:
            continue  # unpopulated slots answer NOT_FOUND
        name = _str(nvml.nvmlDeviceGetName(mig))
        profile = _MIG_PROFILE.search(name)
        instances.append(
            MigInstance(
                mig_index=str(slot),
                gpu_instance_id=str(nvml.nvmlDeviceGetGpuInstanceId(mig)),
                compute_instance_id=str(nvml.nvmlDeviceGetComputeInstanceId(mig)),
                sm_count=float(nvml.nvmlDeviceGetAttributes(mig).multiprocessorCount),
                mig_uuid=_str(nvml.nvmlDeviceGetUUID(mig)),
                profile=profile.group(1) if profile else "",
            )
        )
    return tuple(instances)


def _vgpus(nvml: ModuleType, handle: Any, bus_id: str, mig: bool) -> list[VgpuInstance]:
    vgpus = []
    for vgpu in nvml.nvmlDeviceGetActiveVgpus(handle):
        gpu_instance = str(nvml.nvmlVgpuInstanceGetGpuInstanceId(vgpu)) if mig else ""
        vgpus.append(
            VgpuInstance(
                pci_bus_id=bus_id,
                mdev_uuid=_str(nvml.nvmlVgpuInstanceGetMdevUUID(vgpu)),
                gpu_instance_id=gpu_instance,
            )
        )
    return vgpus


def _optional(nvml: ModuleType, call: Any, *args: Any) -> Any:
    """The call's result, or None when the GPU does not support it (non-MIG, non-vGPU)."""
    try:
        return call(*args)
    except nvml.NVMLError:
        return None


def nvml_gpus(nvml: ModuleType) -> tuple[list[NvidiaGpu], list[VgpuInstance]]:
    """Physical GPUs (with MIG instances) and active vGPUs; NVMLError if no driver answers."""
    nvml.nvmlInit()
    try:
        gpus: list[NvidiaGpu] = []
        vgpus: list[VgpuInstance] = []
        for position in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(position)
            bus_id = normalize_pci_bus_id(_str(nvml.nvmlDeviceGetPciInfo(handle).busId))
            mig_mode = _optional(nvml, nvml.nvmlDeviceGetMigMode, handle)
            mig = mig_mode is not None and mig_mode[0] == nvml.NVML_DEVICE_MIG_ENABLE
            virt = _optional(nvml, nvml.nvmlDeviceGetVirtualizationMode, handle)
            vgpu_host = virt == nvml.NVML_GPU_VIRTUALIZATION_MODE_HOST_VGPU
            minor = _optional(nvml, nvml.nvmlDeviceGetMinorNumber, handle)
            gpus.append(
                NvidiaGpu(
                    uuid=_str(nvml.nvmlDeviceGetUUID(handle)),
                    pci_bus_id=bus_id,
                    minor_number="" if minor is None else str(minor),
                    name=_str(nvml.nvmlDeviceGetName(handle)),
                    mig_enabled=mig,
                    vgpu_host=vgpu_host,
                    instances=_mig_instances(nvml, handle) if mig else (),
                )
            )
            if vgpu_host:
                vgpus.extend(_vgpus(nvml, handle, bus_id, mig))
        return gpus, vgpus
    finally:
        nvml.nvmlShutdown()
