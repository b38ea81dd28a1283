"""Self-signed certificates generated in tests, for the TLS paths of servers and clients."""

from __future__ import annotations

import datetime
from pathlib import Path

from ceems.cli.tool.webconfig import self_signed_certificate


def self_signed(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A CA-capable certificate for 127.0.0.1 and its key, as PEM files in `directory`.

    Made by the same code as `ceems_tool config create-web-config --tls`.
    """
    cert, key = self_signed_certificate(["127.0.0.1"], datetime.timedelta(days=1))
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert)
    key_file.write_bytes(key)
    return cert_file, key_file
