"""The object unit collectors ask for each unit's GPU shares, built once per collector."""

from __future__ import annotations

import argparse
import functools
import logging
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from prometheus_client.metrics_core import Metric

from ceems.exporter.cgroups.unit import CgroupUnit
from ceems.exporter.collector import CollectorError
from ceems.exporter.gpu.devices import GpuDevice, GpuDiscoveryError
from ceems.exporter.gpu.discovery import discover_gpus
from ceems.exporter.gpu.gres import GresConfigError, GresLine, parse_gres_conf
from ceems.exporter.gpu.mapping import (
    SLURM_GPU_VARS,
    DomainXmlError,
    GpuOrderMapError,
    GpuShare,
    hostdev_gpu_shares,
    order_map_misses,
    parse_domain_hostdevs,
    parse_gpu_order_map,
    read_environ,
    slurm_gpu_shares,
)
from ceems.exporter.gpu.metrics import gpu_families
from ceems.exporter.gpu.podresources import PodResourcesError, kubelet_pod_gpus

log = logging.getLogger(__name__)

# amd-smi takes tens of seconds on MI300X nodes (CEEMS waits a minute too).
DISCOVERY_TIMEOUT_S = 60.0
# Re-listing vGPUs happens inside a scrape, which must finish well within its timeout.
REDISCOVERY_TIMEOUT_S = 10.0
KUBELET_TIMEOUT_S = 5.0

Rediscover = Callable[[], list[GpuDevice]]
PodGpus = Callable[[Sequence[GpuDevice]], dict[str, list[GpuShare]]]


class UnitGpuMapper:
    """GPU shares per unit for one resource manager.

    A unit's GPUs never change while it lives, so answers are cached per
    (cgrouphostname, uuid) until `forget` drops the unit. An unknown answer (environ or
    XML unreadable, kubelet down) is not cached and is asked again next scrape.
    """

    def __init__(
        self,
        manager: str,
        devices: Sequence[GpuDevice],
        procfs: Path = Path("/proc"),
        order_map: Mapping[str, str] | None = None,
        gres: Sequence[GresLine] = (),
        hostname: str = "",
        rediscover: Rediscover | None = None,
        pod_gpus: PodGpus | None = None,
    ) -> None:
        self.manager = manager
        self._devices = list(devices)
        self._procfs = procfs
        self._order_map = dict(order_map or {})
        self._gres = list(gres)
        self._hostname = hostname
        self._rediscover = rediscover
        self._pod_gpus = pod_gpus
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], list[GpuShare]] = {}
        self._pods: dict[str, list[GpuShare]] | None = None
        self._asked_kubelet = False
        self._rediscovered = False
        self._vgpus_stale = False

    @property
    def devices(self) -> list[GpuDevice]:
        """The devices units are mapped to."""
        return list(self._devices)

    def refresh(self) -> None:
        """Start of a scrape: the kubelet and the vGPU listing may be asked once again."""
        with self._lock:
            self._asked_kubelet = False
            self._rediscovered = False

    def shares(self, unit: CgroupUnit) -> list[GpuShare]:
        """The unit's GPU shares; [] when it holds none or they cannot be known yet."""
        key = (unit.cgrouphostname, unit.uuid)
        with self._lock:
            if self._vgpus_stale:
                self._rediscover_once()
            if key in self._cache:
                return self._cache[key]
            found = self._lookup(unit)
            if found is not None:
                self._cache[key] = found
            return found or []

    def forget(self, active: set[tuple[str, str]]) -> None:
        """Drop units that are gone; shares of the others change if they shared a GPU."""
        with self._lock:
            gone = [key for key in self._cache if key not in active]
            held = [item for key in gone for item in self._cache[key]]
            for key in gone:
                del self._cache[key]
            if self.manager == "k8s" and held:
                self._cache.clear()  # time-sliced shares are relative to the pods now sharing
            if any(item.device.mdev_uuids for item in held):
                self._vgpus_stale = True  # its mdevs may be gone: 1/len(mdevs) changes

    def families(
        self, hostname: str, shares: Mapping[tuple[str, str, str], Sequence[GpuShare]]
    ) -> list[Metric]:
        """The per-unit GPU metric families of this scrape."""
        return list(gpu_families(hostname, shares))

    def _lookup(self, unit: CgroupUnit) -> list[GpuShare] | None:
        if self.manager == "slurm":
            return self._slurm(unit)
        if self.manager == "libvirt":
            return self._libvirt(unit)
        if self.manager == "k8s":
            return self._k8s(unit)
        return []

    def _slurm(self, unit: CgroupUnit) -> list[GpuShare] | None:
        """From the first of the job's processes whose environment names its GPUs."""
        for pid in unit.pids:
            environ = read_environ(self._procfs, pid)
            if environ.get("SLURM_JOB_ID", unit.uuid) != unit.uuid:
                continue  # not started by this job's slurmstepd
            if any(environ.get(var) for var in SLURM_GPU_VARS):
                return slurm_gpu_shares(
                    environ, self._devices, self._order_map, self._gres, self._hostname
                )
        # Not cached: the batch step may not have started yet (only the extern step runs),
        # or the environments are unreadable (CAP_SYS_PTRACE is needed for other users').
        log.debug("no GPU variables in the job's environ", extra={"uuid": unit.uuid})
        return None

    def _libvirt(self, unit: CgroupUnit) -> list[GpuShare] | None:
        """From the domain XML's hostdevs; unknown mdevs trigger one vGPU re-listing."""
        xml_path = unit.properties.get("xml_path", "")
        if not xml_path:
            log.debug("domain without XML path", extra={"uuid": unit.uuid})
            return None
        try:
            hostdevs = parse_domain_hostdevs(Path(xml_path).read_text())
        except (OSError, DomainXmlError) as err:
            log.warning("domain XML unreadable", extra={"path": xml_path, "err": str(err)})
            return None
        known = {mdev for dev in self._devices for mdev in dev.mdev_uuids}
        if self._rediscover is not None and any(m not in known for m in hostdevs.mdev_uuids):
            if self._rediscovered:
                return None  # asked again next scrape, when re-listing is allowed again
            self._rediscover_once()
        return hostdev_gpu_shares(hostdevs, self._devices)

    def _rediscover_once(self) -> None:
        """List devices again (new vGPUs appear with new VMs), at most once per scrape."""
        if self._rediscover is None:
            self._vgpus_stale = False
            return
        if self._rediscovered:
            return
        self._rediscovered = True
        self._vgpus_stale = False
        try:
            self._devices = self._rediscover()
        except GpuDiscoveryError as err:
            log.warning("GPU re-listing failed", extra={"err": str(err)})
            return
        self._cache.clear()  # vGPU shares depend on how many vGPUs each GPU carries

    def _k8s(self, unit: CgroupUnit) -> list[GpuShare] | None:
        """From the kubelet, asked at most once per scrape and only on a cache miss."""
        if self._pod_gpus is None:
            return []
        if not self._asked_kubelet:
            self._asked_kubelet = True
            try:
                self._pods = self._pod_gpus(self._devices)
            except PodResourcesError as err:
                log.warning("pod resources unavailable", extra={"err": str(err)})
                self._pods = None
            else:
                # Time-sliced shares are relative to every pod holding the GPU: refresh all.
                self._cache = {key: self._pods.get(key[1], []) for key in self._cache}
        if self._pods is None:
            return None
        return self._pods.get(unit.uuid, [])


