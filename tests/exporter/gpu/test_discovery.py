"""Discovery: vendor detection from PCI sysfs, NVML first, SMI tools, their failures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ceems.exporter.gpu import discovery
from ceems.exporter.gpu.devices import GpuDevice, GpuDiscoveryError
from ceems.exporter.gpu.discovery import detect_gpu_vendors, discover_gpus, run_tool
from ceems.exporter.gpu.nvml import nvml_gpus
from tests.exporter.gpu.conftest import AMD, GPU, nvidia_smi_script, write_tool
from tests.exporter.gpu.fake_nvml import FakeGpu, fake_nvml

NO_TOOL = "/nonexistent/tool"


@pytest.mark.parametrize(
    ("tree", "vendors"),
    [
        ("sys-nvidia", ["nvidia"]),  # the ASPEED VGA and NVIDIA's non-display function ignored
        ("sys-amd", ["amd"]),  # MI300X: class 0x12 processing accelerator
        ("sys-mixed", ["nvidia", "amd"]),
        ("sys-none", []),
        ("no-such-tree", []),
    ],
)
def test_detect_vendors_from_pci_sysfs(tree: str, vendors: list[str]) -> None:
    assert detect_gpu_vendors(GPU / tree) == vendors


def test_auto_detect_without_gpus_runs_no_tool() -> None:
    assert discover_gpus("", GPU / "sys-none", NO_TOOL, NO_TOOL, NO_TOOL, 5) == []


def test_nogpu_discovers_nothing() -> None:
    assert discover_gpus("nogpu", GPU / "sys-nvidia", NO_TOOL, NO_TOOL, NO_TOOL, 5) == []


def test_unknown_type_raises() -> None:
    with pytest.raises(GpuDiscoveryError, match="unknown GPU type 'intel'"):
        discover_gpus("intel", GPU / "sys-none", NO_TOOL, NO_TOOL, NO_TOOL, 5)


def test_auto_detected_nvidia_uses_nvidia_smi(tmp_path: Path) -> None:
    smi = nvidia_smi_script(tmp_path)
    devices = discover_gpus("", GPU / "sys-nvidia", smi, NO_TOOL, NO_TOOL, 5)
    assert [d.index for d in devices] == ["0", "1", "2", "3", "4", "5", "6"]
    assert devices[1].mig_uuid == "MIG-7d4e2b31-0a6c-5f1e-8b92-c3d4e5f60001"  # from -L
    assert devices[4].mdev_uuids == (
        "6e1f0c2a-91d4-4c1b-a7e2-000000000001",
        "6e1f0c2a-91d4-4c1b-a7e2-000000000002",
    )  # from `vgpu --query`


def test_failed_vgpu_query_keeps_the_devices(tmp_path: Path) -> None:
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    for name in ("query.xml", "list.txt"):
        (fixtures / name).write_text((GPU / "nvidia" / name).read_text())
    smi = nvidia_smi_script(tmp_path, fixtures)  # vgpu.txt missing: cat fails
    devices = discover_gpus("nvidia", GPU / "sys-none", smi, NO_TOOL, NO_TOOL, 5)
    assert len(devices) == 7
    assert all(d.mdev_uuids == () for d in devices)


def test_missing_nvidia_smi_raises_with_the_way_out() -> None:
    with pytest.raises(
        GpuDiscoveryError, match=r"nvidia-smi not found.*--collector\.gpu\.type=nogpu"
    ):
        discover_gpus("nvidia", GPU / "sys-none", NO_TOOL, NO_TOOL, NO_TOOL, 5)


def test_hung_nvidia_smi_times_out(tmp_path: Path) -> None:
    smi = write_tool(tmp_path, "nvidia-smi", "sleep 30")
    started = time.monotonic()
    with pytest.raises(GpuDiscoveryError, match=r"timed out after 0\.5s"):
        discover_gpus("nvidia", GPU / "sys-none", smi, NO_TOOL, NO_TOOL, 0.5)
    assert time.monotonic() - started < 5  # killed with its child, not waited for


def test_failing_tool_reports_exit_code_and_stderr(tmp_path: Path) -> None:
    tool = write_tool(tmp_path, "broken", "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    with pytest.raises(GpuDiscoveryError, match="exited 9: NVIDIA-SMI has failed"):
        run_tool([tool], 5)


def test_garbage_from_nvidia_smi_raises(tmp_path: Path) -> None:
    smi = write_tool(tmp_path, "nvidia-smi", "echo '<nvidia_smi_log><gpu'")
    with pytest.raises(GpuDiscoveryError, match="malformed XML"):
        discover_gpus("nvidia", GPU / "sys-none", smi, NO_TOOL, NO_TOOL, 5)


def test_amd_smi_preferred_over_rocm_smi(tmp_path: Path) -> None:
    amd_smi = write_tool(tmp_path, "amd-smi", f"cat {AMD}/amd-smi-static.json")
    rocm_smi = write_tool(tmp_path, "rocm-smi", "exit 1")
    devices = discover_gpus("", GPU / "sys-amd", NO_TOOL, amd_smi, rocm_smi, 5)
    assert [d.index for d in devices] == ["0", "1", "2", "3", "4"]


def test_rocm_smi_when_amd_smi_is_missing(tmp_path: Path) -> None:
    rocm_smi = write_tool(tmp_path, "rocm-smi", f"cat {AMD}/rocm-smi.json")
    devices = discover_gpus("amd", GPU / "sys-none", NO_TOOL, NO_TOOL, rocm_smi, 5)
    assert devices[0].uuid == "20190004511c"


def test_no_amd_tool_raises() -> None:
    with pytest.raises(GpuDiscoveryError, match="neither amd-smi"):
        discover_gpus("amd", GPU / "sys-none", NO_TOOL, NO_TOOL, NO_TOOL, 5)


NODE = [
    FakeGpu("GPU-n0", b"00000000:17:00.0", "NVIDIA A100-SXM4-80GB", 0),
    FakeGpu(
        "GPU-n1",
        b"00000000:31:00.0",
        "NVIDIA A100-SXM4-80GB",
        1,
        mig=True,
        host_vgpu=True,
        migs=[
            {
                "slot": 0,
                "gi": 1,
                "ci": 0,
                "sms": 42,
                "uuid": "MIG-m1",
                "name": "NVIDIA A100 MIG 3g.40gb",
            },
            {
                "slot": 2,
                "gi": 5,
                "ci": 0,
                "sms": 28,
                "uuid": "MIG-m2",
                "name": "NVIDIA A100 MIG 2g.20gb",
            },
        ],
        vgpus=[("ABC-1", 5)],
    ),
]


def test_nvml_gives_gpus_mig_instances_and_vgpus() -> None:
    nvml = fake_nvml(NODE)
    gpus, vgpus = nvml_gpus(nvml)
    assert [(g.uuid, g.pci_bus_id, g.minor_number, g.mig_enabled) for g in gpus] == [
        ("GPU-n0", "0000:17:00.0", "0", False),
        ("GPU-n1", "0000:31:00.0", "1", True),
    ]
    assert [(i.gpu_instance_id, i.sm_count, i.mig_uuid, i.profile) for i in gpus[1].instances] == [
        ("1", 42, "MIG-m1", "3g.40gb"),
        ("5", 28, "MIG-m2", "2g.20gb"),
    ]
    assert [(v.pci_bus_id, v.mdev_uuid, v.gpu_instance_id) for v in vgpus] == [
        ("0000:31:00.0", "ABC-1", "5")
    ]
    assert nvml.calls == ["init", "shutdown"]


def test_nvml_preferred_with_the_default_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "load_nvml", lambda: fake_nvml(NODE))
    devices = discover_gpus("nvidia", GPU / "sys-none", "nvidia-smi", NO_TOOL, NO_TOOL, 5)
    assert [(d.index, d.instance_id, d.mig_uuid) for d in devices] == [
        ("0", "", ""),
        ("1", "1", "MIG-m1"),
        ("2", "5", "MIG-m2"),
    ]
    assert devices[2].share_of_parent == pytest.approx(28 / 70)
    assert devices[2].mdev_uuids == ("abc-1",)


def test_nvml_without_driver_falls_back_to_nvidia_smi(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(discovery, "load_nvml", lambda: fake_nvml(NODE, init_error=True))
    nvidia_smi_script(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    devices = discover_gpus("nvidia", GPU / "sys-none", "nvidia-smi", NO_TOOL, NO_TOOL, 5)
    assert len(devices) == 7


def test_explicit_nvidia_smi_path_wins_over_nvml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(discovery, "load_nvml", lambda: fake_nvml(NODE))
    devices: list[GpuDevice] = discover_gpus(
        "nvidia", GPU / "sys-none", nvidia_smi_script(tmp_path), NO_TOOL, NO_TOOL, 5
    )
    assert len(devices) == 7
