"""The API server's config file: CEEMS' `ceems_api_server`, `clusters` and `updaters` sections."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from ceems.common.config import StrictModel
from ceems.common.durations import coerce_duration
from ceems.common.httpconfig import HttpClientConfig

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DataConfig(StrictModel):
    """`ceems_api_server.data`: where and how long units are kept, how often they update."""

    path: str = "data"
    url: str = ""  # SQLAlchemy URL of a PostgreSQL database; empty: SQLite under `path`
    retention_period: timedelta = timedelta(days=30)
    update_interval: timedelta = timedelta(minutes=15)
    max_update_interval: timedelta = timedelta(hours=1)
    update_from: datetime | None = None
    time_zone: str = "UTC"
    backup_path: str = ""
    backup_interval: timedelta = timedelta(days=1)
    skip_delete_old_units: bool = False

    _durations = field_validator(
        "retention_period", "update_interval", "max_update_interval", "backup_interval",
        mode="before",
    )(coerce_duration)  # fmt: skip

    @field_validator("update_interval", "max_update_interval", "backup_interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo("UTC" if value == "Local" else value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r}") from err
        return value

    @field_validator("update_from")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a UTC offset, e.g. 2024-09-08T00:00:00Z")
        return value


class GrafanaTeamsConfig(StrictModel):
    """`ceems_api_server.admin.grafana`: admins synced from Grafana team members."""

    url: str = ""
    teams_ids: list[str] = Field(default_factory=list)
    basic_auth: dict[str, str] | None = None
    authorization: dict[str, str] | None = None
    tls_config: dict[str, Any] | None = None

    def web(self) -> HttpClientConfig:
        """The Grafana URL and credentials as an HTTP client config."""
        raw: dict[str, Any] = {"url": self.url}
        for key in ("basic_auth", "authorization", "tls_config"):
            if getattr(self, key) is not None:
                raw[key] = getattr(self, key)
        return HttpClientConfig.model_validate(raw)


class AdminConfig(StrictModel):
    """`ceems_api_server.admin`."""

    users: list[str] = Field(default_factory=list)
    grafana: GrafanaTeamsConfig = Field(default_factory=GrafanaTeamsConfig)


class ServerWebConfig(StrictModel):
    """`ceems_api_server.web`."""

    url: str = ""  # external URL, for links
    requests_limit: int = Field(default=0, ge=0)  # per-minute per-client limit, 0: none
    max_query: timedelta = timedelta(days=365)
    user_header_names: list[str] = Field(default_factory=lambda: ["X-Grafana-User"])
    cors_origin: str = ""

    _max_query = field_validator("max_query", mode="before")(coerce_duration)


class ServerConfig(StrictModel):
    """`ceems_api_server` section."""

    data: DataConfig = Field(default_factory=DataConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    web: ServerWebConfig = Field(default_factory=ServerWebConfig)


class CliConfig(StrictModel):
    """`clusters[].cli`: where a manager's command-line tools are."""

    path: str = ""
    environment_variables: dict[str, str] = Field(default_factory=dict)


class ClusterConfig(StrictModel):
    """One entry of `clusters`."""

    id: str
    manager: str
    updaters: list[str] = Field(default_factory=list)
    cli: CliConfig = Field(default_factory=CliConfig)
    web: HttpClientConfig = Field(default_factory=HttpClientConfig)
    extra_config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("must start with a letter or digit and use only [A-Za-z0-9_.-]")
        return value


class UpdaterConfig(StrictModel):
    """One entry of `updaters`."""

    id: str
    updater: str
    web: HttpClientConfig = Field(default_factory=HttpClientConfig)
    extra_config: dict[str, Any] = Field(default_factory=dict)


class ApiServerConfig(StrictModel):
    """The whole file."""

    ceems_api_server: ServerConfig = Field(default_factory=ServerConfig)
    clusters: list[ClusterConfig] = Field(default_factory=list)
    updaters: list[UpdaterConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> ApiServerConfig:
        for kind, ids in (("clusters", [c.id for c in self.clusters]),
                          ("updaters", [u.id for u in self.updaters])):  # fmt: skip
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            if duplicates:
                raise ValueError(f"{kind}: duplicate id(s) {', '.join(duplicates)}")
        known = {u.id for u in self.updaters}
        for cluster in self.clusters:
            unknown = [u for u in cluster.updaters if u not in known]
            if unknown:
                raise ValueError(
                    f"clusters: cluster {cluster.id!r} uses undefined updater(s) "
                    f"{', '.join(unknown)} (defined: {', '.join(sorted(known)) or 'none'})"
                )
        return self
