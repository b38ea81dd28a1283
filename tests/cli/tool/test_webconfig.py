"""`ceems_tool config create-web-config` and `ceems_tool check web-config`."""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path

import bcrypt
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ceems.cli.tool.main import main
from ceems.common.webconfig import load_web_config
from tests.certs import self_signed
from tests.cli.tool.documented import undocumented_flags
from tests.conftest import FIXTURES, StartExporter

NODE_FLAGS = ("--path.procfs", str(FIXTURES / "proc" / "good"), "--collector.hostname", "n1",
              "--no-collector.rapl")  # fmt: skip


def create(out: Path, *flags: str) -> int:
    return main(["config", "create-web-config", "--output-dir", str(out), *flags])


def password_from_stderr(stderr: str) -> str:
    line = next(line for line in stderr.splitlines() if "password" in line)
    return line.split("password ", 1)[1].split()[0]


def test_creates_tls_and_basic_auth_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "config"
    assert create(out, "--tls", "--tls.host", "127.0.0.1", "--tls.host", "node1.example") == 0
    printed = password_from_stderr(capsys.readouterr().err)
    password = (out / "basic-auth-password").read_text().strip()
    assert printed == password and len(password) == 24
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes == {"web-config.yml": 0o600, "basic-auth-password": 0o600, "key.pem": 0o600,
                     "cert.pem": 0o644}  # fmt: skip
    config = load_web_config(out / "web-config.yml")  # the servers' own loader
    assert config.tls is not None and config.tls.cert_file == out / "cert.pem"
    assert list(config.basic_auth_users) == ["ceems"]
    assert bcrypt.checkpw(password.encode(), config.basic_auth_users["ceems"].encode())
    assert password not in (out / "web-config.yml").read_text()
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["node1.example"]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert 364 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 366


def test_exporter_accepts_the_generated_user_over_https(
    tmp_path: Path, start_exporter: StartExporter, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "config"
    assert create(out, "--tls", "--tls.host", "127.0.0.1", "--tls.validity", "2h") == 0
    password = password_from_stderr(capsys.readouterr().err)
    exporter = start_exporter(*NODE_FLAGS, "--web.config.file", str(out / "web-config.yml"))
    endpoint = f"https://127.0.0.1:{exporter.server.ports[0]}/metrics"
    trust = ssl.create_default_context(cafile=out / "cert.pem")
    ok = httpx.get(endpoint, verify=trust, auth=("ceems", password))
    assert ok.status_code == 200 and "ceems_cpu_count" in ok.text
    assert httpx.get(endpoint, verify=trust).status_code == 401
    assert httpx.get(endpoint, verify=trust, auth=("ceems", password[:-1])).status_code == 401


def test_rsa_key_is_usable_by_the_loader(tmp_path: Path) -> None:
    out = tmp_path / "config"
    assert create(out, "--no-basic-auth", "--tls", "--tls.host", "localhost",
                  "--tls.key-type", "rsa") == 0  # fmt: skip
    config = load_web_config(out / "web-config.yml")  # also loads cert and key into a context
    assert config.tls is not None and not config.basic_auth_users
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    assert isinstance(cert.public_key(), rsa.RSAPublicKey)
    assert not (out / "basic-auth-password").exists()


def test_basic_auth_only(tmp_path: Path) -> None:
    out = tmp_path / "config"
    assert create(out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["basic-auth-password", "web-config.yml"]
    assert load_web_config(out / "web-config.yml").tls is None


def test_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "config"
    out.mkdir()
    (out / "web-config.yml").write_text("keep: me\n")
    assert create(out) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "web-config.yml").read_text() == "keep: me\n"
    assert not (out / "basic-auth-password").exists()  # nothing half-written
    assert create(out, "--force") == 0
    assert "basic_auth_users" in (out / "web-config.yml").read_text()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporaries


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls"], "--tls needs at least one --tls.host"),
        (["--tls.host", "localhost"], "--tls.host without --tls"),
        (["--no-basic-auth"], "nothing to create"),
    ],
)
def test_inconsistent_flags_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert create(tmp_path / "config", *flags) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "config").exists()


