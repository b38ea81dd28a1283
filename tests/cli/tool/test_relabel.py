"""`ceems_tool tsdb create-relabel-configs` against a real Prometheus.

The generated configs are checked three ways: their YAML, `promtool check config`, and a real
Prometheus scraping DCGM- and AMD-shaped expositions with them, where GPU power must then join
`ceems_compute_unit_gpu_index_flag`.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ceems.cli.tool.main import main
from ceems.cli.tool.relabel import AMD_DEVICE_METRICS, AMD_SMI, DCGM, find_gpu_jobs
from ceems.cli.tool.window import parse_time
from tests.cli.tool.documented import undocumented_flags
from tests.conftest import PrometheusService, free_port
from tests.tsdb.backfill import Series, start_loaded

# Backfilled data must be older than Prometheus' head block: put it hours in the past.
BASE_S = (int(time.time()) - 5 * 3600) // 900 * 900
END_S = BASE_S + 3600

DCGM_GPU = {"gpu": "0", "UUID": "GPU-0a1b", "device": "nvidia0",
            "modelName": "NVIDIA A100-SXM4-80GB", "Hostname": "gpu1"}  # fmt: skip
DCGM_MIG = {**DCGM_GPU, "gpu": "1", "UUID": "GPU-2c3d", "GPU_I_PROFILE": "3g.40gb",
            "GPU_I_ID": "2"}  # fmt: skip
AMD_SMI_GPU = {"gpu_power": "1"}
AMD_DM_GPU = {"gpu_id": "2", "gpu_partition_id": "0", "gpu_compute_partition_type": "spx",
              "serial_number": "692409005408", "hostname": "amd2"}  # fmt: skip


def series(name: str, job: str, labels: Mapping[str, str], start_s: int = BASE_S) -> Series:
    points = [(float(t), 250.0) for t in range(start_s, start_s + 3600, 60)]
    return Series(name, {**labels, "job": job}, points)


SERIES = [
    series("DCGM_FI_DEV_POWER_USAGE", "dcgm", DCGM_GPU),
    series("DCGM_FI_DEV_POWER_USAGE_INSTANT", "dcgm-mig", DCGM_MIG),
    series("amd_gpu_power", "amd-smi", AMD_SMI_GPU),
    series("gpu_package_power", "amd-dm", AMD_DM_GPU),
    series("DCGM_FI_DEV_POWER_USAGE", "mixed", DCGM_GPU),
    series("amd_gpu_power", "mixed", AMD_SMI_GPU),
    # Already relabelled: nothing left to rename.
    series("DCGM_FI_DEV_POWER_USAGE", "done", {"gpuuuid": "GPU-0a1b", "modelName": "NVIDIA"}),
    series("ceems_cpu_count", "ceems", {"hostname": "gpu1"}),
    # Before the window asked for.
    series("DCGM_FI_DEV_POWER_USAGE", "old", DCGM_GPU, start_s=BASE_S - 3 * 3600),
]


def rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def run_tool(url: str, *flags: str) -> int:
    return main(["tsdb", "create-relabel-configs", "--url", url, *flags])


@pytest.fixture
def prometheus_url(
    prometheus_service: PrometheusService, promtool: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    return start_loaded(prometheus_service, promtool, SERIES, monkeypatch).url


@pytest.mark.services
def test_relabel_configs_per_gpu_job(
    prometheus_url: str, promtool: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_tool(prometheus_url, "--start", rfc3339(BASE_S), "--end", str(END_S)) == 0
    captured = capsys.readouterr()
    jobs = {c["job_name"]: c for c in yaml.safe_load(captured.out)["scrape_configs"]}
    assert sorted(jobs) == ["amd-dm", "amd-smi", "dcgm", "dcgm-mig", "mixed"]
    assert all(set(c) == {"job_name", "metric_relabel_configs"} for c in jobs.values())
    rules = {job: c["metric_relabel_configs"] for job, c in jobs.items()}
    assert rules["dcgm"] == rules["dcgm-mig"] == [dict(r) for r in DCGM.relabel_configs]
    assert rules["amd-smi"] == [dict(r) for r in AMD_SMI.relabel_configs]
    assert rules["amd-dm"] == [dict(r) for r in AMD_DEVICE_METRICS.relabel_configs]
    assert rules["mixed"] == rules["dcgm"] + rules["amd-smi"]
    assert "job done: NVIDIA DCGM exporter series already carry CEEMS labels" in captured.err
    assert "job amd-dm: AMD device metrics exporter" in captured.err
    check_with_promtool(promtool, jobs, tmp_path)


def check_with_promtool(promtool: str, jobs: Mapping[str, Any], tmp_path: Path) -> None:
    """The configs merged into a prometheus.yml pass `promtool check config`."""
    scrape = [{**c, "static_configs": [{"targets": ["127.0.0.1:9400"]}]} for c in jobs.values()]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": scrape}))
    checked = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.services
def test_window_without_gpu_series_prints_an_empty_list(
    prometheus_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    start = BASE_S - 10 * 3600
    assert run_tool(prometheus_url, "--start", str(start), "--end", str(start + 3600)) == 0
    captured = capsys.readouterr()
    assert yaml.safe_load(captured.out) == {"scrape_configs": []}
    assert "no GPU exporter series between" in captured.err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1714564800", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("1714564800.5", datetime(2024, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)),
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:00:00+02:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ],
)
def test_time_forms(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--start", "yesterday", "expected RFC 3339"),
        ("--start", "2024-05-01T12:00:00", "give a time zone"),
        ("--end", "nan", "invalid time"),
    ],
)
def test_bad_time_is_refused(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run_tool("http://127.0.0.1:9090", flag, value)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_start_after_end_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_tool(f"http://127.0.0.1:{free_port()}", "--start", "2000", "--end", "1000") == 1
    assert "is not before --end" in capsys.readouterr().err


def test_default_start_is_after_an_old_end(capsys: pytest.CaptureFixture[str]) -> None:
    # --end alone: the window is the 3 h before it, so it is still valid
    assert run_tool(f"http://127.0.0.1:{free_port()}", "--end", "1000000") == 1
    assert "cannot reach" in capsys.readouterr().err


def test_unreachable_prometheus(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert run_tool(url) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "cannot reach" in captured.err


def test_malformed_http_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "http.yml"
    config.write_text("basic_auth:\n  username: [not, a, string]\n")
    assert run_tool("http://127.0.0.1:9090", "--http.config.file", str(config)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ceems_tool: error: {config}: basic_auth.username"), err


@pytest.mark.parametrize(
    ("labels", "pending", "done"),
    [
        ({"__name__": "DCGM_FI_DEV_POWER_USAGE", "UUID": "G"}, [DCGM.name], []),
        ({"__name__": "DCGM_FI_DEV_POWER_USAGE", "gpuuuid": "G"}, [], [DCGM.name]),
        ({"__name__": "amd_gpu_power", "gpu_power": "0"}, [AMD_SMI.name], []),
        ({"__name__": "gpu_package_power", "gpu_id": "0"}, [AMD_DEVICE_METRICS.name], []),
        ({"__name__": "gpu_power_usage", "index": "0"}, [], [AMD_DEVICE_METRICS.name]),
    ],
)
def test_find_gpu_jobs(labels: dict[str, str], pending: list[str], done: list[str]) -> None:
    [finding] = find_gpu_jobs([{**labels, "job": "j"}])
    assert [e.name for e in finding.pending] == pending
    assert [e.name for e in finding.done] == done


def test_series_of_other_metrics_or_without_job_are_ignored() -> None:
    assert find_gpu_jobs([{"__name__": "up", "job": "j"},
                          {"__name__": "amd_gpu_power", "gpu_power": "0"}]) == []  # fmt: skip


# What the exporters serve: DCGM (a whole GPU and a MIG instance, plus a series of another
# exporter in the same job that also has a `UUID`), AMD SMI, AMD device metrics (an SPX GPU
# and a CPX partition), and ceems_exporter's flags for units on each of those GPUs.
EXPOSITIONS = {
    "/dcgm": """\
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-0a1b",modelName="NVIDIA A100",Hostname="gpu1"} 200
DCGM_FI_DEV_POWER_USAGE{gpu="1",UUID="GPU-2c3d",modelName="NVIDIA A100",GPU_I_ID="2"} 100
other_exporter_info{UUID="keep-me"} 1
""",
    "/amd-smi": """\
