"""The kubelet PodResources client against a real gRPC server on a unix socket."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from ceems.exporter.gpu.devices import AMD, GpuDevice
from ceems.exporter.gpu.podresources import (
    PodDevices,
    PodResourcesError,
    kubelet_pod_gpus,
    list_pod_devices,
    pod_gpu_shares,
    read_pod_uids,
)
from tests.exporter.gpu.kubelet import kubelet, pod_logs, response

GPU = "GPU-3f2c9a10-7b1e-4c55-9d0a-2b6e8f41c00"
MIG = "MIG-7d4e2b31-0a6c-5f1e-8b92-c3d4e5f6000"

ANSWER = response(
    [
        ("ml", "train-0", [("nvidia.com/gpu", [GPU + "1"])]),
        ("ml", "infer-a", [("nvidia.com/mig-1g.10gb", [MIG + "3"])]),
        ("ml", "ts-a", [("nvidia.com/gpu", [GPU + "3::0", GPU + "3::1"])]),
        ("ml", "ts-b", [("nvidia.com/gpu", [GPU + "3::2"])]),
        ("kube-system", "coredns-7db6d8ff4d-x2k9p", []),
        ("ml", "no-log-dir", [("nvidia.com/gpu", [GPU + "1"])]),
        ("ml", "other-vendor", [("example.com/fpga", ["fpga0"])]),
    ]
)
UIDS = [
    ("ml", "train-0", "11111111-aaaa-4bbb-8ccc-000000000001"),
    ("ml", "infer-a", "11111111-aaaa-4bbb-8ccc-000000000002"),
    ("ml", "ts-a", "11111111-aaaa-4bbb-8ccc-000000000003"),
    ("ml", "ts-b", "11111111-aaaa-4bbb-8ccc-000000000004"),
    ("kube-system", "coredns-7db6d8ff4d-x2k9p", "11111111-aaaa-4bbb-8ccc-000000000005"),
    ("ml", "other-vendor", "11111111-aaaa-4bbb-8ccc-000000000006"),
]


def test_list_reads_pods_and_their_device_ids(tmp_path: Path) -> None:
    with kubelet(tmp_path / "k.sock", ANSWER):
        pods = list_pod_devices(str(tmp_path / "k.sock"), 5)
    assert pods[0] == PodDevices("ml", "train-0", (("nvidia.com/gpu", GPU + "1"),))
    assert pods[4] == PodDevices("kube-system", "coredns-7db6d8ff4d-x2k9p", ())
    assert len(pods) == 7


def test_pod_gpus_keyed_by_uid(tmp_path: Path, nvidia_devices: list[GpuDevice]) -> None:
    logs = pod_logs(tmp_path / "pods", *UIDS)
    with kubelet(tmp_path / "k.sock", ANSWER):
        found = kubelet_pod_gpus(str(tmp_path / "k.sock"), nvidia_devices, 5, logs)
    summary = {
        uid[-1]: [(s.device.index, s.device.instance_id, round(s.share, 4)) for s in shares]
        for uid, shares in found.items()
    }
    assert summary == {
        "1": [("0", "", 1.0)],
        "2": [("3", "9", 0.1429)],  # the 1g.10gb MIG instance: 16 of 112 SMs
        "3": [("4", "", 0.6667)],  # two of the three time-sliced replicas in use
        "4": [("4", "", 0.3333)],
    }


def test_relative_socket_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with kubelet(tmp_path / "k.sock", ANSWER):
        assert len(list_pod_devices("k.sock", 5)) == 7


def test_missing_socket_raises(tmp_path: Path) -> None:
    with pytest.raises(PodResourcesError, match="UNAVAILABLE"):
        list_pod_devices(str(tmp_path / "absent.sock"), 2)


def test_kubelet_error_status_raises(tmp_path: Path) -> None:
    with (
        kubelet(tmp_path / "k.sock", ANSWER, status=grpc.StatusCode.PERMISSION_DENIED),
        pytest.raises(PodResourcesError, match="PERMISSION_DENIED: pod resources API disabled"),
    ):
        list_pod_devices(str(tmp_path / "k.sock"), 5)


def test_slow_kubelet_times_out(tmp_path: Path) -> None:
    with (
        kubelet(tmp_path / "k.sock", ANSWER, delay_s=2),
        pytest.raises(PodResourcesError, match="DEADLINE_EXCEEDED"),
    ):
        list_pod_devices(str(tmp_path / "k.sock"), 0.3)


def test_read_pod_uids_skips_other_names(tmp_path: Path) -> None:
    logs = pod_logs(tmp_path / "pods", ("ns", "web-0", "u-1"))
    (logs / "stray-file").write_text("")
    (logs / "a_b").mkdir()
    assert read_pod_uids(logs) == {("ns", "web-0"): "u-1"}


def test_read_pod_uids_without_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(PodResourcesError, match="cannot list pod log folders"):
        read_pod_uids(tmp_path / "absent")


def test_amd_devices_match_by_pci_address() -> None:
    devices = [
        GpuDevice("0", "/gpu-0", "S0", vendor=AMD, pci_bus_id="0000:0c:00.0"),
        GpuDevice(
            "1",
            "/gpu-1",
            "S1",
            instance_id="1",
            vendor=AMD,
            pci_bus_id="0000:8e:00.1",
            share_of_parent=0.25,
        ),
    ]
    pods = [
        PodDevices("ns", "p", (("amd.com/gpu", "0000:0C:00.0"), ("amd.com/gpu", "0000:8e:00.1")))
    ]
    found = pod_gpu_shares(pods, devices, {("ns", "p"): "uid"})
    assert [(s.device.index, s.share) for s in found["uid"]] == [("0", 1.0), ("1", 0.25)]
