"""A stand-in for pynvml with the calls and errors discovery uses, over a fixed node."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any


class NVMLError(Exception):
    """pynvml's base error."""


@dataclass
class FakeGpu:
    uuid: str
    bus_id: bytes
    name: str
    minor: int
    mig: bool = False
    host_vgpu: bool = False
    migs: list[dict[str, Any]] = field(default_factory=list)  # slot, gi, ci, sms, uuid, name
    vgpus: list[tuple[str, int]] = field(default_factory=list)  # (mdev, gpu instance)


def fake_nvml(gpus: list[FakeGpu], init_error: bool = False) -> ModuleType:
    """A module whose NVML calls answer for `gpus`; nvmlInit raises if `init_error`."""
    nvml = ModuleType("pynvml")
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        if init_error:
            raise NVMLError("Driver Not Loaded")

    def mig_handle(handle: FakeGpu, slot: int) -> dict[str, Any]:
        for mig in handle.migs:
            if mig["slot"] == slot:
                return mig
        raise NVMLError("Not Found")

    def mig_mode(handle: FakeGpu) -> tuple[int, int]:
        if not handle.mig:
            raise NVMLError("Not Supported")
        return (1, 1)

    vgpu_owner: dict[int, tuple[str, int]] = {}

    def active_vgpus(handle: FakeGpu) -> list[int]:
        ids = []
        for mdev, gi in handle.vgpus:
            ident = len(vgpu_owner) + 100
            vgpu_owner[ident] = (mdev, gi)
            ids.append(ident)
        return ids

    def name(handle: Any) -> str:
        return handle["name"] if isinstance(handle, dict) else handle.name

    def uuid(handle: Any) -> str:
        return handle["uuid"] if isinstance(handle, dict) else handle.uuid

    nvml.__dict__.update(
        NVMLError=NVMLError,
        NVML_DEVICE_MIG_ENABLE=1,
        NVML_GPU_VIRTUALIZATION_MODE_HOST_VGPU=3,
        calls=calls,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: len(gpus),
        nvmlDeviceGetHandleByIndex=lambda i: gpus[i],
        nvmlDeviceGetUUID=uuid,
        nvmlDeviceGetName=name,
        nvmlDeviceGetPciInfo=lambda h: SimpleNamespace(busId=h.bus_id),
        nvmlDeviceGetMinorNumber=lambda h: h.minor,
        nvmlDeviceGetMigMode=mig_mode,
        nvmlDeviceGetVirtualizationMode=lambda h: 3 if h.host_vgpu else 0,
        nvmlDeviceGetMaxMigDeviceCount=lambda h: 7,
        nvmlDeviceGetMigDeviceHandleByIndex=mig_handle,
        nvmlDeviceGetGpuInstanceId=lambda m: m["gi"],
        nvmlDeviceGetComputeInstanceId=lambda m: m["ci"],
        nvmlDeviceGetAttributes=lambda m: SimpleNamespace(multiprocessorCount=m["sms"]),
        nvmlDeviceGetActiveVgpus=active_vgpus,
        nvmlVgpuInstanceGetMdevUUID=lambda v: vgpu_owner[v][0],
        nvmlVgpuInstanceGetGpuInstanceId=lambda v: vgpu_owner[v][1],
    )
    return nvml
