"""`tsdb create-relabel-configs`: metric_relabel_configs that make GPU exporters join ours.

ceems_exporter's `ceems_compute_unit_gpu_index_flag` says which unit holds which GPU with the
labels `index`, `gpuuuid` (AMD: serial) and `gpuiid` (MIG or partition instance, absent for a
whole GPU). The GPU vendors' exporters name these differently, so the recording rules can join
GPU power to units only after Prometheus renames their labels at scrape time. This command
finds the scrape jobs holding GPU exporter series and prints the relabelling for each.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import yaml

from ceems.cli.tool.httpclient import add_http_flags, load_client_config
from ceems.cli.tool.window import add_window_flags, window
from ceems.common.config import ConfigError
from ceems.tsdb.client import TsdbClient
from ceems.tsdb.errors import TsdbError

RelabelConfig = Mapping[str, str | Sequence[str]]


def _copy_if_set(sources: Sequence[str], target: str) -> RelabelConfig:
    """Set `target` to the last source label's value when every source label is non-empty."""
    return {
        "source_labels": list(sources),
        "regex": ";".join(["(.+)"] * len(sources)),
        "target_label": target,
        "replacement": f"${len(sources)}",
        "action": "replace",
    }


def _remove_if_set(sources: Sequence[str], target: str) -> RelabelConfig:
    """Remove `target` when every source label is non-empty (an empty result deletes it)."""
    return {
        "source_labels": list(sources),
        "regex": ";".join([".+"] * len(sources)),
        "target_label": target,
        "replacement": "",
        "action": "replace",
    }


def _labeldrop(labels: Sequence[str]) -> RelabelConfig:
    return {"regex": "|".join(labels), "action": "labeldrop"}


@dataclass(frozen=True, slots=True)
class GpuExporter:
    """A GPU exporter: its power series, the labels that are still to be renamed, the rules."""

    name: str
    power_metrics: tuple[str, ...]
    # Any of these on a series means its labels have not been renamed yet.
    pending_labels: tuple[str, ...]
    relabel_configs: tuple[RelabelConfig, ...]


# NVIDIA dcgm-exporter: GPU UUID in `UUID`, MIG instance in `GPU_I_ID` (absent for whole GPUs).
# Every rule is guarded by `modelName`, which only DCGM series carry, so other exporters
# scraped by the same job keep their labels; CEEMS' own rules rename any `UUID`.
DCGM = GpuExporter(
    name="NVIDIA DCGM exporter",
    power_metrics=("DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_POWER_USAGE_INSTANT"),
    pending_labels=("UUID",),
    relabel_configs=(
        _copy_if_set(["modelName", "UUID"], "gpuuuid"),
        _copy_if_set(["modelName", "GPU_I_ID"], "gpuiid"),
        _remove_if_set(["modelName", "UUID"], "UUID"),
        _remove_if_set(["modelName", "GPU_I_ID"], "GPU_I_ID"),
    ),
)

# AMD SMI exporter: each metric carries the GPU index in a label named like the metric.
_AMD_SMI_INDEX_LABELS = ("gpu_power", "gpu_use_percent", "gpu_memory_use_percent")
AMD_SMI = GpuExporter(
    name="AMD SMI exporter",
    power_metrics=("amd_gpu_power",),
    pending_labels=_AMD_SMI_INDEX_LABELS,
    relabel_configs=(
        *(_copy_if_set([label], "index") for label in _AMD_SMI_INDEX_LABELS),
        _labeldrop(_AMD_SMI_INDEX_LABELS),
    ),
)

# AMD device metrics exporter: GPU index in `gpu_id`, partition in `gpu_partition_id`, which
# is "0" for an unpartitioned (SPX) GPU where ours has no `gpuiid`.
AMD_DEVICE_METRICS = GpuExporter(
    name="AMD device metrics exporter",
    power_metrics=("gpu_package_power", "gpu_power_usage"),
    pending_labels=("gpu_id",),
    relabel_configs=(
        _copy_if_set(["gpu_id"], "index"),
        _copy_if_set(["gpu_partition_id"], "gpuiid"),
        {
            "source_labels": ["gpu_compute_partition_type"],
            "regex": "(?i)spx",
            "target_label": "gpuiid",
            "replacement": "",
            "action": "replace",
        },
        _labeldrop(["gpu_id", "gpu_partition_id"]),
    ),
)

