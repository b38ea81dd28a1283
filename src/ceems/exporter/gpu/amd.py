"""Parsers for AMD's `amd-smi static --json` and `rocm-smi --json` (or `--csv`) listings."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ceems.exporter.gpu.devices import (
    AMD,
    GpuDevice,
    GpuDiscoveryError,
    hindex_for,
    normalize_pci_bus_id,
)

log = logging.getLogger(__name__)

# Compute partition modes that split one GPU into several devices (SPX is the whole GPU).
# https://rocm.blogs.amd.com/software-tools-optimization/compute-memory-modes/README.html
PARTITION_MODES = ("dpx", "tpx", "qpx", "cpx")


@dataclass(frozen=True, slots=True)
class _AmdEntry:
    """One device as the tool lists it: a whole GPU or one partition of it."""

    index: str
    serial: str
    bus_id: str
    name: str
    compute_units: float
    mode: str
    partition_id: str


def _amd_devices(tool: str, entries: list[_AmdEntry]) -> list[GpuDevice]:
    """Devices indexed as the tool numbers them; partitions share their GPU equally."""
    partitioned = [e for e in entries if e.mode.lower() in PARTITION_MODES]
    per_gpu = Counter(e.serial for e in partitioned)
    physical: dict[str, int] = {}
    seen: Counter[str] = Counter()
    devices = []
    for entry in entries:
        position = physical.setdefault(entry.serial, len(physical))
        is_partition = entry.mode.lower() in PARTITION_MODES
        if not is_partition and seen[entry.serial]:
            log.warning("duplicate GPU skipped", extra={"tool": tool, "serial": entry.serial})
            continue
        instance_id = (entry.partition_id or str(seen[entry.serial])) if is_partition else ""
        seen[entry.serial] += 1
        devices.append(
            GpuDevice(
                index=entry.index,
                hindex=hindex_for(entry.index),
                uuid=entry.serial,
                instance_id=instance_id,
                sm_count=entry.compute_units,
                vendor=AMD,
                pci_bus_id=entry.bus_id,
                share_of_parent=1.0 / per_gpu[entry.serial] if is_partition else 1.0,
                physical_index=position,
                name=entry.name,
                profile=entry.mode.upper() if is_partition else "",
            )
        )
    return devices


def _bus_id(tool: str, text: str) -> str:
    try:
        return normalize_pci_bus_id(text)
    except ValueError as err:
        raise GpuDiscoveryError(f"{tool}: {err}") from err


def _known(value: Any) -> str:
    text = "" if value is None else str(value).strip()
    return "" if text.upper() == "N/A" else text


def _count(value: Any) -> float:
    try:
        return float(_known(value) or 0)
    except ValueError:
        return 0.0


def _section(gpu: dict[str, Any], key: str) -> dict[str, Any]:
    value = gpu.get(key)
    return value if isinstance(value, dict) else {}


def parse_amd_smi_static_json(text: str) -> list[GpuDevice]:
    """Devices from `amd-smi static -a -B -b -p --json`, partitions as instances.

    amd-smi lists each compute partition as its own GPU with the board serial of the
    physical GPU; CEEMS keeps amd-smi's GPU number as `index` and the partition id as
    `gpuiid`.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise GpuDiscoveryError(f"amd-smi printed malformed JSON: {err}") from err
    if isinstance(data, dict):  # amd-smi >= 24.7 wraps the list in {"gpu_data": [...]}
        data = data.get("gpu_data")
    if not isinstance(data, list) or not all(isinstance(g, dict) for g in data):
        raise GpuDiscoveryError("amd-smi JSON is not a list of GPU objects")
    entries = []
    for position, gpu in enumerate(sorted(data, key=lambda g: _count(g.get("gpu")))):
        board, bus = _section(gpu, "board"), _section(gpu, "bus")
        partition = _section(gpu, "partition")
        bus_id = _bus_id("amd-smi", _known(bus.get("bdf")))
        mode = _known(partition.get("compute_partition") or partition.get("accelerator_partition"))
        entries.append(
            _AmdEntry(
                index=_known(gpu.get("gpu")) or str(position),
                serial=_known(board.get("product_serial")) or bus_id,
                bus_id=bus_id,
                name=_known(board.get("product_name")),
                compute_units=_count(_section(gpu, "asic").get("num_compute_units")),
                mode=mode,
                partition_id=_known(partition.get("partition_id")),
            )
        )
    return _amd_devices("amd-smi", entries)


def _rocm_cards(text: str) -> dict[str, dict[str, Any]]:
    """`cardN` -> its fields, from rocm-smi's JSON or (older releases) CSV output."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise GpuDiscoveryError(f"rocm-smi printed malformed JSON: {err}") from err
        if not isinstance(data, dict):
            raise GpuDiscoveryError("rocm-smi JSON is not an object of cards")
        return {k: v for k, v in data.items() if k.startswith("card") and isinstance(v, dict)}
    rows = list(csv.DictReader(io.StringIO(stripped)))
    if not rows or "device" not in rows[0]:
        raise GpuDiscoveryError("rocm-smi output is neither JSON nor CSV with a device column")
    return {
        row["device"]: dict(row) for row in rows if (row.get("device") or "").startswith("card")
    }


def parse_rocm_smi(text: str) -> list[GpuDevice]:
    """Devices from `rocm-smi --showproductname --showserial --showbus --showcomputepartition`."""
    cards = _rocm_cards(text)

    def card_number(name: str) -> int:
        digits = re.sub(r"\D", "", name)
        return int(digits) if digits else 0

    entries = []
    for position, card in enumerate(sorted(cards, key=card_number)):
        fields = {k.lower(): v for k, v in cards[card].items()}
        bus_id = _bus_id("rocm-smi", _known(fields.get("pci bus")))
        entries.append(
            _AmdEntry(
                index=str(position),
                serial=_known(fields.get("serial number")) or bus_id,
                bus_id=bus_id,
                name=_known(fields.get("card series") or fields.get("card vendor")),
                compute_units=0.0,  # rocm-smi does not report compute units
                mode=_known(fields.get("compute partition")),
                partition_id="",
            )
        )
    return _amd_devices("rocm-smi", entries)


def parse_rocm_smi_json(text: str) -> list[GpuDevice]:
    """Devices from rocm-smi's `--json` output (CSV is accepted too, see parse_rocm_smi)."""
    return parse_rocm_smi(text)
