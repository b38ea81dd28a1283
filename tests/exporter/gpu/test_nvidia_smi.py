"""nvidia-smi parsers: XML query with MIG and vGPU hosts, -L listing, vgpu query, garbage."""

from __future__ import annotations

import pytest

from ceems.exporter.gpu.devices import GpuDevice, GpuDiscoveryError
from ceems.exporter.gpu.nvidia import (
    MigInstance,
    VgpuInstance,
    attach_vgpus,
    instance_shares,
    nvidia_sm_count,
)
from ceems.exporter.gpu.nvidia_smi import (
    parse_nvidia_smi_list,
    parse_nvidia_smi_xml,
    parse_nvidia_vgpu_query,
)
from tests.exporter.gpu.conftest import NVIDIA

UUID = "GPU-3f2c9a10-7b1e-4c55-9d0a-2b6e8f41c00"


def by_index(devices: list[GpuDevice]) -> dict[str, GpuDevice]:
    return {dev.index: dev for dev in devices}


@pytest.mark.parametrize(
    ("index", "uuid", "gpuiid", "bus", "physical", "share", "sms"),
    [
        ("0", UUID + "1", "", "0000:1b:00.0", 0, 1.0, 132),  # whole H100 (SXM)
        ("1", UUID + "2", "2", "0000:43:00.0", 1, 64 / 112, 64),  # MIG 4g of 4g+2g+1g
        ("2", UUID + "2", "3", "0000:43:00.0", 1, 32 / 112, 32),
        ("3", UUID + "2", "9", "0000:43:00.0", 1, 16 / 112, 16),
        ("4", UUID + "3", "", "0000:8a:00.0", 2, 1.0, 108),  # whole A100, vGPU host
        ("5", UUID + "4", "1", "0000:c1:00.0", 3, 0.5, 42),
        ("6", UUID + "4", "2", "0000:c1:00.0", 3, 0.5, 42),
    ],
)
def test_xml_devices_are_numbered_whole_gpus_and_instances_together(
    index: str, uuid: str, gpuiid: str, bus: str, physical: int, share: float, sms: float
) -> None:
    dev = by_index(parse_nvidia_smi_xml((NVIDIA / "query.xml").read_text()))[index]
    assert (dev.uuid, dev.instance_id, dev.pci_bus_id, dev.physical_index) == (
        uuid,
        gpuiid,
        bus,
        physical,
    )
    assert dev.hindex == f"/gpu-{index}"
    assert dev.share_of_parent == pytest.approx(share)
    assert dev.sm_count == sms


def test_xml_marks_vgpu_hosts_and_minor_numbers() -> None:
    devices = by_index(parse_nvidia_smi_xml((NVIDIA / "query.xml").read_text()))
    assert [devices[i].vgpu_host for i in "0146"] == [False, False, True, True]
    assert [devices[i].minor_number for i in "0146"] == ["0", "1", "2", "3"]
    assert len(devices) == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("this is not xml", "malformed XML"),
        ((NVIDIA / "query.xml").read_text()[:900], "malformed XML"),  # truncated output
        ("<nvidia_smi_log><gpu id='00000000:1B:00.0'><uuid>GPU-1</uuid>", "malformed XML"),
        ("<html><body>oops</body></html>", "not <nvidia_smi_log>"),
        ("<nvidia_smi_log><gpu id='nope'><uuid>GPU-1</uuid></gpu></nvidia_smi_log>", "PCI bus id"),
        (
            "<nvidia_smi_log><gpu id='00000000:1B:00.0'><uuid>GPU-1</uuid><mig_mode><current_mig>"
            "Enabled</current_mig></mig_mode><mig_devices><mig_device><index>x</index>"
            "<gpu_instance_id>1</gpu_instance_id></mig_device></mig_devices></gpu></nvidia_smi_log>",
            "must be integers",
        ),
    ],
)
def test_xml_garbage_raises(text: str, message: str) -> None:
    with pytest.raises(GpuDiscoveryError, match=message):
        parse_nvidia_smi_xml(text)


def test_xml_gpu_without_uuid_is_skipped() -> None:
    text = (
        "<nvidia_smi_log><gpu id='00000000:1B:00.0'><uuid>N/A</uuid></gpu>"
        "<gpu id='00000000:1C:00.0'><uuid>GPU-b</uuid><product_name>Tesla T4</product_name>"
        "</gpu></nvidia_smi_log>"
    )
    devices = parse_nvidia_smi_xml(text)
    assert [(d.index, d.uuid, d.physical_index, d.sm_count) for d in devices] == [
        ("0", "GPU-b", 0, 40)
    ]


