"""`ceems_exporter` as a process: flags, plugins, start-up errors, shutdown, light imports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ceems.exporter.cli import build_parser, enabled_collectors
from ceems.exporter.registry import load_factories
from tests.conftest import FIXTURES, free_port

EXPORTER = str(Path(sys.executable).parent / "ceems_exporter")
PROC = str(FIXTURES / "proc" / "good")


def enabled(*flags: str) -> list[str]:
    factories = load_factories()
    return enabled_collectors(factories, build_parser(factories).parse_args(list(flags)))


def test_default_collectors() -> None:
    assert enabled() == ["cpu", "meminfo", "rapl"]


def test_enable_and_disable_flags() -> None:
    assert enabled("--collector.hwmon", "--no-collector.rapl") == ["cpu", "hwmon", "meminfo"]


def test_disable_defaults_keeps_only_named() -> None:
    assert enabled("--collector.disable-defaults", "--collector.meminfo") == ["meminfo"]


def test_every_builtin_collector_has_a_flag_pair() -> None:
    help_text = build_parser(load_factories()).format_help()
    for name in (
        "cpu", "meminfo", "rapl", "hwmon", "ipmi_dcmi", "cray_pm_counters", "netdev",
        "infiniband", "emissions",
    ):  # fmt: skip
        assert f"--collector.{name}, --no-collector.{name}" in help_text


def run_exporter(
    *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXPORTER, *flags], capture_output=True, text=True, timeout=30, env=env or dict(os.environ)
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--web.config.file", "/nonexistent/web.yml"], "cannot read"),
        (["--collector.rapl.sample-interval", "120"], "sample-interval"),
        (["--web.listen-address", "nonsense"], "HOST:PORT"),
        (["--collector.ipmi_dcmi", "--collector.ipmi_dcmi.cmd", ""], "none of ipmi-dcmi"),
        (["--web.telemetry-path", "/health"], "telemetry-path"),
        (["--web.max-requests", "-1"], "max-requests"),
    ],
)
def test_bad_configuration_refuses_to_start(flags: list[str], message: str) -> None:
    env = {**os.environ, "PATH": "/nonexistent"}  # no ipmi tool can be found
    result = run_exporter("--web.listen-address", "127.0.0.1:0", *flags, env=env)
    assert result.returncode != 0
    assert message in result.stderr


def test_bad_flag_value_is_an_argparse_error() -> None:
    result = run_exporter("--log.level", "loud")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_serves_until_sigterm_with_json_logs() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            EXPORTER,
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--path.procfs",
            PROC,
            "--log.format",
            "json",
            "--collector.hostname",
            "n9",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/metrics")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "exporter did not start"
                time.sleep(0.1)
        assert 'ceems_cpu_count{hostname="n9"} 4.0' in response.text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert '"msg": "listening"' in stderr and '"msg": "shutting down"' in stderr


def test_third_party_collector_from_entry_point(tmp_path: Path) -> None:
    """A site's package adds a collector with nothing but an entry point."""
    (tmp_path / "site_gpu_fans.py").write_text(
        "import argparse\n"
        "from dataclasses import dataclass\n"
        "from prometheus_client.core import GaugeMetricFamily\n"
        "@dataclass(eq=False)\n"
        "class Fans:\n"
        "    hostname: str\n"
        "    rpm: int\n"
        "    def collect(self):\n"
        "        g = GaugeMetricFamily('site_fan_rpm', 'Fan speed.', labels=['hostname'])\n"
        "        g.add_metric([self.hostname], self.rpm)\n"
        "        yield g\n"
        "class Factory:\n"
        "    name = 'site_fans'\n"
        "    enabled_by_default = False\n"
        "    description = 'Fan speeds of our racks.'\n"
        "    def add_flags(self, group):\n"
        "        group.add_argument('--collector.site_fans.rpm', dest='site_fans_rpm', type=int,"
        " default=1200)\n"
        "    def build(self, node, options):\n"
        "        return Fans(node.hostname, options.site_fans_rpm)\n"
        "FACTORY = Factory()\n"
    )
    dist = tmp_path / "site_gpu_fans-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: site-gpu-fans\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[ceems.collectors]\nsite_fans = site_gpu_fans:FACTORY\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    assert "--collector.site_fans" in run_exporter("--help", env=env).stdout
    port = free_port()
    proc = subprocess.Popen(
        [
            EXPORTER,
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--collector.disable-defaults",
            "--collector.site_fans",
            "--collector.site_fans.rpm",
            "900",
            "--collector.hostname",
            "r1",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert 'site_fan_rpm{hostname="r1"} 900.0' in text
        assert 'ceems_scrape_collector_success{collector="site_fans"} 1.0' in text
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_exporter_imports_no_web_framework_or_orm() -> None:
    """The exporter runs on every compute node: its import path must stay light."""
    code = (
        "import sys, ceems.exporter.cli, ceems.exporter.registry as r\n"
        "[ep.load() for ep in __import__('importlib.metadata').metadata.entry_points("
        "group='ceems.collectors')]\n"
        "heavy = {'fastapi', 'uvicorn', 'sqlalchemy', 'pydantic', 'httpx', 'starlette'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
