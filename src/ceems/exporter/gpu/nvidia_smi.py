"""Parsers for nvidia-smi: `--query --xml-format`, `-L` (MIG UUIDs) and `vgpu --query`."""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET

from ceems.exporter.gpu.devices import GpuDevice, GpuDiscoveryError, normalize_pci_bus_id
from ceems.exporter.gpu.nvidia import MigInstance, NvidiaGpu, VgpuInstance, flatten_nvidia

log = logging.getLogger(__name__)

_LIST_GPU = re.compile(r"^GPU\s+\d+:.*\(UUID:\s*(?P<uuid>GPU-[0-9A-Za-z-]+)\)")
_LIST_MIG = re.compile(
    r"^\s+MIG\s+(?P<profile>\S+)\s+Device\s+(?P<index>\d+):\s*\(UUID:\s*(?P<uuid>MIG-[^)\s]+)\)"
)
_VGPU_KEYS = {"VM UUID", "vGPU Name", "MDEV UUID", "GPU Instance ID"}


def _text(element: ET.Element, path: str) -> str:
    """Stripped text at `path`, "" when missing or N/A."""
    found = element.findtext(path)
    value = (found or "").strip()
    return "" if value in ("N/A", "None") else value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0  # CEEMS tolerates N/A counts too; the share then falls back to equal


def _mig_instances(gpu: ET.Element, uuid: str) -> tuple[MigInstance, ...]:
    instances = []
    for mig in gpu.findall("mig_devices/mig_device"):
        index, gi, ci = (
            _text(mig, tag) for tag in ("index", "gpu_instance_id", "compute_instance_id")
        )
        if not (index.isdigit() and gi.isdigit()):
            raise GpuDiscoveryError(
                f"nvidia-smi: GPU {uuid}: MIG device with index {index!r} and GPU instance id "
                f"{gi!r}; both must be integers"
            )
        sms = _number(_text(mig, "device_attributes/shared/multiprocessor_count"))
        instances.append(MigInstance(index, gi, ci, sms))
    return tuple(instances)


def parse_nvidia_smi_gpus(text: str) -> list[NvidiaGpu]:
    """Physical GPUs, with their MIG instances, from `nvidia-smi --query --xml-format`."""
    # Parse from the root element: the prolog (XML declaration, DOCTYPE) carries nothing we
    # read, and Go's encoding/xml, which CEEMS uses, accepts a malformed one that expat does not.
    start = text.find("<nvidia_smi_log")
    try:
        root = ET.fromstring(text[start:] if start >= 0 else text)
    except ET.ParseError as err:
        raise GpuDiscoveryError(f"nvidia-smi printed malformed XML: {err}") from err
    if root.tag != "nvidia_smi_log":
        raise GpuDiscoveryError(f"nvidia-smi XML has root <{root.tag}>, not <nvidia_smi_log>")
    gpus = []
    for gpu in root.findall("gpu"):
        uuid = _text(gpu, "uuid")
        if not uuid:
            # A GPU that fell off the bus reports no UUID; it cannot be labelled or used.
            log.warning("GPU without UUID skipped", extra={"pci_bus_id": gpu.get("id", "")})
            continue
        try:
            bus_id = normalize_pci_bus_id(gpu.get("id", ""))
        except ValueError as err:
            raise GpuDiscoveryError(f"nvidia-smi: GPU {uuid}: {err}") from err
        virt = _text(gpu, "gpu_virtualization_mode/virtualization_mode").lower()
        gpus.append(
            NvidiaGpu(
                uuid=uuid,
                pci_bus_id=bus_id,
                minor_number=_text(gpu, "minor_number"),
                name=_text(gpu, "product_name"),
                mig_enabled=_text(gpu, "mig_mode/current_mig").lower() == "enabled",
                # "VGPU" (older drivers) or "Host VGPU": this host serves vGPUs to VMs.
                vgpu_host="vgpu" in virt,
                instances=_mig_instances(gpu, uuid),
            )
        )
    return gpus


def parse_nvidia_smi_xml(text: str) -> list[GpuDevice]:
    """Assignable devices (whole GPUs and MIG instances) from nvidia-smi's XML query.

    MIG UUIDs and vGPU mdevs are not in this output: `attach_mig_uuids` and
    `attach_vgpus` add them from `-L` and `vgpu --query`.
    """
    return flatten_nvidia(parse_nvidia_smi_gpus(text))


def parse_nvidia_smi_list(text: str) -> dict[str, dict[str, tuple[str, str]]]:
    """GPU UUID -> MIG device index -> (MIG UUID, profile) from `nvidia-smi -L`."""
    listing: dict[str, dict[str, tuple[str, str]]] = {}
    current: dict[str, tuple[str, str]] | None = None
    for line in text.splitlines():
        if gpu := _LIST_GPU.match(line):
            current = listing.setdefault(gpu["uuid"], {})
        elif (mig := _LIST_MIG.match(line)) and current is not None:
            current[mig["index"]] = (mig["uuid"], mig["profile"])
    return listing


def _vgpu(bus_id: str, fields: dict[str, str]) -> VgpuInstance | None:
    mdev = fields.get("MDEV UUID", "")
    if mdev in ("", "N/A"):
        return None
    gi = fields.get("GPU Instance ID", "")
    return VgpuInstance(
        pci_bus_id=bus_id,
        mdev_uuid=mdev,
        gpu_instance_id="" if gi == "N/A" else gi,
        vm_uuid=fields.get("VM UUID", ""),
        name=fields.get("vGPU Name", ""),
    )


def parse_nvidia_vgpu_query(text: str) -> list[VgpuInstance]:
    """Active vGPUs, by GPU PCI address and MIG GPU instance, from `nvidia-smi vgpu --query`."""
    vgpus: list[VgpuInstance] = []
    bus_id = ""
    fields: dict[str, str] | None = None

    def flush() -> None:
        if fields is not None and (vgpu := _vgpu(bus_id, fields)) is not None:
            vgpus.append(vgpu)

    for line in text.splitlines():
        if line.startswith("GPU "):
            flush()
            fields = None
            try:
                bus_id = normalize_pci_bus_id(line[4:])
            except ValueError as err:
                raise GpuDiscoveryError(f"nvidia-smi vgpu: {err}") from err
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:
            continue
        if key == "vGPU ID":
            if not bus_id:
                raise GpuDiscoveryError("nvidia-smi vgpu: a vGPU is listed before any GPU")
            flush()
            fields = {}
        elif fields is not None and key in _VGPU_KEYS and key not in fields:
            fields[key] = value.strip()
    flush()
    return vgpus
