"""`config create-web-config` writes a web config with basic auth and TLS; `check web-config`.

The file is exporter-toolkit's format, so ceems_exporter, ceems_api_server, ceems_lb and
Prometheus itself all read it. Secrets never land in the config: it holds the bcrypt hash,
the plain password goes to a 0600 file, and the TLS key to another.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import secrets
import string
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from ceems.common.durations import parse_duration
from ceems.common.webconfig import WebConfigError, load_web_config

WEB_CONFIG_FILE = "web-config.yml"
PASSWORD_FILE = "basic-auth-password"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
BASIC_AUTH_USER = "ceems"
PASSWORD_LENGTH = 24
# Go's bcrypt.DefaultCost, what exporter-toolkit's documentation uses.
BCRYPT_COST = 10
_PASSWORD_ALPHABET = string.ascii_letters + string.digits


class CreateWebConfigError(Exception):
    """The web config cannot be created as asked; nothing was written."""


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One file to write: name in the output directory, content and permission bits."""

    name: str
    content: bytes
    mode: int


def generate_password() -> str:
    """A random alphanumeric password (24 characters: about 143 bits)."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def hash_password(password: str) -> str:
    """The bcrypt hash exporter-toolkit expects in `basic_auth_users`."""
    hashed: bytes = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST))
    return hashed.decode()


def self_signed_certificate(
    hosts: Sequence[str],
    validity: datetime.timedelta,
    key_type: str = "ecdsa",
    client: bool = False,
) -> tuple[bytes, bytes]:
    """A self-signed certificate for `hosts` and its key, both PEM.

    The certificate is also a CA, so peers can trust it by naming it as their CA file.
    IP addresses become IP SANs, everything else DNS SANs (clients ignore the CN).
    `client`: a TLS client's certificate (for `client_auth_type`), not a server's.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as err:
        raise CreateWebConfigError(
            "--tls needs the Python package 'cryptography' (pip install cryptography)"
        ) from err
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if key_type == "ecdsa"
        else rsa.generate_private_key(public_exponent=65537, key_size=3072)
    )
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=key_type == "rsa",
                key_cert_sign=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        # OpenSSL's strict verification (Python 3.13's default) wants key identifiers on CAs.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def web_config_files(
    password: str | None,
    hosts: Sequence[str],
    validity: datetime.timedelta | None,
    key_type: str = "ecdsa",
) -> list[OutputFile]:
    """The files of a web config: basic auth when `password`, TLS when `validity`.

    The web config comes last, so a writer that stops early never leaves a config naming
    files that are not there.
    """
    config: dict[str, Any] = {}
    files: list[OutputFile] = []
    if validity is not None:
        cert_pem, key_pem = self_signed_certificate(hosts, validity, key_type)
        files += [OutputFile(CERT_FILE, cert_pem, 0o644), OutputFile(KEY_FILE, key_pem, 0o600)]
        # Relative paths: exporter-toolkit resolves them against the config's directory.
        config["tls_server_config"] = {"cert_file": CERT_FILE, "key_file": KEY_FILE}
    if password is not None:
        files.append(OutputFile(PASSWORD_FILE, f"{password}\n".encode(), 0o600))
        config["basic_auth_users"] = {BASIC_AUTH_USER: hash_password(password)}
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    files.append(OutputFile(WEB_CONFIG_FILE, text.encode(), 0o600))
    return files


def write_files(directory: Path, files: Sequence[OutputFile], force: bool) -> None:
    """Write the files with their modes; refuse existing ones unless `force`.

    Every file is first written to a temporary name, and only when all are on disk are they
    renamed into place, so a failure while writing (full disk) leaves the old files as they were.
    """
    existing = [str(directory / f.name) for f in files if (directory / f.name).exists()]
    if existing and not force:
        raise CreateWebConfigError(
            f"refusing to overwrite {', '.join(existing)} (use --force to replace)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for item in files:
            temporary = directory / f".{item.name}.tmp-{secrets.token_hex(4)}"
            # The mode is set at creation: a key is never readable by others, even briefly.
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, item.mode)
            staged.append((temporary, directory / item.name))
            with os.fdopen(fd, "wb") as out:
                out.write(item.content)
        for temporary, final in staged:
            temporary.replace(final)
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)


