"""ceems_api_server and ceems_lb apply their web config whole: client certificates are
required and checked, TLS versions below `min_version` are refused, and the
`http_server_config` headers are on every answer."""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from ceems.cli.tool.webconfig import self_signed_certificate

pytest.importorskip("cryptography")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client_certificate(folder: Path, name: str) -> None:
    """A self-signed certificate for TLS clients (its own CA) and its key, as name.crt/.key."""
    cert, key = self_signed_certificate([name], datetime.timedelta(days=1), client=True)
    (folder / f"{name}.crt").write_bytes(cert)
    (folder / f"{name}.key").write_bytes(key)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A web config requiring client certificates signed by `trusted.crt`, TLS 1.3 only."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_certificate(["127.0.0.1"], datetime.timedelta(days=1))
    (folder / "server.crt").write_bytes(cert)
    (folder / "server.key").write_bytes(key)
    client_certificate(folder, "trusted")
    client_certificate(folder, "stranger")
    (folder / "web.yml").write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": "server.crt",
                    "key_file": "server.key",
                    "client_auth_type": "RequireAndVerifyClientCert",
                    "client_ca_file": "trusted.crt",
                    "min_version": "TLS13",
                },
                "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
            }
        )
    )
    return folder


def context(
    folder: Path, client: str | None, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=folder / "server.crt")
    if client is not None:
        ctx.load_cert_chain(folder / f"{client}.crt", folder / f"{client}.key")
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


@contextlib.contextmanager
def running(args: list[str], url: str, folder: Path) -> Iterator[None]:
    log = folder / f"{Path(args[0]).name}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url, verify=context(folder, "trusted"), timeout=2)
                break
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def servers(tls_files: Path) -> Iterator[dict[str, str]]:
    """ceems_api_server and ceems_lb, both with the web config; their /health URLs."""
    data = tls_files / "data"
    api_config = tls_files / "api.yml"
    api_config.write_text(
        yaml.safe_dump({"ceems_api_server": {"data": {"path": str(data), "update_interval": "1h"}}})
    )
    lb_config = tls_files / "lb.yml"
    lb_config.write_text(
        yaml.safe_dump(
            {
                "ceems_lb": {
                    "backends": [{"id": "c0", "tsdb": [{"web": {"url": "http://127.0.0.1:9"}}]}]
                },
                "ceems_api_server": {"data": {"path": str(data)}},
            }
        )
    )
    web = str(tls_files / "web.yml")
    api_port, lb_port = free_port(), free_port()
    api_url = f"https://127.0.0.1:{api_port}/health"
    lb_url = f"https://127.0.0.1:{lb_port}/health"
    bin_dir = Path(sys.executable).parent
    api = [str(bin_dir / "ceems_api_server"), "--config.file", str(api_config),
           "--web.listen-address", f"127.0.0.1:{api_port}", "--web.config.file", web]  # fmt: skip
    lb = [sys.executable, "-m", "ceems.lb.cli", "--config.file", str(lb_config),
          "--web.listen-address", f"127.0.0.1:{lb_port}", "--web.config.file", web]  # fmt: skip
    with running(api, api_url, tls_files), running(lb, lb_url, tls_files):
        yield {"ceems_api_server": api_url, "ceems_lb": lb_url}


@pytest.mark.parametrize("server", ["ceems_api_server", "ceems_lb"])
def test_a_trusted_client_certificate_is_served(
    servers: dict[str, str], tls_files: Path, server: str
) -> None:
    response = httpx.get(servers[server], verify=context(tls_files, "trusted"))
    assert response.status_code == 200
    assert response.headers["x-frame-options"] == "deny"


@pytest.mark.parametrize("server", ["ceems_api_server", "ceems_lb"])
@pytest.mark.parametrize("client", [None, "stranger"])
def test_no_or_an_unknown_client_certificate_is_refused(
    servers: dict[str, str], tls_files: Path, server: str, client: str | None
) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(servers[server], verify=context(tls_files, client), timeout=5)


@pytest.mark.parametrize("server", ["ceems_api_server", "ceems_lb"])
def test_tls_below_min_version_is_refused(
    servers: dict[str, str], tls_files: Path, server: str
) -> None:
    old = context(tls_files, "trusted", max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(servers[server], verify=old, timeout=5)
