"""`ceems_tool check api-healthy` and `check lb-healthy` against real servers and closed ports."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ceems.cli.tool import health
from ceems.cli.tool.main import main
from tests.api.test_server import NOW, Server, write_config
from tests.cli.tool.documented import undocumented_flags
from tests.conftest import FIXTURES, StartExporter, free_port


class HealthServer:
    """A stdlib HTTP server on loopback answering every GET with a set status and body.

    It records the paths and Authorization headers it saw; `delay_s` makes it slow.
    """

    def __init__(self) -> None:
        self.status = 200
        self.body = "OK"
        self.delay_s = 0.0
        self.seen: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.seen.append((self.path, self.headers.get("Authorization", "")))
                time.sleep(outer.delay_s)
                payload = outer.body.encode()
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lb() -> Iterator[HealthServer]:
    server = HealthServer()
    yield server
    server.close()


def test_api_healthy_against_a_real_api_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = Server(write_config(tmp_path, tmp_path / "data", NOW - timedelta(days=1), "1d"))
    try:
        assert main(["check", "api-healthy", "--url", server.url]) == 0
    finally:
        server.stop()
    assert capsys.readouterr().out == "SUCCESS: CEEMS API Server is healthy\n"
    assert main(["check", "api-healthy", "--url", server.url]) == 1  # stopped now
    assert "cannot reach" in capsys.readouterr().err


def test_closed_port_fails(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["check", "lb-healthy", "--url", url]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"FAILED: {url}/health: cannot reach:")


def test_lb_healthy_under_a_route_prefix(
    lb: HealthServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "lb-healthy", "--url", f"{lb.url}/ceems/"]) == 0
    assert capsys.readouterr().out == "SUCCESS: OK\n"
    assert [path for path, _ in lb.seen] == ["/ceems/health"]


def test_non_200_fails_with_status_and_body(
    lb: HealthServer, capsys: pytest.CaptureFixture[str]
) -> None:
    lb.status, lb.body = 503, "KO"
    assert main(["check", "lb-healthy", "--url", lb.url]) == 1
    assert capsys.readouterr().err == f"FAILED: {lb.url}/health: answered 503: KO\n"


def test_slow_server_times_out(
    lb: HealthServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "TIMEOUT_S", 0.3)
    lb.delay_s = 2
    started = time.monotonic()
    assert main(["check", "lb-healthy", "--url", lb.url]) == 1
    assert time.monotonic() - started < 1.5
    assert "no answer within 0.3s (ReadTimeout)" in capsys.readouterr().err


def test_bearer_token_from_http_config_file(
    lb: HealthServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "token").write_text("t0ken\n")
    config = tmp_path / "http.yml"
    # A relative credentials_file starts at the config file's directory, as in Prometheus.
    config.write_text("authorization:\n  credentials_file: token\n")
    assert main(["check", "lb-healthy", "--url", lb.url, "--http.config.file", str(config)]) == 0
    assert lb.seen == [("/health", "Bearer t0ken")]


def test_url_from_http_config_file(lb: HealthServer, tmp_path: Path) -> None:
    config = tmp_path / "http.yml"
    config.write_text(f"url: {lb.url}/from-file\n")
    assert main(["check", "api-healthy", "--http.config.file", str(config)]) == 0
    assert [path for path, _ in lb.seen] == ["/from-file/health"]


def test_https_and_basic_auth_from_http_config_file(
    tmp_path: Path, start_exporter: StartExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server using a web config from create-web-config, reached as Prometheus would."""
    out = tmp_path / "web"
    assert main(["config", "create-web-config", "--output-dir", str(out), "--tls",
                 "--tls.host", "127.0.0.1"]) == 0  # fmt: skip
    exporter = start_exporter("--path.procfs", str(FIXTURES / "proc" / "good"),
                              "--web.config.file", str(out / "web-config.yml"))  # fmt: skip
    url = f"https://127.0.0.1:{exporter.server.ports[0]}"
    client = out / "client.yml"
    client.write_text("basic_auth:\n  username: ceems\n  password_file: basic-auth-password\n"
                      "tls_config:\n  ca_file: cert.pem\n")  # fmt: skip
    capsys.readouterr()
    assert main(["check", "lb-healthy", "--url", url, "--http.config.file", str(client)]) == 0
    assert capsys.readouterr().out == "SUCCESS: OK\n"
    anonymous = out / "anonymous.yml"
    anonymous.write_text("tls_config:\n  ca_file: cert.pem\n")
    assert main(["check", "lb-healthy", "--url", url, "--http.config.file", str(anonymous)]) == 1
    assert "answered 401" in capsys.readouterr().err
    assert main(["check", "lb-healthy", "--url", url]) == 1  # the system CAs do not trust it
    assert "CERTIFICATE_VERIFY_FAILED" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("basic_auth: [\n", "not valid YAML"),
        ("basic_auth:\n  user: x\n", "basic_auth.username: Field required"),
        ("bearer_token: x\n", "bearer_token: unknown key"),
        ("basic_auth: {username: a, password: b}\nauthorization: {credentials: c}\n",
         "mutually exclusive"),
        ("tls_config:\n  ca_file: missing-ca.pem\n", "No such file or directory"),
    ],
)  # fmt: skip
def test_bad_http_config_file(
    lb: HealthServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    config = tmp_path / "http.yml"
    config.write_text(text)
    assert main(["check", "lb-healthy", "--url", lb.url, "--http.config.file", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ceems_tool: error:") and message in err, err
    assert lb.seen == []  # refused before any request


def test_missing_http_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yml"
    assert main(["check", "api-healthy", "--http.config.file", str(missing)]) == 1
    assert f"{missing}: cannot read" in capsys.readouterr().err


def test_credentials_in_url_and_file_conflict(
    lb: HealthServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "http.yml"
    config.write_text("basic_auth: {username: a, password: b}\n")
    url = lb.url.replace("http://", "http://u:p@")
    assert main(["check", "lb-healthy", "--url", url, "--http.config.file", str(config)]) == 1
    assert "credentials in both --url and the HTTP config file" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["localhost:9020", "ftp://host", "http://"])
def test_bad_url_is_refused(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check", "api-healthy", "--url", url])
    assert exited.value.code == 2 and "invalid URL" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["api-healthy", "lb-healthy"])
def test_flags_are_documented(command: str) -> None:
    assert undocumented_flags("check", command) == []
