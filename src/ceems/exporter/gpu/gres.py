"""SLURM gres.conf: which GPUs are shared (shards, MPS) and how many shares each holds."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ceems.exporter.gpu.devices import GpuDevice

_NVIDIA_DEVICE = re.compile(r"^/dev/nvidia(\d+)$")
_COUNT = re.compile(r"^(\d+)([kKmMgG]?)$")
_SUFFIX = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


class GresConfigError(ValueError):
    """A gres.conf line SLURM itself would reject: bad range, count or key."""


@dataclass(frozen=True, slots=True)
class GresLine:
    """One `Name=` line of gres.conf, device ranges expanded."""

    name: str  # gpu, shard, mps, ... (lower-cased)
    node_names: tuple[str, ...] = ()  # empty: every node reading the file
    type: str = ""
    files: tuple[str, ...] = ()
    count: int | None = None


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: `a[1,2],b` -> [`a[1,2]`, `b`]."""
    parts, depth, start = [], 0, 0
    for pos, char in enumerate(text):
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            parts.append(text[start:pos])
            start = pos + 1
    parts.append(text[start:])
    return [p for p in (part.strip() for part in parts) if p]


def _expand_range(body: str, expr: str) -> list[str]:
    values: list[str] = []
    for item in body.split(","):
        low, sep, high = item.strip().partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise GresConfigError(f"bad range {item!r} in {expr!r}")
        width = len(low) if low.startswith("0") else 0  # node[01-10] keeps its zero padding
        end = int(high) if sep else int(low)
        if end < int(low):
            raise GresConfigError(f"descending range {item!r} in {expr!r}")
        values.extend(f"{n:0{width}d}" for n in range(int(low), end + 1))
    return values


def expand_hostlist(expr: str) -> list[str]:
    """SLURM's bracket notation expanded: `gpu[01-02],cpu1` -> gpu01, gpu02, cpu1."""
    names = []
    for part in _split_top_level(expr):
        open_at = part.find("[")
        if open_at < 0:
            names.append(part)
            continue
        close_at = part.find("]", open_at)
        if close_at < 0:
            raise GresConfigError(f"unclosed '[' in {expr!r}")
        head, body, tail = part[:open_at], part[open_at + 1 : close_at], part[close_at + 1 :]
        rests = expand_hostlist(tail) if tail else [""]
        names.extend(head + value + rest for value in _expand_range(body, expr) for rest in rests)
    return names


def _count(value: str, line: str) -> int:
    match = _COUNT.match(value)
    if match is None:
        raise GresConfigError(f"bad Count={value!r} in gres.conf line {line!r}")
    return int(match[1]) * _SUFFIX[match[2].lower()]


def parse_gres_conf(text: str) -> list[GresLine]:
    """The `Name=` lines of gres.conf; global lines such as `AutoDetect=nvml` are skipped."""
    lines = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields: dict[str, str] = {}
        for word in line.split():
            key, sep, value = word.partition("=")
            if not sep:
                raise GresConfigError(f"gres.conf word {word!r} is not Key=Value in {raw!r}")
            fields[key.lower()] = value
        if "name" not in fields:
            continue
        files = fields.get("file") or fields.get("multiplefiles") or ""
        lines.append(
            GresLine(
                name=fields["name"].lower(),
                node_names=tuple(expand_hostlist(fields.get("nodename", ""))),
                type=fields.get("type", ""),
                files=tuple(expand_hostlist(files)),
                count=_count(fields["count"], raw) if "count" in fields else None,
            )
        )
    return lines


def _applies(line: GresLine, hostname: str) -> bool:
    if not line.node_names:
        return True
    short = hostname.split(".", 1)[0]
    return hostname in line.node_names or short in line.node_names


def device_key(device: GpuDevice) -> tuple[str, str]:
    """A device's identity independent of SLURM's renumbering: (GPU uuid, instance id)."""
    return (device.uuid, device.instance_id)


def shares_per_device(
    lines: Sequence[GresLine], name: str, hostname: str, devices: Sequence[GpuDevice]
) -> dict[tuple[str, str], float]:
    """How many `name` (shard or mps) units each device holds on this host.

    A Count without File is spread evenly over the node's GPUs (SLURM's gres.conf
    documentation: `Name=shard Count=32` on four GPUs gives each eight); a Count with
    File is spread evenly over the listed /dev/nvidiaN devices.
    """
    counts: dict[tuple[str, str], float] = {}
    for line in lines:
        if line.name != name or line.count is None or not _applies(line, hostname):
            continue
        if line.files:
            minors = {m[1] for f in line.files if (m := _NVIDIA_DEVICE.match(f))}
            targets = [d for d in devices if not d.is_instance and d.minor_number in minors]
            spread = max(len(minors), 1)
        else:
            targets = list(devices)
            spread = max(len(targets), 1)
        for dev in targets:
            counts[device_key(dev)] = line.count / spread
    return counts
