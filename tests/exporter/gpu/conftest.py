"""Fake GPU tools (shell scripts printing fixture files) and the fixture node's devices."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ceems.exporter.gpu.devices import GpuDevice
from ceems.exporter.gpu.nvidia import attach_mig_uuids, attach_vgpus
from ceems.exporter.gpu.nvidia_smi import (
    parse_nvidia_smi_list,
    parse_nvidia_smi_xml,
    parse_nvidia_vgpu_query,
)
from tests.conftest import FIXTURES

GPU = FIXTURES / "gpu"
NVIDIA = GPU / "nvidia"
AMD = GPU / "amd"


def write_tool(directory: Path, name: str, body: str) -> str:
    """An executable shell script `name` in `directory`; returns its path."""
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def nvidia_smi_script(directory: Path, fixtures: Path = NVIDIA) -> str:
    """A fake nvidia-smi answering --query, -L and `vgpu --query` from fixture files."""
    return write_tool(
        directory,
        "nvidia-smi",
        f"""case "$1" in
  --query) cat "{fixtures}/query.xml" ;;
  -L) cat "{fixtures}/list.txt" ;;
  vgpu) cat "{fixtures}/vgpu.txt" ;;
  *) echo "nvidia-smi: unknown option $1" >&2; exit 2 ;;
esac""",
    )


@pytest.fixture
def fake_nvidia_smi(tmp_path: Path) -> str:
    """Path of a fake nvidia-smi serving tests/fixtures/gpu/nvidia."""
    return nvidia_smi_script(tmp_path)


@pytest.fixture
def nvidia_devices() -> list[GpuDevice]:
    """The fixture node's devices, MIG UUIDs and vGPUs attached, as discovery returns them."""
    devices = parse_nvidia_smi_xml((NVIDIA / "query.xml").read_text())
    devices = attach_mig_uuids(devices, parse_nvidia_smi_list((NVIDIA / "list.txt").read_text()))
    return attach_vgpus(devices, parse_nvidia_vgpu_query((NVIDIA / "vgpu.txt").read_text()))
