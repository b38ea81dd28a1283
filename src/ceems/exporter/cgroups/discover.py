"""Finding compute units in the cgroup tree, one layout per resource manager."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ceems.exporter.cgroups.fs import CgroupFS
from ceems.exporter.cgroups.stats import read_small_file
from ceems.exporter.cgroups.unit import CgroupUnit

# (match, rel) -> unit, or None to skip this directory (not a unit after all).
UnitBuilder = Callable[[re.Match[str], str], CgroupUnit | None]


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a manager's units live: a pattern over paths relative to the hierarchy root.

    The walk starts at `tops` (directories directly under the root whose name matches
    `top_pattern`) and goes at most `max_depth` levels down; a matching directory is a unit
    and is not descended into, so job steps and VM vcpu threads fold into their unit.
    """

    manager: str
    top_pattern: re.Pattern[str]
    unit_pattern: re.Pattern[str]
    max_depth: int
    build: UnitBuilder


def walk_units(root: Path, layout: Layout) -> Iterator[CgroupUnit]:
    """Units of `layout` under hierarchy `root`, in a stable (sorted) order."""
    try:
        tops = sorted(e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return
    stack = [(name, 1) for name in reversed(tops) if layout.top_pattern.fullmatch(name)]
    while stack:
        rel, depth = stack.pop()
        match = layout.unit_pattern.fullmatch(rel)
        if match is not None:
            unit = layout.build(match, rel)
            if unit is not None:
                yield unit
            continue
        if depth >= layout.max_depth:
            continue
        try:
            children = sorted(
                e.name for e in os.scandir(root / rel) if e.is_dir(follow_symlinks=False)
            )
        except (FileNotFoundError, NotADirectoryError):  # removed while we walk
            continue
        stack.extend((f"{rel}/{name}", depth + 1) for name in reversed(children))


def first_pid(directory: Path) -> int | None:
    """Any process in the cgroup or its descendants, or None: a unit without one is stale."""
    for current, _, files in os.walk(directory):
        if "cgroup.procs" in files:
            try:
                text = Path(current, "cgroup.procs").read_text()
            except OSError:
                continue
            first = text.split(maxsplit=1)
            if first:
                return int(first[0])
    return None


def all_pids(directory: Path) -> tuple[int, ...]:
    """Every process in the cgroup and its descendants."""
    pids: list[int] = []
    for current, _, files in os.walk(directory):
        if "cgroup.procs" in files:
            try:
                pids.extend(int(p) for p in Path(current, "cgroup.procs").read_text().split())
            except OSError:
                continue
    return tuple(pids)


def is_populated(fs: CgroupFS, rel: str, active_subsystem: str) -> bool:
    """Whether any process is left in the unit (v2: cgroup.events, v1: a procs walk)."""
    if fs.version == "v2":
        try:
            for line in read_small_file(f"{fs.root}/{rel}/cgroup.events").splitlines():
                if line.startswith("populated "):
                    return line.split()[1] == "1"
        except FileNotFoundError:
            return False
        return first_pid(fs.root / rel) is not None
    directory = fs.path(active_subsystem, rel)
    return directory is not None and first_pid(directory) is not None


def unit_root(fs: CgroupFS, active_subsystem: str) -> Path | None:
    """The hierarchy to walk: the root (v2) or the active subsystem's (v1)."""
    return fs.controller_root(active_subsystem)


def discover(fs: CgroupFS, layout: Layout, active_subsystem: str) -> list[CgroupUnit]:
    """Live units of one manager; stale ones (no process left) are dropped."""
    root = unit_root(fs, active_subsystem)
    if root is None:
        raise FileNotFoundError(f"cgroup v1 subsystem {active_subsystem!r} not under {fs.root}")
    return [u for u in walk_units(root, layout) if is_populated(fs, u.rel, active_subsystem)]
