"""The TSDB updater's default queries, over the recording-rule series CEEMS' rules create.

Same PromQL as CEEMS (`pkg/api/updater/tsdb/tsdb.go`): averages are `avg_over_time` of a
subquery, energies sum the power samples over the window times the scrape interval
(W x ms / 3.6e9 = kWh), emissions likewise (g/s x ms / 1e3 = g); `>= 0 < inf` drops
negative, NaN and infinite samples. One change: emissions are one query per metric keyed
`<provider>_total` from each result's `provider` label, where CEEMS has one query per
known provider (rte, emaps, wt, owid, global).
"""

from __future__ import annotations

from collections.abc import Mapping

PLACEHOLDERS = (
    "UUIDs",  # the batch's uuids, regex-escaped, joined by |
    "Range",  # the unit's stretch of the window, as a PromQL duration
    "ScrapeInterval",
    "ScrapeIntervalMilli",
    "EvaluationInterval",
    "EvaluationIntervalMilli",
    "RateInterval",  # 4 x scrape interval, as Grafana's $__rate_interval
)


# SERIES stands for the series name; the rest is the template as the config file writes it.
_AVERAGE = "avg_over_time(avg by (uuid) (SERIES{uuid=~`{{.UUIDs}}`} >= 0 < inf)[{{.Range}}:])"
_ENERGY_KWH = (
    "sum_over_time(sum by (uuid) (SERIES{uuid=~`{{.UUIDs}}`} >= 0 < inf)"
    "[{{.Range}}:{{.ScrapeInterval}}]) * {{.ScrapeIntervalMilli}} / 3.6e9"
)
_EMISSIONS_G = (
    "sum_over_time(sum by (uuid, provider) (SERIES{uuid=~`{{.UUIDs}}`} >= 0 < inf)"
    "[{{.Range}}:{{.ScrapeInterval}}]) * {{.ScrapeIntervalMilli}} / 1e3"
)
_INCREASE = "sum by (uuid) (increase(SERIES{uuid=~`{{.UUIDs}}`}[{{.Range}}]) >= 0 < inf)"


def _average(series: str) -> str:
    return _AVERAGE.replace("SERIES", series)


def _energy(series: str) -> str:
    return _ENERGY_KWH.replace("SERIES", series)


def _emissions(series: str) -> str:
    return _EMISSIONS_G.replace("SERIES", series)


def _increase(counter: str) -> str:
    return _INCREASE.replace("SERIES", counter)


PROVIDER_KEY = "{{.Labels.provider}}_total"

DEFAULT_QUERIES: Mapping[str, Mapping[str, str]] = {
    "avg_cpu_usage": {"global": _average("uuid:ceems_cpu_usage:ratio_irate")},
    "avg_cpu_mem_usage": {"global": _average("uuid:ceems_cpu_memory_usage:ratio")},
    "total_cpu_energy_usage_kwh": {
        "total": _energy("uuid:ceems_host_power_watts:pue"),
    },
    "total_cpu_emissions_gms": {
        PROVIDER_KEY: _emissions("uuid:ceems_host_emissions_g_s:pue"),
    },
    "avg_gpu_usage": {"global": _average("uuid:ceems_gpu_usage:ratio")},
    "avg_gpu_mem_usage": {"global": _average("uuid:ceems_gpu_memory_usage:ratio")},
    "total_gpu_energy_usage_kwh": {
        "total": _energy("uuid:ceems_gpu_power_watts:pue"),
    },
    "total_gpu_emissions_gms": {
        PROVIDER_KEY: _emissions("uuid:ceems_gpu_emissions_g_s:pue"),
    },
    "total_io_write_stats": {
        "bytes_total": _increase("ceems_ebpf_write_bytes_total"),
        "requests_total": _increase("ceems_ebpf_write_requests_total"),
        "errors_total": _increase("ceems_ebpf_write_errors_total"),
    },
    "total_io_read_stats": {
        "bytes_total": _increase("ceems_ebpf_read_bytes_total"),
        "requests_total": _increase("ceems_ebpf_read_requests_total"),
        "errors_total": _increase("ceems_ebpf_read_errors_total"),
    },
    "total_ingress_stats": {"bytes_total": _increase("ceems_ebpf_ingress_bytes_total")},
    "total_egress_stats": {"bytes_total": _increase("ceems_ebpf_egress_bytes_total")},
}
