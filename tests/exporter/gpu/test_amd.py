"""AMD parsers: amd-smi static JSON (both layouts), rocm-smi JSON and CSV, partitions, garbage."""

from __future__ import annotations

import json

import pytest

from ceems.exporter.gpu.amd import parse_amd_smi_static_json, parse_rocm_smi, parse_rocm_smi_json
from ceems.exporter.gpu.devices import AMD as AMD_VENDOR
from ceems.exporter.gpu.devices import GpuDiscoveryError
from tests.exporter.gpu.conftest import AMD


@pytest.mark.parametrize(
    ("index", "uuid", "gpuiid", "bus", "physical", "share", "cus", "profile"),
    [
        ("0", "692251001234", "", "0000:0c:00.0", 0, 1.0, 304, ""),
        ("1", "692251005678", "0", "0000:8e:00.0", 1, 0.25, 76, "QPX"),
        ("2", "692251005678", "1", "0000:8e:00.1", 1, 0.25, 76, "QPX"),
        ("4", "692251005678", "3", "0000:8e:00.3", 1, 0.25, 76, "QPX"),
    ],
)
def test_amd_smi_partitions_are_instances(
    index: str,
    uuid: str,
    gpuiid: str,
    bus: str,
    physical: int,
    share: float,
    cus: float,
    profile: str,
) -> None:
    devices = {
        d.index: d for d in parse_amd_smi_static_json((AMD / "amd-smi-static.json").read_text())
    }
    dev = devices[index]
    assert (dev.uuid, dev.instance_id, dev.pci_bus_id, dev.physical_index) == (
        uuid,
        gpuiid,
        bus,
        physical,
    )
    assert (dev.share_of_parent, dev.sm_count, dev.profile, dev.vendor) == (
        share,
        cus,
        profile,
        AMD_VENDOR,
    )
    assert dev.hindex == f"/gpu-{index}"


def test_amd_smi_wrapped_layout_and_missing_values() -> None:
    text = json.dumps(
        {
            "gpu_data": [
                {
                    "gpu": 1,
                    "bus": {"bdf": "0000:c5:00.0"},
                    "board": {"product_serial": "N/A"},
                    "asic": {"num_compute_units": "N/A"},
                },
                {"gpu": 0, "bus": {"bdf": "0000:c2:00.0"}, "board": {"product_serial": "S0"}},
            ]
        }
    )
    devices = parse_amd_smi_static_json(text)
    assert [(d.index, d.uuid, d.sm_count, d.instance_id) for d in devices] == [
        ("0", "S0", 0.0, ""),
        ("1", "0000:c5:00.0", 0.0, ""),  # no serial: the PCI address stands in
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "malformed JSON"),
        ('[{"gpu": 0, "bus": {"bdf": "0000:0c:00.0"}', "malformed JSON"),  # truncated
        ('{"error": "no GPUs"}', "not a list of GPU objects"),
        ('[{"gpu": 0, "bus": {"bdf": "garbage"}}]', "PCI bus id"),
    ],
)
def test_amd_smi_garbage_raises(text: str, message: str) -> None:
    with pytest.raises(GpuDiscoveryError, match=message):
        parse_amd_smi_static_json(text)


def test_rocm_smi_json_cards_in_numeric_order_with_dpx_partitions() -> None:
    devices = parse_rocm_smi_json((AMD / "rocm-smi.json").read_text())
    assert [
        (d.index, d.uuid, d.instance_id, d.share_of_parent, d.physical_index) for d in devices
    ] == [
        ("0", "20190004511c", "", 1.0, 0),
        ("1", "20190004522c", "0", 0.5, 1),
        ("2", "20190004522c", "1", 0.5, 1),
        ("3", "20190004533c", "", 1.0, 2),  # card10 sorts after card2
    ]
    assert devices[1].pci_bus_id == "0000:e3:00.0"
    assert devices[1].profile == "DPX"
    assert devices[0].name == "AMD Instinct MI100"


def test_rocm_smi_csv() -> None:
    devices = parse_rocm_smi((AMD / "rocm-smi.csv").read_text())
    assert [(d.index, d.uuid, d.pci_bus_id) for d in devices] == [
        ("0", "20190004511c", "0000:21:00.0"),
        ("1", "20190004522c", "0000:e3:00.0"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"card0": {"PCI Bus": "0000:21:00.0"', "malformed JSON"),
        ("WARNING: no AMD GPUs found", "neither JSON nor CSV"),
        ('{"card0": {"Serial Number": "x", "PCI Bus": "N/A"}}', "PCI bus id"),
    ],
)
def test_rocm_smi_garbage_raises(text: str, message: str) -> None:
    with pytest.raises(GpuDiscoveryError, match=message):
        parse_rocm_smi(text)
