"""A whole exporter over a simulated GPU node: SLURM jobs, MIG, a user session, Redfish."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ceems.sim.redfish import FakeChassis, FakeRedfishServer, PowerWindow
from tests.conftest import StartExporter
from tests.exporter.node_tree import gpu_node
from tests.exporter.test_prometheus import CEEMS_NAME_LINTS


@pytest.fixture
def redfish() -> Iterator[FakeRedfishServer]:
    server = FakeRedfishServer([FakeChassis("System.Embedded.1", PowerWindow(lambda: 512.0))])
    server.start()
    yield server
    server.stop()


def scrape_when_ready(url: str, collectors: tuple[str, ...]) -> str:
    deadline = time.monotonic() + 20
    while True:
        text = httpx.get(url).text
        if all(
            f'ceems_scrape_collector_success{{collector="{c}"}} 1.0' in text for c in collectors
        ):
            return text
        assert time.monotonic() < deadline, text
        time.sleep(0.2)


def flag(uuid: str, index: str, gpuiid: str, gpuuuid: str) -> str:
    return (
        f'ceems_compute_unit_gpu_index_flag{{cgrouphostname="",gpuiid="{gpuiid}",'
        f'gpuuuid="{gpuuuid}",hindex="gpu-1/gpu-{index}",hostname="gpu-1",index="{index}",'
        f'manager="slurm",uuid="{uuid}"}}'
    )


def test_gpu_node_exposition(
    start_exporter: StartExporter, redfish: FakeRedfishServer, tmp_path: Path, promtool: str
) -> None:
    _node, flags = gpu_node(tmp_path, redfish.url)
    exporter = start_exporter(*flags)
    url = f"http://127.0.0.1:{exporter.server.ports[0]}/metrics"
    text = scrape_when_ready(url, ("slurm", "userslice", "redfish", "ipmi_dcmi"))
    gpu = "GPU-5a1c0001-0000-4000-8000-00000000a100"
    mig = "GPU-5a1c0003-0000-4000-8000-00000000a100"
    assert flag("1000", "0", "", gpu) + " 1.0" in text
    # SLURM's GPU 2 is the first MIG instance: 42 of the GPU's 70 SMs.
    assert flag("1001", "2", "1", mig) + " 0.6" in text
    assert 'uuid="1002"' in text and flag("1002", "0", "", gpu) not in text  # no GPU
    assert 'ceems_compute_units{hostname="gpu-1",manager="slurm"} 3.0' in text
    assert 'manager="userslice",uuid="root"' in text
    assert 'ceems_redfish_current_watts{chassis="System_Embedded_1",hostname="gpu-1"} 512.0' in text
    assert redfish.logins == 1  # one session, reused by every reading
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode in (0, 3), result.stderr
    assert [f for f in findings if not any(p.match(f) for p in CEEMS_NAME_LINTS)] == []


def test_jobs_that_end_disappear_and_new_ones_appear(
    start_exporter: StartExporter, redfish: FakeRedfishServer, tmp_path: Path
) -> None:
    node, flags = gpu_node(tmp_path, redfish.url)
    exporter = start_exporter(*flags)
    url = f"http://127.0.0.1:{exporter.server.ports[0]}/metrics"
    scrape_when_ready(url, ("slurm",))
    assert node.cgroups is not None
    node.cgroups.end("1000")
    node.cgroups.make_stale("1001")
    text = httpx.get(url).text
    assert 'uuid="1000"' not in text and 'uuid="1001"' not in text
    assert 'ceems_compute_units{hostname="gpu-1",manager="slurm"} 1.0' in text
