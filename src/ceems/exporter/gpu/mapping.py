"""Which GPUs a SLURM job or a libvirt VM holds, and what share of each."""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ceems.exporter.gpu.devices import GpuDevice, normalize_pci_bus_id
from ceems.exporter.gpu.gres import GresLine, device_key, parse_gres_conf, shares_per_device

__all__ = [
    "DomainHostdevs",
    "DomainXmlError",
    "GpuOrderMapError",
    "GpuShare",
    "hostdev_gpu_shares",
    "libvirt_gpu_shares",
    "merge_shares",
    "order_map_misses",
    "parse_domain_hostdevs",
    "parse_gpu_order_map",
    "parse_gres_conf",
    "read_environ",
    "slurm_gpu_shares",
    "slurm_index_map",
]

log = logging.getLogger(__name__)

_ORDER_TARGET = re.compile(r"^\d+(?:\.\d+)?$")
# CUDA < 11.1 style MIG ids: MIG-GPU-<gpu uuid>/<gpu instance>/<compute instance>
_OLD_MIG_ID = re.compile(r"^MIG-(?P<gpu>GPU-[0-9a-fA-F-]+)/(?P<gi>\d+)/(?P<ci>\d+)$")
SLURM_GPU_VARS = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")


class GpuOrderMapError(ValueError):
    """--collector.slurm.gpu-order-map has an entry that is not `<slurm>:<gpu>[.<instance>]`."""


class DomainXmlError(ValueError):
    """A libvirt domain XML that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class GpuShare:
    """A device a unit holds and the fraction of the physical GPU that represents."""

    device: GpuDevice
    share: float


def merge_shares(shares: Iterable[GpuShare]) -> list[GpuShare]:
    """One share per device, summing repeats (a VM with two vGPUs on one GPU)."""
    merged: dict[tuple[str, str], GpuShare] = {}
    for item in shares:
        key = device_key(item.device)
        if key in merged:
            item = GpuShare(merged[key].device, merged[key].share + item.share)
        merged[key] = item
    return list(merged.values())


def parse_gpu_order_map(text: str) -> dict[str, str]:
    """SLURM GPU index -> `<smi index>[.<MIG GPU instance id>]` from `0:1,1:0.3,...`."""
    order: dict[str, str] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        slurm, sep, target = (part.strip() for part in entry.partition(":"))
        if not sep or not slurm.isdigit() or not _ORDER_TARGET.match(target):
            raise GpuOrderMapError(
                f"bad GPU order map entry {entry.strip()!r}: expected "
                "<slurm_index>:<smi_index>[.<mig_gpu_instance_id>], e.g. 0:1 or 4:2.5"
            )
        if slurm in order:
            raise GpuOrderMapError(f"GPU order map maps SLURM index {slurm} twice")
        order[slurm] = target
    return order


def _matches(device: GpuDevice, target: str) -> bool:
    physical, _, instance = target.partition(".")
    if device.physical_index != int(physical):
        return False
    return device.instance_id == instance if instance else not device.is_instance


def slurm_index_map(
    devices: Sequence[GpuDevice], order_map: Mapping[str, str]
) -> dict[str, GpuDevice]:
    """SLURM's GPU index -> device, renumbered by the order map as CEEMS's ReindexGPUs does.

    Devices the map does not name keep the index discovery gave them.
    """
    by_index: dict[str, GpuDevice] = {}
    mapped: set[tuple[str, str]] = set()
    for slurm, target in order_map.items():
        found = next((d for d in devices if _matches(d, target)), None)
        if found is None:
            continue  # reported once, when the mapper is built (order_map_misses)
        by_index[slurm] = found.with_index(slurm)
        mapped.add(device_key(found))
    for dev in devices:
        if device_key(dev) not in mapped:
            by_index.setdefault(dev.index, dev)
    return by_index


def order_map_misses(devices: Sequence[GpuDevice], order_map: Mapping[str, str]) -> list[str]:
    """Order map entries (`<slurm>:<gpu>`) that name no discovered device."""
    return [
        f"{slurm}:{target}"
        for slurm, target in order_map.items()
        if not any(_matches(d, target) for d in devices)
    ]


def read_environ(procfs: Path, pid: int) -> dict[str, str]:
    """A process's environment from `<procfs>/<pid>/environ`; {} if it is gone or unreadable."""
    try:
        raw = (procfs / str(pid) / "environ").read_bytes()
    except OSError as err:  # exited (ENOENT, ESRCH) or not ours to read (EACCES)
        log.debug("environ unreadable", extra={"pid": pid, "err": str(err)})
        return {}
    environ = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep and key:
            environ[key] = value
    return environ


def _cuda_visible(
    entries: list[str], by_key: Mapping[tuple[str, str], GpuDevice]
) -> list[GpuDevice]:
    """Devices named by UUID in CUDA_VISIBLE_DEVICES; bare ordinals are cgroup-relative."""
    by_uuid = {}
    for key, dev in by_key.items():
        if dev.mig_uuid:
            by_uuid[dev.mig_uuid.lower()] = dev
        elif not dev.is_instance:
            by_uuid[key[0].lower()] = dev
    found = []
    for entry in entries:
        old = _OLD_MIG_ID.match(entry)
        named = by_key.get((old["gpu"], old["gi"])) if old else by_uuid.get(entry.lower())
        if named is not None:
            found.append(named)
    return found


