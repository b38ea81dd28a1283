"""Linux CPU list syntax (`0-3,8,10-11`), as in cpuset.cpus."""

from __future__ import annotations


def count_cpus(cpulist: str) -> int:
    """Number of CPUs in a cpulist; an empty list is 0."""
    total = 0
    for part in cpulist.strip().split(","):
        if not part:
            continue
        first, sep, last = part.partition("-")
        if not first.isdigit() or (sep and not last.isdigit()):
            raise ValueError(f"bad cpulist {cpulist.strip()!r}")
        total += int(last) - int(first) + 1 if sep else 1
    return total
