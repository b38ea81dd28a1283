"""The `ceems_lb` config file: CEEMS' `ceems_lb` section, plus the API server sections it shares.

One file can serve both the API server and the load balancer, as in CEEMS: the LB reads
`ceems_lb`, the `data` (direct, read-only store access) or `web` (its `/units/verify`)
part of `ceems_api_server`, and the cluster ids of `clusters`; everything else in those
sections belongs to the API server and is accepted without being used here.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator, model_validator

from ceems.api.config import AdminConfig, DataConfig, ServerWebConfig
from ceems.common.config import StrictModel
from ceems.common.durations import coerce_duration
from ceems.common.httpconfig import HttpClientConfig
from ceems.tsdb.promql_ast import PromqlError, metric_names

DEFAULT_LISTEN = ":9030"
DEFAULT_PYROSCOPE_LISTEN = ":9040"


class Strategy(StrEnum):
    """How a request picks one of a cluster's live backends."""

    ROUND_ROBIN = "round-robin"
    LEAST_CONNECTION = "least-connection"
    # CEEMS: the backend whose retention holds the query's time range (TSDB only).
    RESOURCE_BASED = "resource-based"


class BackendConfig(StrictModel):
    """One TSDB or Pyroscope server: how to reach it and which labels to hide."""

    web: HttpClientConfig
    filter_labels: list[str] = Field(default_factory=list)

    @field_validator("web")
    @classmethod
    def _has_url(cls, web: HttpClientConfig) -> HttpClientConfig:
        if not web.url.startswith(("http://", "https://")):
            raise ValueError(f"web.url must be an http(s) URL, not {web.url!r}")
        return web


class ClusterBackends(StrictModel):
    """The servers holding one cluster's data (replicas of each other)."""

    id: str = Field(min_length=1)
    tsdb: list[BackendConfig] = Field(default_factory=list)
    pyroscope: list[BackendConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> ClusterBackends:
        if not self.tsdb and not self.pyroscope:
            raise ValueError(f"backend {self.id!r} lists neither tsdb nor pyroscope servers")
        return self


class LbSection(StrictModel):
    """`ceems_lb:` (CEEMS keys, then this project's additions, all optional)."""

    strategy: Strategy = Strategy.ROUND_ROBIN
    backends: list[ClusterBackends] = Field(min_length=1)
    # Node-level series users may read without a uuid matcher (power, emission factors),
    # by exact metric name: dashboards show them next to a unit's own series.
    allowed_node_metrics: list[str] = Field(default_factory=list)
    user_header_names: list[str] = Field(default_factory=lambda: ["X-Grafana-User"], min_length=1)
    health_check_interval: timedelta = timedelta(seconds=10)
    # Ownership answers are reused this long: a unit's owner never changes, and a revoked
    # project membership takes effect within this time.
    cache_ttl: timedelta = timedelta(seconds=60)
    max_body_bytes: int = Field(default=1 << 20, gt=0)

    _durations = field_validator("health_check_interval", "cache_ttl", mode="before")(
        coerce_duration
    )

    @field_validator("backends")
    @classmethod
    def _unique_ids(cls, backends: list[ClusterBackends]) -> list[ClusterBackends]:
        ids = [b.id for b in backends]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"backend ids listed twice: {', '.join(duplicated)}")
        return backends

    @field_validator("allowed_node_metrics")
    @classmethod
    def _metric_names(cls, names: list[str]) -> list[str]:
        for name in names:
            try:
                if metric_names(name) != {name}:
                    raise ValueError
            except (PromqlError, ValueError):
                raise ValueError(f"{name!r} is not a metric name") from None
        return names


class ApiServerWeb(HttpClientConfig, ServerWebConfig):
    """`ceems_api_server.web`: the API server's URL and client settings, plus its own keys."""


class ApiServerSection(StrictModel):
    """The parts of `ceems_api_server` the LB uses to decide who may see which units."""

    data: DataConfig | None = None
    admin: AdminConfig = Field(default_factory=AdminConfig)
    web: ApiServerWeb | None = None


class LbConfig(StrictModel):
    """The whole file."""

    ceems_lb: LbSection
    ceems_api_server: ApiServerSection
    clusters: list[dict[str, Any]] = Field(default_factory=list)
    updaters: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _checks(self) -> LbConfig:
        server = self.ceems_api_server
        if server.data is None and (server.web is None or not server.web.url):
            raise ValueError(
                "ceems_api_server: set data.path (or data.url) to read the API server's store, "
                "or web.url to ask its /api/v1/units/verify; without either nobody's access "
                "can be checked"
            )
        known = {c.get("id") for c in self.clusters}
        if self.clusters:
            unknown = [b.id for b in self.ceems_lb.backends if b.id not in known]
            if unknown:
                raise ValueError(
                    f"ceems_lb.backends: ids {', '.join(unknown)} are not in clusters "
                    "(backend ids must be the API server's cluster ids)"
                )
        return self

    def has_tsdb(self) -> bool:
        """Whether any cluster lists TSDB servers."""
        return any(b.tsdb for b in self.ceems_lb.backends)

    def has_pyroscope(self) -> bool:
        """Whether any cluster lists Pyroscope servers."""
        return any(b.pyroscope for b in self.ceems_lb.backends)