GPU_EXPORTERS = (DCGM, AMD_SMI, AMD_DEVICE_METRICS)


@dataclass(frozen=True, slots=True)
class JobFinding:
    """The GPU exporters seen in one scrape job, split by whether they need relabelling."""

    job: str
    pending: tuple[GpuExporter, ...]
    done: tuple[GpuExporter, ...]


def find_gpu_jobs(series: Iterable[Mapping[str, str]]) -> list[JobFinding]:
    """Per job (sorted), the GPU exporters among the series' label sets."""
    by_metric = {m: e for e in GPU_EXPORTERS for m in e.power_metrics}
    pending: dict[str, set[str]] = {}
    seen: dict[str, set[str]] = {}
    for labels in series:
        exporter = by_metric.get(labels.get("__name__", ""))
        job = labels.get("job", "")
        if exporter is None or not job:
            continue
        seen.setdefault(job, set()).add(exporter.name)
        if any(labels.get(label) for label in exporter.pending_labels):
            pending.setdefault(job, set()).add(exporter.name)
    findings = []
    for job in sorted(seen):
        todo = pending.get(job, set())
        findings.append(
            JobFinding(
                job=job,
                pending=tuple(e for e in GPU_EXPORTERS if e.name in todo),
                done=tuple(e for e in GPU_EXPORTERS if e.name in seen[job] - todo),
            )
        )
    return findings


def scrape_configs(findings: Iterable[JobFinding]) -> dict[str, list[dict[str, object]]]:
    """The `scrape_configs:` entries, one per job with series still to relabel."""
    configs: list[dict[str, object]] = []
    for finding in findings:
        if finding.pending:
            rules = [dict(r) for e in finding.pending for r in e.relabel_configs]
            configs.append({"job_name": finding.job, "metric_relabel_configs": rules})
    return {"scrape_configs": configs}


class _IndentedDumper(yaml.SafeDumper):
    """Indents list items under their key, as Prometheus' documentation writes them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def render(configs: Mapping[str, object]) -> str:
    """YAML text of the scrape configs."""
    text: str = yaml.dump(configs, Dumper=_IndentedDumper, sort_keys=False, width=100)
    return text


def _report(findings: Sequence[JobFinding], start: datetime, end: datetime) -> None:
    """Say on stderr what was found, so stdout stays pure YAML."""
    if not findings:
        print(f"no GPU exporter series between {start.isoformat()} and {end.isoformat()}",
              file=sys.stderr)  # fmt: skip
    for finding in findings:
        for exporter in finding.pending:
            print(f"job {finding.job}: {exporter.name}", file=sys.stderr)
        for exporter in finding.done:
            print(f"job {finding.job}: {exporter.name} series already carry CEEMS labels",
                  file=sys.stderr)  # fmt: skip
    if any(f.pending for f in findings):
        print("merge each job's metric_relabel_configs into the scrape config of the same "
              "job_name in prometheus.yml", file=sys.stderr)  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    try:
        start, end = window(args)
    except ValueError as err:
        print(f"ceems_tool: error: {err}", file=sys.stderr)
        return 1
    matchers = [m for e in GPU_EXPORTERS for m in e.power_metrics]
    try:
        with TsdbClient(load_client_config(args)) as tsdb:
            series = tsdb.series(matchers, start, end)
    except (ConfigError, TsdbError, OSError) as err:
        # OSError (SSLError too): a CA, key or password file named in the config is unusable.
        print(f"ceems_tool: error: {err}", file=sys.stderr)
        return 1
    findings = find_gpu_jobs(series)
    _report(findings, start, end)
    sys.stdout.write(render(scrape_configs(findings)))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `create-relabel-configs` to the `tsdb` group."""
    parser = subparsers.add_parser(
        "create-relabel-configs",
        help="Print metric_relabel_configs that make GPU exporter labels join CEEMS'.",
        description="Find the scrape jobs with NVIDIA DCGM, AMD SMI or AMD device metrics "
        "exporter series and print, as YAML scrape_configs, the metric_relabel_configs that "
        "rename their GPU labels to ceems_exporter's (index, gpuuuid, gpuiid).",
    )
    add_http_flags(parser, "http://localhost:9090", "Prometheus server")
    add_window_flags(parser)
    parser.set_defaults(func=_run)
