"""Cgroup layouts of each resource manager: SLURM, libvirt, Kubernetes and user sessions."""

from __future__ import annotations

import logging
import pwd
import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from ceems.exporter.cgroups.discover import Layout
from ceems.exporter.cgroups.fs import CgroupFS
from ceems.exporter.cgroups.unit import CgroupUnit

log = logging.getLogger(__name__)

_SYSTEMD_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def systemd_unescape(name: str) -> str:
    """`instance\\x2d00000001` -> `instance-00000001` (systemd.unit(5) escaping)."""
    return _SYSTEMD_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name)


def slurm_layout() -> Layout:
    """Jobs of one or several slurmd daemons, v2 (systemd scope) or v1 (slurm[_host])."""
    pattern = re.compile(
        r"system\.slice/(?:(?P<v2host>[^/]+)_)?slurmstepd\.scope/job_(?P<v2id>\d+)"
        r"|slurm(?:_(?P<v1host>[^/]+))?/uid_\d+/job_(?P<v1id>\d+)"
    )

    def build(match: re.Match[str], rel: str) -> CgroupUnit:
        job = match["v2id"] or match["v1id"]
        host = match["v2host"] or match["v1host"] or ""
        return CgroupUnit("slurm", job, rel, cgrouphostname=host)

    return Layout("slurm", re.compile(r"system\.slice|slurm(_.+)?"), pattern, 3, build)


@dataclass(eq=False)
class LibvirtUuidResolver:
    """Domain UUID of an instance from its XML, cached while its cgroup exists.

    The persistent definition in `xml_dir` is preferred; OpenStack and transient domains
    often have only the runtime copy in `runtime_dir`, which wraps the domain in
    `<domstatus>`.
    """

    xml_dir: Path
    runtime_dir: Path
    _cache: dict[str, tuple[str, Path]] = field(default_factory=dict)
    _warned: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def resolve(self, name: str) -> tuple[str, Path] | None:
        """(uuid, xml path) of domain `name`, or None if no readable XML names it."""
        with self._lock:
            if name in self._cache:
                return self._cache[name]
        for directory in (self.xml_dir, self.runtime_dir):
            path = directory / f"{name}.xml"
            try:
                root = ET.parse(path).getroot()
            except (OSError, ET.ParseError):
                continue
            uuid = root.findtext("uuid") or root.findtext("domain/uuid")
            if uuid:
                with self._lock:
                    self._cache[name] = (uuid.strip(), path)
                return uuid.strip(), path
        if name not in self._warned:
            self._warned.add(name)
            log.warning(
                "libvirt domain has no readable XML",
                extra={"instance": name, "dirs": f"{self.xml_dir},{self.runtime_dir}"},
            )
        return None

    def forget_except(self, names: set[str]) -> None:
        """Drop identities of instances whose cgroup is gone."""
        with self._lock:
            for name in set(self._cache) - names:
                del self._cache[name]
            self._warned &= names


def libvirt_layout(resolver: LibvirtUuidResolver) -> Layout:
    """QEMU domains under machine.slice (systemd) or machine/ (no systemd)."""
    pattern = re.compile(
        r"machine\.slice/machine-qemu\\x2d\d+\\x2d(?P<scoped>[^/]+)\.scope"
        r"|machine/qemu-\d+-(?P<plain>[^/]+)\.libvirt-qemu"
    )

    def build(match: re.Match[str], rel: str) -> CgroupUnit | None:
        name = systemd_unescape(match["scoped"]) if match["scoped"] else match["plain"]
        resolved = resolver.resolve(name)
        if resolved is None:
            return None
        uuid, xml_path = resolved
        return CgroupUnit(
            "libvirt", uuid, rel, properties={"instance": name, "xml_path": str(xml_path)}
        )

    return Layout("libvirt", re.compile(r"machine(\.slice)?"), pattern, 2, build)


def k8s_layout() -> Layout:
    """Pods of every QoS class, systemd (kubepods.slice) or cgroupfs (kubepods) driver."""
    pattern = re.compile(
        r"kubepods\.slice/(?:kubepods-(?P<sqos>burstable|besteffort)\.slice/)?"
        r"kubepods(?:-(?:burstable|besteffort))?-pod(?P<suid>[0-9a-fA-F_]+)\.slice"
        r"|kubepods/(?:(?P<pqos>burstable|besteffort)/)?pod(?P<puid>[0-9a-fA-F-]+)"
    )

    def build(match: re.Match[str], rel: str) -> CgroupUnit:
        # The systemd driver cannot use '-' inside a slice name, so kubelet writes '_'.
        uid = match["suid"].replace("_", "-") if match["suid"] else match["puid"]
        qos = match["sqos"] or match["pqos"] or "guaranteed"
        return CgroupUnit("k8s", uid, rel, properties={"qos": qos})

    return Layout("k8s", re.compile(r"kubepods(\.slice)?"), pattern, 3, build)


def k8s_cpus(weight_or_shares: str, version: str) -> float:
    """CPUs a pod requested, inverting kubelet's shares (v1) or weight (v2) formula.

    kubelet sets cpu.shares = millicores * 1024 / 1000, and on v2 maps shares to weight as
    1 + (shares - 2) * 9999 / 262142 (kubernetes pkg/kubelet/cm, CpuSharesToCpuWeight).
    """
    value = float(weight_or_shares)
    shares = value if version == "v1" else (value - 1) * 262142 / 9999 + 2
    return round(shares / 1024, 3)


def pod_cpus(fs: CgroupFS, unit: CgroupUnit) -> float | None:
    """CPUs the pod requested, from cpu.weight (v2) or cpu.shares (v1)."""
    if fs.version == "v2":
        path = fs.root / unit.rel / "cpu.weight"
    else:
        top = fs.path("cpu", unit.rel)
        if top is None:
            return None
        path = top / "cpu.shares"
    try:
        return k8s_cpus(path.read_text(), fs.version)
    except FileNotFoundError:
        return None


def user_name(uid: int) -> str:
    """Login name of `uid`, or the number itself when the user is unknown."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def userslice_layout() -> Layout:
    """Each logged-in user's user-<uid>.slice, named by the user's login name."""
    pattern = re.compile(r"user\.slice/user-(?P<uid>\d+)\.slice")

    def build(match: re.Match[str], rel: str) -> CgroupUnit:
        uid = int(match["uid"])
        return CgroupUnit("userslice", user_name(uid), rel, properties={"uid": str(uid)})

    return Layout("userslice", re.compile(r"user\.slice"), pattern, 2, build)
