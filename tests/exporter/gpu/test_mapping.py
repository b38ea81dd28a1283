"""SLURM and libvirt mappings: order map, process environments, shares, domain hostdevs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ceems.exporter.gpu.devices import GpuDevice
from ceems.exporter.gpu.gres import parse_gres_conf
from ceems.exporter.gpu.mapping import (
    DomainXmlError,
    GpuOrderMapError,
    GpuShare,
    libvirt_gpu_shares,
    order_map_misses,
    parse_domain_hostdevs,
    parse_gpu_order_map,
    read_environ,
    slurm_gpu_shares,
    slurm_index_map,
)

MIG = "MIG-7d4e2b31-0a6c-5f1e-8b92-c3d4e5f6000"
GPU = "GPU-3f2c9a10-7b1e-4c55-9d0a-2b6e8f41c00"
MDEV = "6e1f0c2a-91d4-4c1b-a7e2-00000000000"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("0:0,1:1", {"0": "0", "1": "1"}),
        (" 0:1 , 1:0.3,2:0.4 ,", {"0": "1", "1": "0.3", "2": "0.4"}),
    ],
)
def test_parse_gpu_order_map(text: str, expected: dict[str, str]) -> None:
    assert parse_gpu_order_map(text) == expected


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("0:0,1", "'1'"),
        ("0:0,x:1", "'x:1'"),
        ("0:gpu1", "'0:gpu1'"),
        ("0:1.2.3", "'0:1.2.3'"),
        ("0=1", "'0=1'"),
    ],
)
def test_order_map_errors_name_the_entry(text: str, bad: str) -> None:
    with pytest.raises(GpuOrderMapError, match=f"bad GPU order map entry {bad}"):
        parse_gpu_order_map(text)


def test_order_map_rejects_a_slurm_index_twice() -> None:
    with pytest.raises(GpuOrderMapError, match="SLURM index 1 twice"):
        parse_gpu_order_map("1:0,1:2")


def test_read_environ_splits_on_nul(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "environ").write_bytes(
        b"SLURM_JOB_ID=17\0SLURM_JOB_GPUS=0,2\0EMPTY=\0WEIRD=a=b\0novalue\0\0"
    )
    assert read_environ(tmp_path, 42) == {
        "SLURM_JOB_ID": "17",
        "SLURM_JOB_GPUS": "0,2",
        "EMPTY": "",
        "WEIRD": "a=b",
    }


def test_read_environ_of_a_vanished_process_is_empty(tmp_path: Path) -> None:
    assert read_environ(tmp_path, 999999) == {}


def test_read_environ_without_permission_is_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "environ").write_bytes(b"A=1\0")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)  # root may read anything, so simulate
    assert read_environ(tmp_path, 7) == {}


def test_read_environ_of_a_directory_is_empty(tmp_path: Path) -> None:
    (tmp_path / "8" / "environ").mkdir(parents=True)  # EISDIR, like any other OSError
    assert read_environ(tmp_path, 8) == {}


def test_read_environ_of_this_process() -> None:
    assert read_environ(Path("/proc"), os.getpid()).get("PATH") == os.environ.get("PATH")


GRES = parse_gres_conf("Name=gpu File=/dev/nvidia[0-3]\nName=shard Count=16 File=/dev/nvidia0\n")


def shares_of(
    environ: dict[str, str], devices: list[GpuDevice], order: str = ""
) -> list[tuple[str, str, str, float]]:
    found = slurm_gpu_shares(environ, devices, parse_gpu_order_map(order), GRES)
    return [
        (s.device.index, s.device.uuid[-1], s.device.instance_id, round(s.share, 4)) for s in found
    ]


@pytest.mark.parametrize(
    ("environ", "order", "expected"),
    [
        ({}, "", []),
        ({"SLURM_JOB_GPUS": "0"}, "", [("0", "1", "", 1.0)]),
        ({"SLURM_JOB_GPUS": "4,0"}, "", [("4", "3", "", 1.0), ("0", "1", "", 1.0)]),
        # MIG instances: their share of the GPU
        ({"SLURM_JOB_GPUS": "1,3"}, "", [("1", "2", "2", 0.5714), ("3", "2", "9", 0.1429)]),
        # SLURM_JOB_GPUS wins over SLURM_STEP_GPUS (CEEMS: step's list is unreliable)
        ({"SLURM_JOB_GPUS": "0", "SLURM_STEP_GPUS": "4"}, "", [("0", "1", "", 1.0)]),
        ({"SLURM_STEP_GPUS": "4"}, "", [("4", "3", "", 1.0)]),
        ({"SLURM_JOB_GPUS": "0,0,99"}, "", [("0", "1", "", 1.0)]),
        # order map: SLURM index 0 is driver GPU 2, SLURM 1 is GPU 1's instance 9
        (
            {"SLURM_JOB_GPUS": "0,1"},
            "0:2,1:1.9,2:0,3:1.2,4:1.3,5:3.1,6:3.2",
            [("0", "3", "", 1.0), ("1", "2", "9", 0.1429)],
        ),
        # shards: 4 of the 16 gres.conf gives GPU 0
        ({"SLURM_JOB_GPUS": "0", "SLURM_SHARDS_ON_NODE": "4"}, "", [("0", "1", "", 0.25)]),
        # shards on a GPU gres.conf gives no count: the whole GPU
        ({"SLURM_JOB_GPUS": "4", "SLURM_SHARDS_ON_NODE": "4"}, "", [("4", "3", "", 1.0)]),
        # MPS: the thread percentage, on top of the MIG share
        (
            {"SLURM_JOB_GPUS": "5", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25"},
            "",
            [("5", "4", "1", 0.125)],
        ),
        (
            {"SLURM_JOB_GPUS": "0", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "lots"},
            "",
            [("0", "1", "", 1.0)],
        ),
        # CUDA_VISIBLE_DEVICES with UUIDs when SLURM's variables are absent
        (
            {"CUDA_VISIBLE_DEVICES": f"{GPU}3,{MIG}2"},
            "",
            [("4", "3", "", 1.0), ("2", "2", "3", 0.2857)],
        ),
        ({"CUDA_VISIBLE_DEVICES": f"MIG-{GPU}4/2/0"}, "", [("6", "4", "2", 0.5)]),
        ({"CUDA_VISIBLE_DEVICES": "0,1"}, "", []),  # ordinals are relative to the job's cgroup
        ({"SLURM_JOB_GPUS": ""}, "", []),
    ],
)
def test_slurm_shares(
    nvidia_devices: list[GpuDevice],
    environ: dict[str, str],
    order: str,
    expected: list[tuple[str, str, str, float]],
) -> None:
    assert shares_of(environ, nvidia_devices, order) == expected


def test_order_map_relabels_the_devices(nvidia_devices: list[GpuDevice]) -> None:
    by_index = slurm_index_map(nvidia_devices, parse_gpu_order_map("0:2,1:1.9"))
    assert by_index["0"].uuid == GPU + "3"
    assert by_index["0"].hindex == "/gpu-0"
    assert by_index["1"].instance_id == "9"
    assert by_index["2"].instance_id == "3"  # unmapped devices keep their index


def domain(*hostdevs: str) -> str:
    return f"""<domain type='kvm'>
  <name>instance-0000002a</name>
  <uuid>0d7a8e3b-4c1f-4e2a-9b6d-5f0e1c2d3a4b</uuid>
  <devices>
    <disk type='file' device='disk'><source file='/var/lib/nova/disk'/></disk>
    {"".join(hostdevs)}
  </devices>
