"""Finding the node's GPUs: vendor from PCI sysfs, devices from NVML or the vendor's SMI tool."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ceems.exporter.gpu.amd import parse_amd_smi_static_json, parse_rocm_smi
from ceems.exporter.gpu.devices import AMD, NVIDIA, GpuDevice, GpuDiscoveryError
from ceems.exporter.gpu.nvidia import attach_mig_uuids, attach_vgpus, flatten_nvidia
from ceems.exporter.gpu.nvidia_smi import (
    parse_nvidia_smi_list,
    parse_nvidia_smi_xml,
    parse_nvidia_vgpu_query,
)
from ceems.exporter.gpu.nvml import load_nvml, nvml_gpus

log = logging.getLogger(__name__)

GPU_TYPES = (NVIDIA, AMD, "nogpu")
DEFAULT_NVIDIA_SMI = "nvidia-smi"
NVIDIA_SMI_QUERY = ("--query", "--xml-format")
NVIDIA_SMI_LIST = ("-L",)
NVIDIA_SMI_VGPU = ("vgpu", "--query")
AMD_SMI_QUERY = ("static", "-a", "-B", "-b", "-p", "--json")
ROCM_SMI_QUERY = (
    "--showproductname",
    "--showserial",
    "--showbus",
    "--showcomputepartition",
    "--showmemorypartition",
    "--json",
)
# PCI vendor ids; https://pci-ids.ucw.cz/
PCI_VENDORS = {0x10DE: NVIDIA, 0x1002: AMD}
# Display controllers (0x03) and processing accelerators (0x12, e.g. MI300X), as CEEMS checks.
PCI_GPU_CLASSES = ("0x03", "0x12")


def detect_gpu_vendors(sysfs: Path) -> list[str]:
    """Vendors (nvidia, amd) with a GPU among `<sysfs>/bus/pci/devices`, NVIDIA first."""
    found: set[str] = set()
    for device in sorted((sysfs / "bus" / "pci" / "devices").glob("*")):
        try:
            pci_class = (device / "class").read_text().strip().lower()
            vendor_id = int((device / "vendor").read_text().strip(), 16)
        except (OSError, ValueError):
            continue  # a device without readable ids is not one we can use anyway
        if pci_class.startswith(PCI_GPU_CLASSES) and vendor_id in PCI_VENDORS:
            found.add(PCI_VENDORS[vendor_id])
    return [vendor for vendor in (NVIDIA, AMD) if vendor in found]


def run_tool(argv: Sequence[str], timeout_s: float) -> str:
    """The tool's stdout; GpuDiscoveryError when it is missing, fails or outlives the timeout.

    The tool runs in its own session so a hung one is killed with everything it started
    (a wrapper script's children would otherwise keep the output pipe open).
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    except OSError as err:
        raise GpuDiscoveryError(f"cannot run {argv[0]}: {err}") from err
    try:
        out, err_text = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise GpuDiscoveryError(
            f"{' '.join(argv)} timed out after {timeout_s:g}s (is the GPU driver hung?)"
        ) from err
    if proc.returncode != 0:
        raise GpuDiscoveryError(
            f"{' '.join(argv)} exited {proc.returncode}: {err_text.strip()[:300]}"
        )
    return out


def resolve_tool(path: str) -> str | None:
    """Absolute path of an executable given by path or name on PATH, None if absent."""
    return shutil.which(path)


def _nvidia_with_nvml() -> list[GpuDevice] | None:
    """Devices from NVML, or None when pynvml is not installed or no driver answers."""
    nvml = load_nvml()
    if nvml is None:
        return None
    try:
        gpus, vgpus = nvml_gpus(nvml)
    except (nvml.NVMLError, ValueError) as err:
        log.info("NVML unavailable, using nvidia-smi", extra={"err": str(err)})
        return None
    return attach_vgpus(flatten_nvidia(gpus), vgpus)


def _nvidia_with_smi(nvidia_smi_path: str, timeout_s: float) -> list[GpuDevice]:
    tool = resolve_tool(nvidia_smi_path)
    if tool is None:
        raise GpuDiscoveryError(
            f"nvidia-smi not found at {nvidia_smi_path!r}; install the NVIDIA driver utilities, "
            "set --collector.gpu.nvidia-smi-path, or --collector.gpu.type=nogpu"
        )
    devices = parse_nvidia_smi_xml(run_tool([tool, *NVIDIA_SMI_QUERY], timeout_s))
    if any(dev.is_instance for dev in devices):
        listing = parse_nvidia_smi_list(run_tool([tool, *NVIDIA_SMI_LIST], timeout_s))
        devices = attach_mig_uuids(devices, listing)
    if any(dev.vgpu_host for dev in devices):
        try:
            vgpus = parse_nvidia_vgpu_query(run_tool([tool, *NVIDIA_SMI_VGPU], timeout_s))
        except GpuDiscoveryError as err:
            # Without mdevs, only passed-through GPUs map to VMs; the rest still work.
            log.warning("vGPU query failed", extra={"err": str(err)})
        else:
            devices = attach_vgpus(devices, vgpus)
    return devices


def discover_nvidia(nvidia_smi_path: str, timeout_s: float) -> list[GpuDevice]:
    """NVIDIA devices from NVML when available, else from nvidia-smi.

    An explicit --collector.gpu.nvidia-smi-path wins over NVML, so a site (or a test)
    pointing at a particular tool gets that tool's view.
    """
    if nvidia_smi_path == DEFAULT_NVIDIA_SMI:
        devices = _nvidia_with_nvml()
        if devices is not None:
            return devices
    return _nvidia_with_smi(nvidia_smi_path, timeout_s)


def discover_amd(amd_smi_path: str, rocm_smi_path: str, timeout_s: float) -> list[GpuDevice]:
    """AMD devices from amd-smi, the tool AMD recommends, else from rocm-smi."""
    tool = resolve_tool(amd_smi_path)
    if tool is not None:
        return parse_amd_smi_static_json(run_tool([tool, *AMD_SMI_QUERY], timeout_s))
    tool = resolve_tool(rocm_smi_path)
    if tool is not None:
        return parse_rocm_smi(run_tool([tool, *ROCM_SMI_QUERY], timeout_s))
    raise GpuDiscoveryError(
        f"neither amd-smi ({amd_smi_path!r}) nor rocm-smi ({rocm_smi_path!r}) found; install "
        "ROCm's amd-smi, set --collector.gpu.amd-smi-path, or --collector.gpu.type=nogpu"
    )


def discover_gpus(
    gpu_type: str,
    sysfs: Path,
    nvidia_smi_path: str,
    amd_smi_path: str,
    rocm_smi_path: str,
    timeout_s: float,
) -> list[GpuDevice]:
    """The node's assignable GPUs; `gpu_type` "" detects vendors from PCI sysfs."""
    if gpu_type not in ("", *GPU_TYPES):
        raise GpuDiscoveryError(
            f"unknown GPU type {gpu_type!r} (valid: {', '.join(GPU_TYPES)}, or empty to detect)"
        )
    if gpu_type == "nogpu":
        return []
    vendors = [gpu_type] if gpu_type else detect_gpu_vendors(sysfs)
    devices: list[GpuDevice] = []
    for vendor in vendors:
        if vendor == NVIDIA:
            devices.extend(discover_nvidia(nvidia_smi_path, timeout_s))
        else:
            devices.extend(discover_amd(amd_smi_path, rocm_smi_path, timeout_s))
    log.info("GPU devices found", extra={"vendors": ",".join(vendors), "devices": len(devices)})
    return devices
