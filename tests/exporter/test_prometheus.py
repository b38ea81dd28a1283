"""The exporter against the real Prometheus tools: promtool lint and a real scrape."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import PrometheusService, StartExporter
from tests.exporter.node_tree import full_node

# Lint findings promtool reports on names CEEMS defines and dashboards depend on; anything
# else in promtool's output fails the test.
CAMEL = "metric names should be written in 'snake_case' not 'camelCase'"
COUNT = 'non-histogram and non-summary metrics should not have "_count" suffix'
CEEMS_NAME_LINTS = (
    re.compile(rf"^ceems_meminfo_\w+ {re.escape(CAMEL)}$"),
    re.compile(rf"^ceems_emissions_gCo2_kWh {re.escape(CAMEL)}$"),
    re.compile(
        rf"^ceems_(cpu|cpu_per_core|compute_unit_gpu_sm|compute_unit_memory_fail|"
        rf"compute_unit_memsw_fail)_count {re.escape(COUNT)}$"
    ),
)


def wait_until_sampled(url: str, collectors: tuple[str, ...], timeout_s: float = 15.0) -> str:
    """Scrape until the background-sampled collectors report success."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = httpx.get(url).text
        if all(
            f'ceems_scrape_collector_success{{collector="{c}"}} 1.0' in text for c in collectors
        ):
            return text
        assert time.monotonic() < deadline, f"collectors {collectors} never succeeded:\n{text}"
        time.sleep(0.2)


def test_promtool_accepts_full_exposition(
    start_exporter: StartExporter, promtool: str, tmp_path: Path
) -> None:
    _, flags = full_node(tmp_path / "node")
    exporter = start_exporter(*flags)
    url = f"http://127.0.0.1:{exporter.server.ports[0]}/metrics"
    text = wait_until_sampled(url, ("ipmi_dcmi", "emissions"))
    assert "ceems_scrape_collector_success{collector=" in text
    assert " 0.0\n" not in "".join(
        line + "\n"
        for line in text.splitlines()
        if line.startswith("ceems_scrape_collector_success")
    ), text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    unexpected = [f for f in findings if not any(p.match(f) for p in CEEMS_NAME_LINTS)]
    assert result.returncode in (0, 3), result.stderr  # 3: lint findings only, format is valid
    assert unexpected == []


def test_real_prometheus_scrapes_the_exporter(
    start_exporter: StartExporter, prometheus_service: PrometheusService, tmp_path: Path
) -> None:
    _, flags = full_node(tmp_path / "node")
    exporter = start_exporter(*flags)
    port = exporter.server.ports[0]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: ceems\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    prometheus_service.start(config)
    query = 'ceems_rapl_package_joules_total{hostname="sim-1"}'
    deadline = time.monotonic() + 60
    while True:
        body = httpx.get(f"{prometheus_service.url}/api/v1/query", params={"query": query}).json()
        if body["status"] == "success" and len(body["data"]["result"]) == 2:
            break
        assert time.monotonic() < deadline, prometheus_service.log()[-2000:]
        time.sleep(0.5)
    indexes = sorted(r["metric"]["index"] for r in body["data"]["result"])
    assert indexes == ["0", "1"]
    assert body["data"]["result"][0]["metric"]["job"] == "ceems"
    power = httpx.get(
        f"{prometheus_service.url}/api/v1/query",
        params={"query": 'ceems_ipmi_dcmi_current_watts{hostname="sim-1"}'},
    ).json()
    assert float(power["data"]["result"][0]["value"][1]) > 0
    up = httpx.get(f"{prometheus_service.url}/api/v1/query", params={"query": "up"}).json()
    assert json.dumps(up["data"]["result"][0]["value"][1]) == '"1"'