</domain>"""


def pci(bus: str, function: str = "0x0") -> str:
    return (
        "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
        f"<address domain='0x0000' bus='{bus}' slot='0x00' function='{function}'/></source>"
        "<address type='pci' domain='0x0000' bus='0x06' slot='0x00' function='0x0'/></hostdev>"
    )


def mdev(uuid: str) -> str:
    return (
        "<hostdev mode='subsystem' type='mdev' managed='no' model='vfio-pci' display='off'>"
        f"<source><address uuid='{uuid}'/></source></hostdev>"
    )


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        (domain(), []),
        (domain(pci("0x1b")), [("0", "", 1.0)]),
        (domain(pci("0x1b"), pci("0x8a")), [("0", "", 1.0), ("4", "", 1.0)]),
        (domain(pci("0x43")), []),  # a MIG-enabled GPU is not a device of its own
        (domain(pci("0x1b", "0x1")), []),  # its audio function, not the GPU
        (domain(mdev(MDEV + "1")), [("4", "", 0.5)]),  # one of two vGPUs on a whole GPU
        (domain(mdev(MDEV + "3")), [("5", "1", 0.25)]),  # one of two vGPUs on a 0.5 instance
        (domain(mdev((MDEV + "5").upper())), [("6", "2", 0.5)]),
        (domain(mdev(MDEV + "1"), mdev(MDEV + "2")), [("4", "", 1.0)]),
        (domain(mdev("00000000-dead-beef-0000-000000000000")), []),
    ],
)
def test_libvirt_shares(
    nvidia_devices: list[GpuDevice], xml: str, expected: list[tuple[str, str, float]]
) -> None:
    found = libvirt_gpu_shares(xml, nvidia_devices)
    assert [(s.device.index, s.device.instance_id, s.share) for s in found] == expected


def test_domain_hostdevs() -> None:
    hostdevs = parse_domain_hostdevs(domain(pci("0x8A"), mdev("ABC")))
    assert hostdevs.pci_bus_ids == ("0000:8a:00.0",)
    assert hostdevs.mdev_uuids == ("abc",)


@pytest.mark.parametrize("xml", ["<domain><devices>", "not xml", domain(pci("0xZZ"))])
def test_bad_domain_xml_raises(xml: str) -> None:
    with pytest.raises(DomainXmlError):
        libvirt_gpu_shares(xml, [])


def test_share_is_a_value() -> None:
    dev = GpuDevice("0", "/gpu-0", "GPU-a")
    assert GpuShare(dev, 0.5) == GpuShare(dev, 0.5)


def test_order_map_misses(nvidia_devices: list[GpuDevice]) -> None:
    order = parse_gpu_order_map("0:0,1:1.2,2:1.4,3:9,4:1")
    assert order_map_misses(nvidia_devices, order) == ["2:1.4", "3:9", "4:1"]