def _validity(text: str) -> datetime.timedelta:
    try:
        validity = parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    if validity <= datetime.timedelta(0):
        raise argparse.ArgumentTypeError(f"{text!r}: the validity must be positive")
    return validity


def _create(args: argparse.Namespace) -> int:
    if not args.basic_auth and not args.tls:
        print("ceems_tool: error: nothing to create: --no-basic-auth without --tls",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.tls_hosts and not args.tls:
        print("ceems_tool: error: --tls.host without --tls", file=sys.stderr)
        return 1
    if args.tls and not args.tls_hosts:
        print("ceems_tool: error: --tls needs at least one --tls.host (DNS name or IP "
              "address the server is reached at)", file=sys.stderr)  # fmt: skip
        return 1
    password = generate_password() if args.basic_auth else None
    directory: Path = args.output_dir
    try:
        files = web_config_files(
            password, args.tls_hosts, args.tls_validity if args.tls else None, args.tls_key_type
        )
        write_files(directory, files, args.force)
    except (CreateWebConfigError, OSError) as err:
        print(f"ceems_tool: error: {err}", file=sys.stderr)
        return 1
    print(f"web config written to {directory / WEB_CONFIG_FILE}", file=sys.stderr)
    if password is not None:
        print(f"basic auth user {BASIC_AUTH_USER!r}, password {password} (also in "
              f"{directory / PASSWORD_FILE}, mode 0600): give it to the clients (Prometheus' "
              "basic_auth)", file=sys.stderr)  # fmt: skip
    return 0


def check_web_config(path: Path) -> str:
    """`SUCCESS` or `FAILED: reason` for one file, checked by the servers' own loader."""
    try:
        config = load_web_config(path)
    except WebConfigError as err:
        reason = str(err).removeprefix(f"{path}: ")
        return f"FAILED: {' '.join(reason.split())}"  # one line per file (YAML errors span several)
    if config.tls is not None and config.tls.ignored_keys:
        return f"SUCCESS (not applied: {', '.join(config.tls.ignored_keys)})"
    return "SUCCESS"


def _check(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        verdict = check_web_config(path)
        ok = verdict.startswith("SUCCESS")
        failed |= not ok
        print(f"{path} {verdict}", file=sys.stdout if ok else sys.stderr)
    return 1 if failed else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `create-web-config` to the `config` group."""
    parser = subparsers.add_parser(
        "create-web-config",
        help="Create a web config file with basic auth and/or self-signed TLS.",
        description="Create web-config.yml (exporter-toolkit format) with a random basic-auth "
        f"password for user {BASIC_AUTH_USER!r} and, with --tls, a self-signed certificate.",
    )
    parser.add_argument(
        "--basic-auth",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"Add user {BASIC_AUTH_USER!r} with a random password (default: on).",
    )
    parser.add_argument(
        "--tls", action="store_true", help="Add a self-signed certificate (needs --tls.host)."
    )
    parser.add_argument(
        "--tls.host",
        dest="tls_hosts",
        action="append",
        default=[],
        metavar="HOST",
        help="DNS name or IP address of the server, for the certificate; repeatable.",
    )
    parser.add_argument(
        "--tls.validity",
        dest="tls_validity",
        type=_validity,
        default=datetime.timedelta(hours=8760),
        metavar="DURATION",
        help="How long the certificate is valid (default: 8760h).",
    )
    parser.add_argument(
        "--tls.key-type",
        dest="tls_key_type",
        choices=("ecdsa", "rsa"),
        default="ecdsa",
        help="ECDSA P-256 (default) or RSA 3072-bit key.",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("config"),
        metavar="DIR",
        help="Directory for the files (default: config).",
    )
    parser.add_argument("--force", action="store_true", help="Replace existing files.")
    parser.set_defaults(func=_create)


def register_check(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `web-config` to the `check` group."""
    parser = subparsers.add_parser(
        "web-config",
        help="Check web config files as the CEEMS servers load them.",
        description="Check web config files; print FILE SUCCESS or FILE FAILED: reason, "
        "exit 1 if any failed.",
    )
    parser.add_argument("files", type=Path, nargs="+", metavar="FILE")
    parser.set_defaults(func=_check)
