"""The per-unit GPU series: ceems_compute_unit_gpu_index_flag and _gpu_sm_count."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prometheus_client.core import GaugeMetricFamily

from ceems.exporter.gpu.mapping import GpuShare, merge_shares

GPU_FLAG = "ceems_compute_unit_gpu_index_flag"
GPU_SM_COUNT = "ceems_compute_unit_gpu_sm_count"
GPU_LABELS = [
    "manager",
    "hostname",
    "cgrouphostname",
    "uuid",
    "index",
    "hindex",
    "gpuuuid",
    "gpuiid",
]


def gpu_families(
    hostname: str, shares: Mapping[tuple[str, str, str], Sequence[GpuShare]]
) -> list[GaugeMetricFamily]:
    """Families for units keyed by (manager, cgrouphostname, uuid); empty ones are left out.

    `ceems_compute_unit_gpu_index_flag` is the unit's share of the physical GPU: 1 for a
    whole GPU, the instance's SM fraction for MIG, further divided for shards, MPS and
    vGPUs; summed over units it never exceeds 1 per GPU, so GPU power times the flag
    splits power among units (CEEMS's recording rules multiply by it on `gpuuuid`).
    `ceems_compute_unit_gpu_sm_count` is the SM (AMD: compute unit) count of the device
    or instance itself, not multiplied by the share: as in CEEMS, it describes the
    hardware the unit sits on, and multiplying would count sharing twice in rules that
    already use the flag. It is left out where the count is unknown.
    """
    flag = GaugeMetricFamily(
        GPU_FLAG, "A value > 0 indicates the job using current GPU", labels=GPU_LABELS
    )
    sm_count = GaugeMetricFamily(
        GPU_SM_COUNT, "Number of SMs/CUs in the GPU instance", labels=GPU_LABELS
    )
    for (manager, cgrouphostname, uuid), unit_shares in sorted(shares.items()):
        for item in merge_shares(unit_shares):
            dev = item.device
            labels = [
                manager,
                hostname,
                cgrouphostname,
                uuid,
                dev.index,
                f"{hostname}{dev.hindex}",  # CEEMS: "<hostname>/gpu-<index>"
                dev.uuid,
                dev.instance_id,
            ]
            flag.add_metric(labels, item.share)
            if dev.sm_count > 0:
                sm_count.add_metric(labels, dev.sm_count)
    return [family for family in (flag, sm_count) if family.samples]