def _sharing_factor(
    environ: Mapping[str, str],
    dev: GpuDevice,
    n_gpus: int,
    shard_counts: Mapping[tuple[str, str], float],
) -> float:
    """The fraction of the device a sharded or MPS job holds; 1 for an exclusive GPU."""
    if shards := environ.get("SLURM_SHARDS_ON_NODE", "").strip():
        capacity = shard_counts.get(device_key(dev), 0.0)
        if shards.isdigit() and capacity > 0:
            return min(1.0, int(shards) / n_gpus / capacity)
        log.debug("shard capacity unknown", extra={"shards": shards, "gpu": dev.uuid})
    if percent := environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "").strip():
        try:
            value = float(percent)
        except ValueError:
            value = 0.0
        if 0 < value <= 100:
            return value / 100
        log.debug("bad MPS percentage", extra={"value": percent})
    return 1.0


def slurm_gpu_shares(
    environ: Mapping[str, str],
    devices: Sequence[GpuDevice],
    order_map: Mapping[str, str],
    gres: Sequence[GresLine],
    hostname: str = "",
) -> list[GpuShare]:
    """GPU shares of a job from one of its processes' environment.

    GPUs come from SLURM_JOB_GPUS, else SLURM_STEP_GPUS (CEEMS prefers the job's list:
    since SLURM 23.11 the step's is not always a subset of it), else the GPU and MIG
    UUIDs in CUDA_VISIBLE_DEVICES. A MIG instance counts for its share of the GPU; a job
    holding shards (SLURM_SHARDS_ON_NODE, spread over its GPUs, over the shards gres.conf
    gives each GPU) or an MPS thread percentage holds that fraction of it.
    """
    by_index = slurm_index_map(devices, order_map)
    held: list[GpuDevice] = []
    for var in SLURM_GPU_VARS:
        entries = [e.strip() for e in environ.get(var, "").split(",") if e.strip()]
        if not entries:
            continue
        if var == "CUDA_VISIBLE_DEVICES":
            held = _cuda_visible(entries, {device_key(d): d for d in by_index.values()})
        else:
            held = [by_index[e] for e in entries if e in by_index]
            if len(held) < len(entries):
                log.debug("unknown GPU index", extra={"var": var, "value": environ[var]})
        break
    held = list({device_key(dev): dev for dev in held}.values())  # "0,0" is still one GPU
    if not held:
        return []
    shard_counts = shares_per_device(gres, "shard", hostname, devices)
    return merge_shares(
        GpuShare(dev, dev.share_of_parent * _sharing_factor(environ, dev, len(held), shard_counts))
        for dev in held
    )


@dataclass(frozen=True, slots=True)
class DomainHostdevs:
    """Host devices of a libvirt domain: passed-through PCI addresses and vGPU mdev UUIDs."""

    pci_bus_ids: tuple[str, ...] = ()
    mdev_uuids: tuple[str, ...] = ()


def parse_domain_hostdevs(domain_xml: str) -> DomainHostdevs:
    """The `<hostdev type="pci">` addresses and `<hostdev type="mdev">` UUIDs of a domain."""
    try:
        root = ET.fromstring(domain_xml)
    except ET.ParseError as err:
        raise DomainXmlError(f"malformed domain XML: {err}") from err
    pci, mdevs = [], []
    for hostdev in root.iterfind("devices/hostdev"):
        address = hostdev.find("source/address")
        if address is None:
            continue
        if hostdev.get("type") == "pci":
            parts = [address.get(k, "0") for k in ("domain", "bus", "slot", "function")]
            try:
                domain, bus, slot, function = (int(p, 16) for p in parts)
            except ValueError as err:
                raise DomainXmlError(f"hostdev PCI address {parts}: {err}") from err
            pci.append(normalize_pci_bus_id(f"{domain:x}:{bus:x}:{slot:x}.{function:x}"))
        elif hostdev.get("type") == "mdev" and address.get("uuid"):
            mdevs.append(address.get("uuid", "").lower())
    return DomainHostdevs(tuple(pci), tuple(mdevs))


def hostdev_gpu_shares(hostdevs: DomainHostdevs, devices: Sequence[GpuDevice]) -> list[GpuShare]:
    """Shares of the GPUs a domain holds: a passed-through GPU whole, a vGPU in part.

    A vGPU holds its GPU (or MIG instance) divided by the number of vGPUs created on it,
    as CEEMS does (testdata at 04adf47: two vGPUs on a 0.2 instance give 0.1 each).
    """
    shares: list[GpuShare] = []
    for bus_id in hostdevs.pci_bus_ids:
        shares.extend(
            GpuShare(d, 1.0) for d in devices if not d.is_instance and d.pci_bus_id == bus_id
        )
    for mdev in hostdevs.mdev_uuids:
        dev = next((d for d in devices if mdev in d.mdev_uuids), None)
        if dev is None:
            log.debug("mdev on no known GPU", extra={"mdev": mdev})
            continue
        shares.append(GpuShare(dev, dev.share_of_parent / len(dev.mdev_uuids)))
    return merge_shares(shares)


def libvirt_gpu_shares(domain_xml: str, devices: Sequence[GpuDevice]) -> list[GpuShare]:
    """GPU shares of a libvirt domain from its XML definition."""
    return hostdev_gpu_shares(parse_domain_hostdevs(domain_xml), devices)
