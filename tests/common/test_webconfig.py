"""Parsing and validation of the exporter-toolkit web config file."""

from __future__ import annotations

import base64
from pathlib import Path

import bcrypt
import pytest

from ceems.common.webconfig import BasicAuth, WebConfigError, load_web_config, parse_web_config

HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_empty_file_means_plain_http() -> None:
    config = parse_web_config("", Path("/etc"))
    assert config.tls is None and dict(config.basic_auth_users) == {}


def test_relative_paths_resolve_against_the_config_directory() -> None:
    config = parse_web_config(
        "tls_server_config: {cert_file: a.crt, key_file: /abs/a.key, min_version: TLS13}",
        Path("/etc/ceems"),
    )
    assert config.tls is not None
    assert config.tls.cert_file == Path("/etc/ceems/a.crt")
    assert config.tls.key_file == Path("/abs/a.key")
    assert config.tls.min_version == "TLS13"


def test_go_only_tls_keys_are_accepted_and_reported() -> None:
    config = parse_web_config(
        "tls_server_config: {cert_file: a, key_file: b, cipher_suites: [TLS_AES_128_GCM_SHA256]}",
        Path("/"),
    )
    assert config.tls is not None and config.tls.ignored_keys == ("cipher_suites",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config: {cert_file: a}", "key_file: required"),
        ("tls_server_config: {cert_file: a, key_file: b, min_version: SSL3}", "min_version"),
        ("tls_server_config: {cert_file: a, key_file: b, client_auth_type: Maybe}", "client_auth"),
        (
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: "
            "RequireAndVerifyClientCert}",
            "client_ca_file: required",
        ),
        ("tls_server_config: {cert_file: a, key_file: b, bogus: 1}", "unknown keys bogus"),
        ("basic_auth_users: {alice: plaintext}", "basic_auth_users.alice: expected a bcrypt"),
        ("basic_auth_users: [alice]", "expected a mapping"),
        ('http_server_config: {headers: {X-A: "a\\nb"}}', "one-line"),
        ('http_server_config: {headers: {"X A": "b"}}', "not a header name"),
        ('http_server_config: {headers: {"X-A:": "b"}}', "not a header name"),
        ('http_server_config: {headers: {X-A: "caf\u20ac"}}', "Latin-1"),
        ("users: {}", "unknown keys users"),
        ("{unclosed", "not valid YAML"),
        ("- a list", "expected a mapping"),
    ],
)
def test_invalid_config_names_the_key(text: str, message: str) -> None:
    with pytest.raises(WebConfigError, match=message):
        parse_web_config(text, Path("/"))


def test_missing_certificate_fails_at_load(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("tls_server_config: {cert_file: none.crt, key_file: none.key}\n")
    with pytest.raises(WebConfigError, match=r"web\.yml: tls_server_config: cannot load"):
        load_web_config(path)


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (basic("alice", "pw"), True),
        (basic("alice", "PW"), False),
        (basic("bob", "pw"), False),
        ("Basic !!!notbase64", False),
        ("Basic " + base64.b64encode(b"no-colon").decode(), False),
        ("Bearer abc", False),
        (None, False),
    ],
)
def test_basic_auth(header: str | None, ok: bool) -> None:
    assert BasicAuth({"alice": HASH}).check(header) is ok


def test_verified_credentials_are_cached_but_wrong_ones_never() -> None:
    auth = BasicAuth({"alice": HASH})
    assert auth.check(basic("alice", "pw"))
    assert auth.check(basic("alice", "pw"))  # served from the cache
    assert not auth.check(basic("alice", "pw2"))


def test_malformed_stored_hash_authenticates_nobody() -> None:
    assert not BasicAuth({"alice": "$2b$10$tooshort"}).check(basic("alice", "pw"))