def _read_gres(path: Path) -> list[GresLine]:
    try:
        return parse_gres_conf(path.read_text())
    except FileNotFoundError:
        log.info("no gres.conf, GPU shards and MPS ignored", extra={"path": str(path)})
        return []
    except OSError as err:
        log.warning("gres.conf unreadable", extra={"path": str(path), "err": str(err)})
        return []


def build_gpu_mapper(
    manager: str, options: argparse.Namespace, sysfs: Path, procfs: Path
) -> UnitGpuMapper | None:
    """Discover the node's GPUs once; None when there are none or mapping is turned off."""
    gpu_type = getattr(options, "gpu_type", "") or ""
    socket_path = getattr(options, "k8s_kubelet_podresources_socket_file", "") or ""
    if gpu_type == "nogpu":
        return None
    if manager == "k8s" and not socket_path:
        log.info("pod GPU mapping off: no kubelet PodResources socket configured")
        return None
    if manager not in ("slurm", "libvirt", "k8s"):
        raise CollectorError(f"no GPU mapping for resource manager {manager!r}")
    discover = functools.partial(
        discover_gpus,
        gpu_type,
        sysfs,
        getattr(options, "gpu_nvidia_smi_path", "nvidia-smi"),
        getattr(options, "gpu_amd_smi_path", "amd-smi"),
        getattr(options, "gpu_rocm_smi_path", "rocm-smi"),
    )
    try:
        devices = discover(DISCOVERY_TIMEOUT_S)
    except GpuDiscoveryError as err:
        raise CollectorError(f"--collector.{manager}: GPU discovery failed: {err}") from err
    if not devices:
        return None
    for dev in devices:
        log.debug(
            "GPU device", extra={"index": dev.index, "uuid": dev.uuid, "gpuiid": dev.instance_id}
        )
    if manager == "slurm":
        try:
            order_map = parse_gpu_order_map(getattr(options, "slurm_gpu_order_map", "") or "")
            gres = _read_gres(
                Path(getattr(options, "slurm_gres_config_file", "/etc/slurm/gres.conf"))
            )
        except (GpuOrderMapError, GresConfigError) as err:
            raise CollectorError(f"--collector.slurm: {err}") from err
        if misses := order_map_misses(devices, order_map):
            log.warning("GPU order map names no device", extra={"entries": ",".join(misses)})
        return UnitGpuMapper(
            manager, devices, procfs, order_map, gres, hostname=socket.gethostname()
        )
    if manager == "libvirt":
        return UnitGpuMapper(
            manager, devices, procfs, rediscover=lambda: discover(REDISCOVERY_TIMEOUT_S)
        )
    pod_logs_dir = Path(getattr(options, "k8s_pod_logs_dir", "/var/log/pods"))
    return UnitGpuMapper(
        manager,
        devices,
        procfs,
        pod_gpus=lambda devs: kubelet_pod_gpus(socket_path, devs, KUBELET_TIMEOUT_S, pod_logs_dir),
    )