@pytest.mark.parametrize("validity", ["soon", "0s", "-1h"])
def test_bad_validity_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], validity: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        create(tmp_path, "--tls", "--tls.host", "localhost", f"--tls.validity={validity}")
    assert exited.value.code == 2 and "--tls.validity" in capsys.readouterr().err


def test_unwritable_output_dir_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert create(blocker / "config") == 1
    assert "ceems_tool: error:" in capsys.readouterr().err


def test_tls_without_cryptography_says_what_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)  # any import of it now fails
    assert create(tmp_path / "config", "--tls", "--tls.host", "localhost") == 1
    assert "needs the Python package 'cryptography'" in capsys.readouterr().err
    assert not (tmp_path / "config").exists()


def write_cases(directory: Path) -> dict[str, tuple[Path, str]]:
    """Web config files that the loader refuses, with a piece of the expected reason."""
    cert, key = self_signed(directory)
    cases = {
        "yaml": "basic_auth_users: [\n",
        "unknown-key": "basic_auth_user: {}\n",
        "plain-password": "basic_auth_users:\n  ceems: s3cret\n",
        "missing-key-file": f"tls_server_config:\n  cert_file: {cert.name}\n  key_file: none.pem\n",
        "swapped-files": f"tls_server_config:\n  cert_file: {key.name}\n  key_file: {cert.name}\n",
    }
    reasons = {
        "yaml": "not valid YAML",
        "unknown-key": "unknown keys basic_auth_user",
        "plain-password": "basic_auth_users.ceems: expected a bcrypt hash",
        "missing-key-file": "cannot load certificate/key",
        "swapped-files": "cannot load certificate/key",
    }
    files = {}
    for name, text in cases.items():
        path = directory / f"{name}.yml"
        path.write_text(text)
        files[name] = (path, reasons[name])
    return files


def test_check_web_config_reports_each_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good"
    assert create(good, "--tls", "--tls.host", "localhost") == 0
    capsys.readouterr()
    bad = write_cases(tmp_path)
    assert main(["check", "web-config", str(good / "web-config.yml")]) == 0
    assert capsys.readouterr().out == f"{good / 'web-config.yml'} SUCCESS\n"
    paths = [str(path) for path, _ in bad.values()]
    assert main(["check", "web-config", str(good / "web-config.yml"), *paths]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"{good / 'web-config.yml'} SUCCESS\n"
    lines = captured.err.splitlines()
    assert len(lines) == len(bad)
    for line, (path, reason) in zip(lines, bad.values(), strict=True):
        assert line.startswith(f"{path} FAILED: ") and reason in line, line


def test_check_web_config_names_settings_it_does_not_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = self_signed(tmp_path)
    config = tmp_path / "web.yml"
    config.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
                      "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n")  # fmt: skip
    assert main(["check", "web-config", str(config)]) == 0
    assert capsys.readouterr().out == f"{config} SUCCESS (not applied: cipher_suites)\n"


def test_ceems_tool_entry_point(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yml"
    tool = [sys.executable, "-m", "ceems.cli.tool.main"]
    created = subprocess.run(
        [*tool, "config", "create-web-config", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    checked = subprocess.run(
        [*tool, "check", "web-config", str(tmp_path / "web-config.yml"), str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 1
    assert checked.stdout == f"{tmp_path / 'web-config.yml'} SUCCESS\n"
    assert checked.stderr == f"{missing} FAILED: cannot read: No such file or directory\n"


@pytest.mark.parametrize("command", [("config", "create-web-config"), ("check", "web-config")])
def test_flags_are_documented(command: tuple[str, str]) -> None:
    assert undocumented_flags(*command) == []
