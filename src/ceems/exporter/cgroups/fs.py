"""The cgroup filesystem: v1 or v2, and where each controller's files live."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Version = Literal["v1", "v2"]


class CgroupError(ValueError):
    """The cgroup filesystem is missing or not what the options say."""


def detect_version(root: Path, force: str = "") -> Version:
    """v2 when `root` is a unified hierarchy (it has cgroup.controllers), else v1.

    A hybrid host (v1 controllers plus a v2 tree at `unified/`) counts as v1, because the
    resource controllers that matter (cpu, memory, blkio) are bound to v1 there.
    """
    if force:
        if force not in ("v1", "v2"):
            raise CgroupError(f"--collector.cgroups.force-version: {force!r} is not v1 or v2")
        return "v1" if force == "v1" else "v2"
    if not root.is_dir():
        raise CgroupError(f"cgroup filesystem {root} does not exist")
    return "v2" if (root / "cgroup.controllers").is_file() else "v1"


def _v1_controller_dirs(root: Path) -> dict[str, Path]:
    """Controller name -> hierarchy directory; co-mounted ones (`cpu,cpuacct`) serve each name."""
    dirs: dict[str, Path] = {}
    if not root.is_dir():
        return dirs
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():
            continue
        for name in entry.name.split(","):
            # Prefer the real mount over its symlink (`cpuacct -> cpu,cpuacct`): same files.
            if name not in dirs or not entry.is_symlink():
                dirs[name] = entry
    return dirs


@dataclass(frozen=True, slots=True)
class CgroupFS:
    """Resolves (controller, unit path) to a directory for either cgroup version."""

    root: Path
    version: Version
    _controllers: dict[str, Path] = field(default_factory=dict, compare=False)

    @classmethod
    def open(cls, root: Path, force_version: str = "") -> CgroupFS:
        """Detect the version and, for v1, the controller hierarchies."""
        version = detect_version(root, force_version)
        controllers = _v1_controller_dirs(root) if version == "v1" else {}
        return cls(root, version, controllers)

    def controller_root(self, controller: str) -> Path | None:
        """Top of a v1 controller's hierarchy (None if not mounted); the root for v2."""
        if self.version == "v2":
            return self.root
        return self._controllers.get(controller)

    def path(self, controller: str, rel: str) -> Path | None:
        """Directory of unit `rel` in `controller`'s hierarchy; None if not mounted."""
        top = self.controller_root(controller)
        return None if top is None else top / rel
