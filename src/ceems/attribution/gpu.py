"""Recording rules that give each unit its share of the power of the GPUs it holds.

The exporter's `ceems_compute_unit_gpu_index_flag` is the unit's share of a physical GPU
(1 whole; a MIG instance's SMs over the GPU's; a shard or MPS fraction), so a unit's GPU
power is the device power times that share. Shares of one GPU are scaled down if they sum
above 1, and what no unit holds stays in `dev:ceems_gpu_unattributed_power_watts:pue`.
GPU exporters' labels are renamed inside the rules (`UUID` or `serial_number` to
`gpuuuid`), so no relabel config is needed for power.
"""

from __future__ import annotations

from typing import Any

from ceems.attribution.host import DEV_GPU, emission_rules, number
from ceems.attribution.spec import GpuJob, GpuSource, RuleSpec

FLAG = "ceems_compute_unit_gpu_index_flag"
UNIT = "uuid:ceems_gpu_power_watts:pue"
REST = "dev:ceems_gpu_unattributed_power_watts:pue"
UNIT_EMISSIONS = "uuid:ceems_gpu_emissions_g_s:pue"

# The label of each exporter's series that holds the GPU's identity and its host's name.
_ID_LABEL = {GpuSource.DCGM: "UUID", GpuSource.AMD: "serial_number"}
_HOST_LABEL = {GpuSource.DCGM: "Hostname", GpuSource.AMD: "hostname"}


def _relabel(series: str, gpu: GpuJob, *, instance_id: bool = False) -> str:
    """The exporter's series with our `gpuuuid` (and `gpuiid`, `hostname`) labels."""
    expr = f'{series}{{job="{gpu.job}"}}'
    expr = f'label_replace({expr}, "gpuuuid", "$1", "{_ID_LABEL[gpu.source]}", "(.+)")'
    if gpu.source is GpuSource.DCGM:
        expr = f'label_replace({expr}, "hostname", "$1", "Hostname", "(.+)")'
        if instance_id:
            expr = f'label_replace({expr}, "gpuiid", "$1", "GPU_I_ID", "(.*)")'
    return expr


def device_power(spec: RuleSpec) -> str:
    """PUE x watts of every physical GPU, labelled {gpuuuid, hostname}."""
    parts = [_relabel(g.power_series, g) for g in spec.gpus]
    union = "\n  or\n  ".join(parts)
    return f"{number(spec.pue)} * max by (gpuuuid, hostname) (\n  {union}\n)"


def _share() -> str:
    return (
        f"(\n  {FLAG}\n  / on (gpuuuid) group_left ()\n  clamp_min(sum by (gpuuuid) ({FLAG}), 1)\n)"
    )


def unit_power() -> str:
    return f"{DEV_GPU} * on (gpuuuid) group_right () {_share().replace(chr(10), chr(10) + '  ')}"


def remainder() -> str:
    held = f"sum by (gpuuuid) {_share().replace(chr(10), chr(10) + '  ')}"
    return f"{DEV_GPU} * on (gpuuuid) group_left () (1 - ({held} or on (gpuuuid) 0 * {DEV_GPU}))"


def usage_rules(spec: RuleSpec) -> list[dict[str, Any]]:
    """CEEMS' per-unit GPU usage and GPU memory usage (%), from DCGM where present."""
    dcgm = [g for g in spec.gpus if g.source is GpuSource.DCGM]
    if not dcgm:
        return []
    held = f"({FLAG} > bool 0)"
    rules: list[dict[str, Any]] = []
    usage = []
    for g in dcgm:
        # The graphics engine activity works on MIG instances; GPU_UTIL does not.
        if "DCGM_FI_PROF_GR_ENGINE_ACTIVE" in g.usage_series:
            usage.append(f"100 * {_relabel('DCGM_FI_PROF_GR_ENGINE_ACTIVE', g, instance_id=True)}")
        elif "DCGM_FI_DEV_GPU_UTIL" in g.usage_series:
            usage.append(_relabel("DCGM_FI_DEV_GPU_UTIL", g, instance_id=True))
    if usage:
        union = "\n  or\n  ".join(usage)
        expr = (
            f"max by (gpuuuid, gpuiid) (\n  {union}\n)\n"
            f"* on (gpuuuid, gpuiid) group_right ()\n{held}"
        )
        rules.append({"record": "uuid:ceems_gpu_usage:ratio", "expr": expr})
    memory = [g for g in dcgm if {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"} <= g.usage_series]
    if memory:
        used = " or ".join(_relabel("DCGM_FI_DEV_FB_USED", g, instance_id=True) for g in memory)
        free = " or ".join(_relabel("DCGM_FI_DEV_FB_FREE", g, instance_id=True) for g in memory)
        used_by = f"max by (gpuuuid, gpuiid) ({used})"
        expr = (
            f"100 * {used_by}\n/ clamp_min({used_by} + max by (gpuuuid, gpuiid) ({free}), 1)\n"
            f"* on (gpuuuid, gpuiid) group_right ()\n{held}"
        )
        rules.append({"record": "uuid:ceems_gpu_memory_usage:ratio", "expr": expr})
    return rules


def rules(spec: RuleSpec) -> list[dict[str, Any]]:
    """The GPU group, in evaluation order."""
    sources = sorted({str(g.source) for g in spec.gpus})
    provenance = {
        "power_source": "+".join(sources),
        "attribution": "gpu_share",
        "pue": f"{spec.pue:g}",
    }
    return [
        *usage_rules(spec),
        {"record": DEV_GPU, "expr": device_power(spec)},
        {"record": UNIT, "expr": unit_power(), "labels": provenance},
        {"record": REST, "expr": remainder()},
        *emission_rules(UNIT_EMISSIONS, UNIT, spec),
    ]