def test_list_gives_mig_uuids_and_profiles() -> None:
    listing = parse_nvidia_smi_list((NVIDIA / "list.txt").read_text())
    assert listing[UUID + "1"] == {}
    assert listing[UUID + "2"]["1"] == ("MIG-7d4e2b31-0a6c-5f1e-8b92-c3d4e5f60002", "2g.20gb")
    assert set(listing[UUID + "4"]) == {"0", "1"}


def test_list_accepts_old_mig_uuid_format() -> None:
    text = "GPU 0: A100-SXM4-40GB (UUID: GPU-aa)\n  MIG 1g.5gb Device 0: (UUID: MIG-GPU-aa/7/0)\n"
    assert parse_nvidia_smi_list(text) == {"GPU-aa": {"0": ("MIG-GPU-aa/7/0", "1g.5gb")}}


def test_vgpu_query_lists_mdevs_per_gpu_and_instance() -> None:
    vgpus = parse_nvidia_vgpu_query((NVIDIA / "vgpu.txt").read_text())
    assert [(v.pci_bus_id, v.mdev_uuid[-2:], v.gpu_instance_id) for v in vgpus] == [
        ("0000:8a:00.0", "01", ""),
        ("0000:8a:00.0", "02", ""),
        ("0000:c1:00.0", "03", "1"),
        ("0000:c1:00.0", "04", "1"),
        ("0000:c1:00.0", "05", "2"),
    ]
    assert vgpus[0].vm_uuid == "5a1b2c3d-0000-4000-8000-00000000a001"
    assert vgpus[0].name == "GRID A100-10C"


def test_vgpu_query_before_any_gpu_raises() -> None:
    with pytest.raises(GpuDiscoveryError, match="before any GPU"):
        parse_nvidia_vgpu_query("    vGPU ID : 1\n        MDEV UUID : abc\n")


def test_fixture_node_devices_carry_mig_uuids_and_mdevs(nvidia_devices: list[GpuDevice]) -> None:
    devices = by_index(nvidia_devices)
    assert devices["3"].mig_uuid == "MIG-7d4e2b31-0a6c-5f1e-8b92-c3d4e5f60003"
    assert devices["3"].profile == "1g.10gb"
    assert devices["0"].mig_uuid == ""
    assert [len(devices[i].mdev_uuids) for i in "0123456"] == [0, 0, 0, 0, 2, 2, 1]


def test_attach_vgpus_matches_bus_and_instance() -> None:
    dev = GpuDevice("0", "/gpu-0", "GPU-a", instance_id="5", pci_bus_id="0000:c1:00.0")
    vgpus = [
        VgpuInstance("0000:c1:00.0", "AA", "5"),
        VgpuInstance("0000:c1:00.0", "bb", "6"),
        VgpuInstance("0000:c2:00.0", "cc", "5"),
    ]
    assert attach_vgpus([dev], vgpus)[0].mdev_uuids == ("aa",)


@pytest.mark.parametrize(
    ("name", "sms"),
    [
        ("NVIDIA H100 80GB HBM3", 132),
        ("NVIDIA H100 PCIe", 114),
        ("NVIDIA A100-SXM4-80GB", 108),
        ("NVIDIA A10", 72),
        ("NVIDIA L40S", 142),
        ("Tesla V100-SXM2-32GB", 80),
        ("NVIDIA GeForce RTX 4090", 0),
    ],
)
def test_sm_count_from_product_name(name: str, sms: float) -> None:
    assert nvidia_sm_count(name) == sms


def test_instance_shares_fall_back_to_equal_when_counts_are_missing() -> None:
    instances = [MigInstance("0", "1", "0", 0.0), MigInstance("1", "2", "0", 14.0)]
    assert instance_shares(instances) == [0.5, 0.5]


def test_xml_prolog_is_not_parsed() -> None:
    # CEEMS's fake nvidia-smi prints the declaration unquoted; Go's parser lets it through.
    text = (
        "<?xml version=1.0 ?>\n<!DOCTYPE nvidia_smi_log SYSTEM nvsmi_device_v12.dtd>\n"
        "<nvidia_smi_log><gpu id='00000000:1C:00.0'><uuid>GPU-b</uuid></gpu></nvidia_smi_log>"
    )
    assert [d.uuid for d in parse_nvidia_smi_xml(text)] == ["GPU-b"]
