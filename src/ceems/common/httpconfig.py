"""HTTP client configuration as Prometheus writes it (`web:` sections), turned into httpx.

Shared by the API server (TSDB updater, slurmrestd, Grafana) and the load balancer's
backends. Secrets can come from files so they need not sit in the config itself.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, model_validator

from ceems.common.config import StrictModel


class BasicAuth(StrictModel):
    """`basic_auth:` with the password inline or in a file."""

    username: str
    password: str = ""
    password_file: str = ""

    def resolved_password(self) -> str:
        """The password, read from `password_file` when given."""
        return Path(self.password_file).read_text().strip() if self.password_file else self.password


class Authorization(StrictModel):
    """`authorization:` header with type (Bearer) and credentials inline or in a file."""

    type: str = "Bearer"
    credentials: str = ""
    credentials_file: str = ""

    def header(self) -> str:
        """The Authorization header value."""
        secret = (
            Path(self.credentials_file).read_text().strip()
            if self.credentials_file
            else self.credentials
        )
        return f"{self.type} {secret}"


class TlsConfig(StrictModel):
    """`tls_config:` of a client."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    insecure_skip_verify: bool = False


class HeaderValues(StrictModel):
    """One header of `http_headers:`: literal values, secrets, or files holding the value."""

    values: list[str] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list)


class HttpClientConfig(StrictModel):
    """A `web:` section: where a service is and how to authenticate to it."""

    url: str = ""
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    tls_config: TlsConfig | None = None
    http_headers: dict[str, HeaderValues] = Field(default_factory=dict)
    proxy_url: str = ""
    timeout: float = Field(default=30.0, gt=0, description="seconds per request")

    @model_validator(mode="after")
    def _one_auth(self) -> HttpClientConfig:
        if self.basic_auth is not None and self.authorization is not None:
            raise ValueError("basic_auth and authorization are mutually exclusive")
        return self

    def headers(self) -> dict[str, str]:
        """Headers every request carries (auth and `http_headers`)."""
        headers: dict[str, str] = {}
        for name, spec in self.http_headers.items():
            values = [*spec.values, *spec.secrets]
            values += [Path(f).read_text().strip() for f in spec.files]
            if values:
                headers[name] = ", ".join(values)
        if self.authorization is not None:
            headers["Authorization"] = self.authorization.header()
        return headers

    def verify(self) -> ssl.SSLContext | bool:
        """httpx `verify=`: a context from tls_config, or default verification."""
        tls = self.tls_config
        if tls is None:
            return True
        if tls.insecure_skip_verify:
            return False
        context = ssl.create_default_context(cafile=tls.ca_file or None)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file or None)
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `httpx.Client` (base_url, auth, headers, TLS, timeout)."""
        kwargs: dict[str, Any] = {
            "headers": self.headers(),
            "verify": self.verify(),
            "timeout": self.timeout,
        }
        if self.url:
            kwargs["base_url"] = self.url
        if self.basic_auth is not None:
            kwargs["auth"] = httpx.BasicAuth(
                self.basic_auth.username, self.basic_auth.resolved_password()
            )
        if self.proxy_url:
            kwargs["proxy"] = self.proxy_url
        return kwargs

    def client(self) -> httpx.Client:
        """A synchronous client for this service."""
        return httpx.Client(**self.client_kwargs())
