"""`--url` and `--http.config.file` of the ceems_tool commands that talk to a server.

The file is a Prometheus HTTP client config (as `promtool --http.config.file` reads):
`basic_auth`, `authorization`, `tls_config`, `http_headers`, `proxy_url` at the top level.
Relative file paths in it start at the file's directory, as in Prometheus.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx

from ceems.common.config import ConfigError, load_config
from ceems.common.httpconfig import HttpClientConfig


def parse_url(text: str) -> str:
    """An argparse type: an http(s) URL with a host, without trailing slash."""
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as err:
        raise argparse.ArgumentTypeError(f"invalid URL {text!r}: {err}") from err
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(
            f"invalid URL {text!r}: expected http://HOST[:PORT][/PREFIX] or https://..."
        )
    return text.rstrip("/")


def add_http_flags(parser: argparse.ArgumentParser, default_url: str, service: str) -> None:
    """Add `--url` and `--http.config.file` for a command talking to `service`."""
    parser.add_argument(
        "--url",
        type=parse_url,
        default=None,
        help=f"URL of the {service} (default: the config file's url, else {default_url}).",
    )
    parser.add_argument(
        "--http.config.file",
        dest="http_config_file",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"HTTP client config (basic_auth, authorization, tls_config) for the {service}.",
    )
    parser.set_defaults(default_url=default_url)


def _resolved(base: Path, path: str) -> str:
    return str(base / path) if path and not Path(path).is_absolute() else path


def _with_paths_from(config: HttpClientConfig, base: Path) -> HttpClientConfig:
    """The config with its relative file paths made relative to `base`."""
    update: dict[str, object] = {}
    if config.basic_auth is not None:
        update["basic_auth"] = config.basic_auth.model_copy(
            update={"password_file": _resolved(base, config.basic_auth.password_file)}
        )
    if config.authorization is not None:
        update["authorization"] = config.authorization.model_copy(
            update={"credentials_file": _resolved(base, config.authorization.credentials_file)}
        )
    if config.tls_config is not None:
        tls = config.tls_config
        update["tls_config"] = tls.model_copy(
            update={
                key: _resolved(base, getattr(tls, key))
                for key in ("ca_file", "cert_file", "key_file")
            }
        )
    update["http_headers"] = {
        name: spec.model_copy(update={"files": [_resolved(base, f) for f in spec.files]})
        for name, spec in config.http_headers.items()
    }
    return config.model_copy(update=update)


def load_client_config(
    args: argparse.Namespace, timeout_s: float | None = None
) -> HttpClientConfig:
    """The client config from `--http.config.file` (if any) with `--url` applied.

    Raises ConfigError for an unreadable or invalid file, and for credentials given both in
    the URL and in the file (which would win is not obvious, so neither does).
    """
    config = HttpClientConfig()
    if args.http_config_file is not None:
        path: Path = args.http_config_file
        config = _with_paths_from(load_config(path, HttpClientConfig), path.parent)
    url = args.url or config.url or args.default_url
    has_auth = config.basic_auth is not None or config.authorization is not None
    if httpx.URL(url).userinfo and has_auth:
        raise ConfigError(
            f"{args.http_config_file}: credentials in both --url and the HTTP config file"
        )
    update: dict[str, object] = {"url": url}
    if timeout_s is not None:
        update["timeout"] = timeout_s
    return config.model_copy(update=update)


def redacted(url: str) -> str:
    """The URL without user and password, for messages."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None)) if parsed.userinfo else url
