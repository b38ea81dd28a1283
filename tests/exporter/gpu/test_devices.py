"""The device model: PCI address spelling, renumbering and Kubernetes plugin ids."""

from __future__ import annotations

import pytest

from ceems.exporter.gpu.devices import AMD, GpuDevice, hindex_for, normalize_pci_bus_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00000000:1B:00.0", "0000:1b:00.0"),  # nvidia-smi: 8-digit domain, upper case
        ("0000:C5:00.0", "0000:c5:00.0"),  # rocm-smi
        ("1b:00.3", "0000:1b:00.3"),  # no domain
        ("0001:0a:1f.7", "0001:0a:1f.7"),
        (" 0000:8e:00.1\n", "0000:8e:00.1"),
    ],
)
def test_normalize_pci_bus_id(text: str, expected: str) -> None:
    assert normalize_pci_bus_id(text) == expected


@pytest.mark.parametrize("text", ["", "GPU-1234", "0000:1b:00", "0000:1b:00.8", "zz:00.0"])
def test_normalize_pci_bus_id_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a PCI bus id"):
        normalize_pci_bus_id(text)


def test_with_index_moves_hindex_along() -> None:
    dev = GpuDevice(index="3", hindex=hindex_for("3"), uuid="GPU-x")
    assert dev.with_index("7") == GpuDevice(index="7", hindex="/gpu-7", uuid="GPU-x")


@pytest.mark.parametrize(
    ("device", "ids"),
    [
        (GpuDevice("0", "/gpu-0", "GPU-AB"), ("gpu-ab",)),
        (GpuDevice("1", "/gpu-1", "GPU-AB", instance_id="2", mig_uuid="MIG-CD"), ("mig-cd",)),
        (GpuDevice("1", "/gpu-1", "GPU-AB", instance_id="2"), ()),
        (
            GpuDevice("0", "/gpu-0", "6922", vendor=AMD, pci_bus_id="0000:0c:00.0"),
            ("0000:0c:00.0",),
        ),
    ],
)
def test_plugin_ids(device: GpuDevice, ids: tuple[str, ...]) -> None:
    assert device.plugin_ids() == ids
