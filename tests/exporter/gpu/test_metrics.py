"""The per-unit GPU families, exposed through a fresh registry."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from ceems.exporter.gpu.devices import GpuDevice
from ceems.exporter.gpu.mapping import GpuShare
from ceems.exporter.gpu.metrics import gpu_families

WHOLE = GpuDevice("0", "/gpu-0", "GPU-aa", sm_count=132)
MIG = GpuDevice("2", "/gpu-2", "GPU-bb", instance_id="5", sm_count=28, share_of_parent=0.25)
UNKNOWN_SMS = GpuDevice("3", "/gpu-3", "20170005280c")


class Families:
    def __init__(self, hostname: str, shares: dict[tuple[str, str, str], list[GpuShare]]) -> None:
        self.hostname, self.shares = hostname, shares

    def collect(self) -> Iterable[Metric]:
        return gpu_families(self.hostname, self.shares)


def registry(
    hostname: str, shares: dict[tuple[str, str, str], list[GpuShare]]
) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(Families(hostname, shares))
    return reg


def labels(manager: str, uuid: str, dev: GpuDevice, hostname: str = "node1") -> dict[str, str]:
    return {
        "manager": manager,
        "hostname": hostname,
        "cgrouphostname": "",
        "uuid": uuid,
        "index": dev.index,
        "hindex": f"{hostname}/gpu-{dev.index}",
        "gpuuuid": dev.uuid,
        "gpuiid": dev.instance_id,
    }


SHARES = {
    ("slurm", "", "1009"): [GpuShare(WHOLE, 1.0), GpuShare(MIG, 0.25)],
    ("slurm", "", "1010"): [GpuShare(UNKNOWN_SMS, 0.5), GpuShare(UNKNOWN_SMS, 0.25)],
}


def test_flag_is_the_share_and_sm_count_the_device_sms() -> None:
    reg = registry("node1", SHARES)
    flag, sms = "ceems_compute_unit_gpu_index_flag", "ceems_compute_unit_gpu_sm_count"
    assert reg.get_sample_value(flag, labels("slurm", "1009", WHOLE)) == 1.0
    assert reg.get_sample_value(flag, labels("slurm", "1009", MIG)) == 0.25
    assert reg.get_sample_value(sms, labels("slurm", "1009", MIG)) == 28
    assert reg.get_sample_value(flag, labels("slurm", "1010", UNKNOWN_SMS)) == 0.75  # merged
    assert reg.get_sample_value(sms, labels("slurm", "1010", UNKNOWN_SMS)) is None


def test_exposition_matches_ceems() -> None:
    shares = {("libvirt", "", "vm-1"): [GpuShare(MIG, 0.125)]}
    assert generate_latest(registry("", shares)).decode() == (
        "# HELP ceems_compute_unit_gpu_index_flag A value > 0 indicates the job using current GPU\n"
        "# TYPE ceems_compute_unit_gpu_index_flag gauge\n"
        'ceems_compute_unit_gpu_index_flag{cgrouphostname="",gpuiid="5",gpuuuid="GPU-bb",'
        'hindex="/gpu-2",hostname="",index="2",manager="libvirt",uuid="vm-1"} 0.125\n'
        "# HELP ceems_compute_unit_gpu_sm_count Number of SMs/CUs in the GPU instance\n"
        "# TYPE ceems_compute_unit_gpu_sm_count gauge\n"
        'ceems_compute_unit_gpu_sm_count{cgrouphostname="",gpuiid="5",gpuuuid="GPU-bb",'
        'hindex="/gpu-2",hostname="",index="2",manager="libvirt",uuid="vm-1"} 28.0\n'
    )


def test_no_shares_no_families() -> None:
    assert gpu_families("node1", {}) == []
    assert generate_latest(registry("node1", {("k8s", "", "pod"): []})) == b""