amd_gpu_power{gpu_power="4"} 300
amd_gpu_use_percent{gpu_use_percent="4"} 50
""",
    "/amd-dm": """\
gpu_package_power{gpu_id="2",gpu_partition_id="0",gpu_compute_partition_type="spx"} 400
gpu_package_power{gpu_id="3",gpu_partition_id="1",gpu_compute_partition_type="cpx"} 90
""",
    "/ceems": """\
ceems_compute_unit_gpu_index_flag{uuid="job-a",index="0",gpuuuid="GPU-0a1b",gpuiid=""} 1
ceems_compute_unit_gpu_index_flag{uuid="job-b",index="1",gpuuuid="GPU-2c3d",gpuiid="2"} 0.5
ceems_compute_unit_gpu_index_flag{uuid="job-c",index="4",gpuuuid="S1",gpuiid=""} 1
ceems_compute_unit_gpu_index_flag{uuid="job-d",index="2",gpuuuid="S2",gpuiid=""} 1
ceems_compute_unit_gpu_index_flag{uuid="job-e",index="3",gpuuuid="S3",gpuiid="1"} 1
""",
}  # fmt: skip


@pytest.fixture
def exporters() -> Iterator[str]:
    """One loopback HTTP server serving every exposition under its path."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            payload = EXPOSITIONS[self.path].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def prometheus_yml(target: str, relabel: Mapping[str, Any] | None = None) -> str:
    scrape = []
    for path in EXPOSITIONS:
        job = path.strip("/")
        config: dict[str, Any] = {"job_name": job, "metrics_path": path,
                                  "static_configs": [{"targets": [target]}]}  # fmt: skip
        if relabel and job in relabel:
            config["metric_relabel_configs"] = relabel[job]
        scrape.append(config)
    return yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": scrape})


