"""The GPUs a compute unit can be given, labelled as CEEMS labels them."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

NVIDIA = "nvidia"
AMD = "amd"

_PCI_BUS_ID = re.compile(
    r"^\s*(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):"
    r"(?P<slot>[0-9a-fA-F]{1,2})\.(?P<function>[0-7])\s*$"
)


class GpuDiscoveryError(Exception):
    """GPUs could not be listed: the tool is missing, hung, failed or printed garbage."""


def normalize_pci_bus_id(text: str) -> str:
    """`0000:1b:00.0` from any spelling (`00000000:1B:00.0`, `1b:00.0`) of a PCI address."""
    match = _PCI_BUS_ID.match(text)
    if match is None:
        raise ValueError(f"not a PCI bus id: {text!r} (expected [domain:]bus:slot.function)")
    domain = int(match["domain"] or "0", 16)
    return (
        f"{domain:04x}:{int(match['bus'], 16):02x}:{int(match['slot'], 16):02x}.{match['function']}"
    )


def hindex_for(index: str) -> str:
    """CEEMS's `hindex` label without its hostname prefix: `/gpu-<index>`."""
    return f"/gpu-{index}"


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One assignable GPU: a whole GPU, an NVIDIA MIG instance or an AMD compute partition.

    `index` is CEEMS's global index: whole GPUs and instances numbered together in the
    vendor tool's order, a MIG-enabled GPU itself getting none (its instances do).
    `uuid` is the physical GPU's (NVIDIA UUID, AMD serial), also for its instances, and
    `instance_id` the MIG GPU instance id or AMD partition id ("" for a whole GPU).
    `share_of_parent` is the instance's fraction of the physical GPU: its SMs over the
    SMs of all instances of that GPU (MIG), or one over the number of partitions (AMD).
    """

    index: str
    hindex: str
    uuid: str
    instance_id: str = ""
    sm_count: float = 0.0
    vendor: str = NVIDIA
    pci_bus_id: str = ""
    share_of_parent: float = 1.0
    physical_index: int = 0  # position of the physical GPU in the tool's listing
    minor_number: str = ""  # N of /dev/nvidiaN, for gres.conf File= lines
    name: str = ""
    mig_index: str = ""  # the MIG device index `nvidia-smi -L` prints, to join its UUID
    mig_uuid: str = ""
    profile: str = ""  # MIG profile (3g.40gb) or AMD compute partition mode (CPX)
    vgpu_host: bool = False
    mdev_uuids: tuple[str, ...] = ()

    @property
    def is_instance(self) -> bool:
        """True for a MIG instance or AMD partition."""
        return self.instance_id != ""

    def with_index(self, index: str) -> GpuDevice:
        """This device renumbered (SLURM's order map), hindex following."""
        return replace(self, index=index, hindex=hindex_for(index))

    def plugin_ids(self) -> tuple[str, ...]:
        """IDs Kubernetes device plugins give this device, lower-cased.

        NVIDIA's plugin uses the GPU or MIG UUID; AMD's uses the PCI address.
        """
        if self.vendor == AMD:
            return (self.pci_bus_id.lower(),) if self.pci_bus_id else ()
        if self.is_instance:
            return (self.mig_uuid.lower(),) if self.mig_uuid else ()
        return (self.uuid.lower(),)
