"""A compute unit found in the cgroup tree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CgroupUnit:
    """One job, VM, pod or user session, as a cgroup with the processes inside it.

    `rel` is the unit's cgroup path relative to a hierarchy root (the same in every v1
    controller); `pids` are the processes of the unit's cgroup and all its descendants;
    `properties` carries manager-specific facts (libvirt: `instance`; k8s: `qos`).
    """

    manager: str
    uuid: str
    rel: str
    cgrouphostname: str = ""
    pids: tuple[int, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)