def instant(url: str, promql: str) -> list[dict[str, str]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql})
    response.raise_for_status()
    return [r["metric"] for r in response.json()["data"]["result"]]


def wait_for(url: str, promql: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not instant(url, promql):
        assert time.monotonic() < deadline, f"no result for {promql}"
        time.sleep(0.2)


def join(url: str, promql: str, on: str) -> set[str]:
    """Units whose flag joins the GPU series `promql` on labels `on`."""
    joined = f"{promql} * on ({on}) group_right () ceems_compute_unit_gpu_index_flag"
    return {m["uuid"] for m in instant(url, joined)}


@pytest.mark.services
def test_prometheus_joins_gpu_series_after_relabelling(
    prometheus_service: PrometheusService,
    exporters: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_yml(exporters))
    prometheus_service.start(config)
    url = prometheus_service.url
    wait_for(url, "gpu_package_power")
    wait_for(url, "DCGM_FI_DEV_POWER_USAGE")
    wait_for(url, "amd_gpu_power")
    assert run_tool(url) == 0  # the default window: the last 3 h
    generated = yaml.safe_load(capsys.readouterr().out)["scrape_configs"]
    relabel = {c["job_name"]: c["metric_relabel_configs"] for c in generated}
    assert sorted(relabel) == ["amd-dm", "amd-smi", "dcgm"]
    config.write_text(prometheus_yml(exporters, relabel))
    assert httpx.post(f"{url}/-/reload").status_code == 200
    wait_for(url, 'DCGM_FI_DEV_POWER_USAGE{gpuuuid!=""}')
    wait_for(url, 'gpu_package_power{index!=""}')
    wait_for(url, 'amd_gpu_power{index!=""}')

    assert join(url, 'DCGM_FI_DEV_POWER_USAGE{gpuuuid!=""}', "gpuuuid, gpuiid") == {
        "job-a", "job-b"}  # fmt: skip
    assert instant(url, 'DCGM_FI_DEV_POWER_USAGE{gpuuuid!="", UUID!=""}') == []
    assert instant(url, 'DCGM_FI_DEV_POWER_USAGE{gpuuuid!="", GPU_I_ID!=""}') == []
    assert [m["UUID"] for m in instant(url, "other_exporter_info")] == ["keep-me"]
    assert instant(url, 'other_exporter_info{UUID=""}') == []

    assert join(url, 'amd_gpu_power{index!=""}', "index") == {"job-c"}
    assert instant(url, 'amd_gpu_use_percent{index="4", gpu_use_percent=""}') != []
    assert join(url, 'gpu_package_power{index!=""}', "index, gpuiid") == {"job-d", "job-e"}
    assert instant(url, 'gpu_package_power{index!="", gpu_id!=""}') == []


def test_flags_are_documented() -> None:
    assert undocumented_flags("tsdb", "create-relabel-configs") == []
