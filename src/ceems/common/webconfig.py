"""The Prometheus exporter-toolkit web config file: TLS server settings and basic-auth users.

Same YAML as Prometheus and its exporters (`tls_server_config`, `http_server_config`,
`basic_auth_users`), so one file serves the whole stack. Relative file paths are resolved
against the config file's directory, as the toolkit does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml


class WebConfigError(ValueError):
    """The web config file is unreadable or invalid; the message names the key."""


CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
    "client_allowed_sans",
}
_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}
# Go cipher-suite and curve names do not map onto OpenSSL's; Python's defaults are safe, so
# these keys are accepted for file compatibility and reported as not applied.
# RFC 9110 field names (tokens); values go out as Latin-1 on one line.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
NOT_APPLIED_TLS_KEYS = ("cipher_suites", "prefer_server_cipher_suites", "curve_preferences")


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Server TLS settings, file paths already resolved."""

    cert_file: Path
    key_file: Path
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    min_version: str = "TLS12"
    max_version: str | None = None
    ignored_keys: tuple[str, ...] = ()

    def ssl_context(self) -> ssl.SSLContext:
        """A server-side SSLContext; raises WebConfigError if the files cannot be loaded."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca_file is not None:
                context.load_verify_locations(cafile=self.client_ca_file)
        except (OSError, ssl.SSLError) as err:
            raise WebConfigError(f"tls_server_config: cannot load certificate/key: {err}") from err
        context.minimum_version = TLS_VERSIONS[self.min_version]
        if self.max_version:
            context.maximum_version = TLS_VERSIONS[self.max_version]
        context.verify_mode = CLIENT_AUTH_TYPES[self.client_auth_type]
        return context


class BasicAuth:
    """Checks `Authorization: Basic` headers against bcrypt hashes, caching successes.

    bcrypt costs tens to hundreds of milliseconds per check by design; Prometheus scrapes
    every few seconds with the same credentials, so verified (user, password) pairs are
    remembered under a keyed digest, never in clear text.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        self._key = secrets.token_bytes(32)
        self._verified: set[bytes] = set()
        self._lock = threading.Lock()
        # Unknown users still pay for one bcrypt check, so timing does not reveal names.
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(4))

    def __bool__(self) -> bool:
        return bool(self._users)

    def check(self, header: str | None) -> bool:
        """True when the header carries a configured user and the matching password."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        stored = self._users.get(user)
        digest = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if stored is not None and digest in self._verified:
                return True
        try:
            ok = bcrypt.checkpw(password.encode(), stored or self._dummy) and stored is not None
        except ValueError:  # a malformed stored hash never authenticates anyone
            ok = False
        if ok:
            with self._lock:
                if len(self._verified) > 10_000:  # bounded: credentials rarely change
                    self._verified.clear()
                self._verified.add(digest)
        return ok


@dataclass(frozen=True, slots=True)
class WebConfig:
    """A parsed web config file; empty means plain HTTP without authentication."""

    tls: TlsConfig | None = None
    basic_auth_users: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


def uvicorn_options(web: WebConfig) -> dict[str, Any]:
    """uvicorn.Config's arguments for the web config: the whole `tls_server_config` (client
    certificates, TLS versions) through `ssl_context_factory`, as uvicorn's own certificate
    options would leave `client_auth_type` and `min_version` unapplied, and the
    `http_server_config` headers on every answer."""
    options: dict[str, Any] = {"headers": list(web.headers.items())}
    if web.tls is not None:
        context = web.tls.ssl_context()
        options["ssl_context_factory"] = lambda _config, _default: context
    return options


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise WebConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _tls_config(raw: dict[str, Any], base: Path) -> TlsConfig:
    unknown = sorted(set(raw) - _TLS_KEYS)
    if unknown:
        raise WebConfigError(f"tls_server_config: unknown keys {', '.join(unknown)}")
    for key in ("cert_file", "key_file"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise WebConfigError(f"tls_server_config.{key}: required, a file path")
    auth_type = raw.get("client_auth_type") or "NoClientCert"
    if auth_type not in CLIENT_AUTH_TYPES:
        raise WebConfigError(
            f"tls_server_config.client_auth_type: {auth_type!r} is not one of "
            f"{', '.join(CLIENT_AUTH_TYPES)}"
        )
    ca_file = raw.get("client_ca_file")
    if auth_type in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert") and not ca_file:
        raise WebConfigError(f"tls_server_config.client_ca_file: required with {auth_type}")
    for key in ("min_version", "max_version"):
        if raw.get(key) is not None and raw[key] not in TLS_VERSIONS:
            raise WebConfigError(
                f"tls_server_config.{key}: {raw[key]!r} is not one of {', '.join(TLS_VERSIONS)}"
            )
    return TlsConfig(
        cert_file=base / raw["cert_file"],
        key_file=base / raw["key_file"],
        client_auth_type=auth_type,
        client_ca_file=base / ca_file if ca_file else None,
        min_version=raw.get("min_version") or "TLS12",
        max_version=raw.get("max_version"),
        ignored_keys=tuple(k for k in NOT_APPLIED_TLS_KEYS if raw.get(k)),
    )


def parse_web_config(text: str, base: Path) -> WebConfig:
    """Validate the YAML text of a web config file whose relative paths start at `base`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise WebConfigError(f"not valid YAML: {err}") from err
    top = _mapping(raw, "web config")
    unknown = sorted(set(top) - _TOP_KEYS)
    if unknown:
        raise WebConfigError(f"unknown keys {', '.join(unknown)}")
    tls_raw = _mapping(top.get("tls_server_config"), "tls_server_config")
    tls = _tls_config(tls_raw, base) if tls_raw else None
    users = _mapping(top.get("basic_auth_users"), "basic_auth_users")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise WebConfigError(
                f"basic_auth_users.{user}: expected a bcrypt hash ($2a$/$2b$/$2y$)"
            )
    http = _mapping(top.get("http_server_config"), "http_server_config")
    headers = _mapping(http.get("headers"), "http_server_config.headers")
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise WebConfigError(f"http_server_config.headers: {name!r} is not a header name")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise WebConfigError(f"http_server_config.headers.{name}: expected a one-line string")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError as err:
            raise WebConfigError(
                f"http_server_config.headers.{name}: only Latin-1 characters can be sent"
            ) from err
    return WebConfig(tls=tls, basic_auth_users=users, headers=headers)


def load_web_config(path: Path) -> WebConfig:
    """Read and validate a web config file, naming the file in every error."""
    try:
        text = path.read_text()
    except OSError as err:
        raise WebConfigError(f"{path}: cannot read: {err.strerror}") from err
    try:
        config = parse_web_config(text, path.parent)
        if config.tls is not None:
            config.tls.ssl_context()  # fail at start-up, not at the first connection
    except WebConfigError as err:
        raise WebConfigError(f"{path}: {err}") from err
    return config
