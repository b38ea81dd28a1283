"""The exporter's HTTP surface: endpoints, formats, limits, TLS and basic auth."""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
from pathlib import Path

import bcrypt
import httpx
import pytest

from ceems.exporter.server import parse_listen_address
from tests.certs import self_signed
from tests.conftest import FIXTURES, StartExporter

PROC = str(FIXTURES / "proc" / "good")
NODE_FLAGS = ("--path.procfs", PROC, "--collector.hostname", "n1", "--no-collector.rapl")


def url(exporter: object, path: str = "/metrics", scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{exporter.server.ports[0]}{path}"  # type: ignore[attr-defined]


def test_metrics_in_prometheus_text_format(start_exporter: StartExporter) -> None:
    exporter = start_exporter(*NODE_FLAGS)
    response = httpx.get(url(exporter))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'ceems_cpu_seconds_total{hostname="n1",mode="user"} 3018.54' in response.text
    assert 'ceems_scrape_collector_success{collector="cpu"} 1.0' in response.text
    assert "process_resident_memory_bytes" in response.text
    assert "ceems_exporter_build_info{" in response.text


def test_openmetrics_when_asked(start_exporter: StartExporter) -> None:
    exporter = start_exporter(*NODE_FLAGS)
    response = httpx.get(url(exporter), headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_gzip_when_accepted(start_exporter: StartExporter) -> None:
    exporter = start_exporter(*NODE_FLAGS)
    with httpx.Client() as client:
        raw = client.get(url(exporter), headers={"Accept-Encoding": "gzip"})
        assert raw.headers["content-encoding"] == "gzip"
        assert b"ceems_cpu_count" in raw.content  # httpx decoded it
    with (
        httpx.Client() as client,
        client.stream("GET", url(exporter), headers={"Accept-Encoding": "gzip"}) as stream,
    ):
        assert b"ceems_cpu_count" in gzip.decompress(b"".join(stream.iter_raw()))


def test_name_filter(start_exporter: StartExporter) -> None:
    exporter = start_exporter(*NODE_FLAGS)
    text = httpx.get(url(exporter), params={"name[]": "ceems_cpu_count"}).text
    assert "ceems_cpu_count{" in text and "ceems_cpu_seconds_total" not in text


def test_disable_exporter_metrics(start_exporter: StartExporter) -> None:
    exporter = start_exporter(*NODE_FLAGS, "--web.disable-exporter-metrics")
    text = httpx.get(url(exporter)).text
    assert "process_resident_memory_bytes" not in text and "ceems_cpu_count{" in text


def test_health_landing_and_unknown_paths(start_exporter: StartExporter) -> None:
    exporter = start_exporter(*NODE_FLAGS, "--web.telemetry-path", "/node-metrics")
    assert httpx.get(url(exporter, "/health")).text == "OK\n"
    landing = httpx.get(url(exporter, "/"))
    assert landing.status_code == 200 and 'href="/node-metrics"' in landing.text
    assert httpx.get(url(exporter, "/metrics")).status_code == 404
    assert httpx.get(url(exporter, "/node-metrics")).status_code == 200


def test_empty_hostname_label(start_exporter: StartExporter) -> None:
    exporter = start_exporter("--path.procfs", PROC, "--collector.empty-hostname-label")
    assert 'ceems_cpu_count{hostname=""} 4.0' in httpx.get(url(exporter)).text


def test_failing_collector_is_isolated(start_exporter: StartExporter, tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("cpu garbage\n")
    (tmp_path / "meminfo").write_text((FIXTURES / "proc/good/meminfo").read_text())
    exporter = start_exporter("--path.procfs", str(tmp_path), "--collector.hostname", "n1")
    response = httpx.get(url(exporter))
    assert response.status_code == 200
    assert 'ceems_scrape_collector_success{collector="cpu"} 0.0' in response.text
    assert 'ceems_scrape_collector_success{collector="meminfo"} 1.0' in response.text
    assert 'ceems_meminfo_MemTotal_bytes{hostname="n1"}' in response.text
    assert "ceems_cpu_seconds_total" not in response.text


def test_max_requests_refuses_excess_scrapes(start_exporter: StartExporter) -> None:
    exporter = start_exporter(*NODE_FLAGS, "--web.max-requests", "1")
    slots = exporter.server.servers[0].RequestHandlerClass.options.scrape_slots  # type: ignore[attr-defined]
    assert slots is not None
    slots.acquire()  # one scrape in flight
    try:
        busy = httpx.get(url(exporter))
        assert busy.status_code == 503 and "--web.max-requests" in busy.text
    finally:
        slots.release()
    assert httpx.get(url(exporter)).status_code == 200


@pytest.mark.parametrize("address", ["9010", "host:port", ":99999", ""])
def test_bad_listen_address(address: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen_address(address)


def test_listen_address_forms() -> None:
    assert parse_listen_address(":9010") == ("", 9010)
    assert parse_listen_address("[::1]:9010") == ("::1", 9010)


@pytest.fixture
def tls_web_config(tmp_path: Path) -> Path:
    cert, key = self_signed(tmp_path)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=8)).decode()
    config = tmp_path / "web-config.yml"
    # Relative paths resolve against the config file's directory, as in exporter-toolkit.
    config.write_text(
        f"tls_server_config:\n  cert_file: {cert.name}\n  key_file: {key.name}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    )
    return config


def test_https_with_basic_auth(start_exporter: StartExporter, tls_web_config: Path) -> None:
    exporter = start_exporter(*NODE_FLAGS, "--web.config.file", str(tls_web_config))
    ca_context = ssl.create_default_context(cafile=tls_web_config.parent / "localhost.crt")
    endpoint = url(exporter, scheme="https")
    anonymous = httpx.get(endpoint, verify=ca_context)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert httpx.get(endpoint, verify=ca_context, auth=("prometheus", "wrong")).status_code == 401
    assert httpx.get(endpoint, verify=ca_context, auth=("nobody", "s3cret")).status_code == 401
    ok = httpx.get(endpoint, verify=ca_context, auth=("prometheus", "s3cret"))
    assert ok.status_code == 200 and "ceems_cpu_count" in ok.text
    assert ok.headers["x-frame-options"] == "deny"
    with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets no answer
        httpx.get(url(exporter), timeout=2)


def test_slow_tls_client_does_not_block_others(
    start_exporter: StartExporter, tls_web_config: Path
) -> None:
    exporter = start_exporter(*NODE_FLAGS, "--web.config.file", str(tls_web_config))
    idle = socket.create_connection(("127.0.0.1", exporter.server.ports[0]))  # never handshakes
    try:
        result: list[int] = []
        worker = threading.Thread(
            target=lambda: result.append(
                httpx.get(
                    url(exporter, scheme="https"),
                    verify=ssl.create_default_context(
                        cafile=tls_web_config.parent / "localhost.crt"
                    ),
                    auth=("prometheus", "s3cret"),
                ).status_code
            )
        )
        worker.start()
        worker.join(10)
        assert result == [200]
    finally:
        idle.close()
