"""Response models of the HTTP API for the OpenAPI document (render.py writes the bodies)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

MetricMapModel = dict[str, float]


class Envelope(BaseModel, Generic[T]):
    """CEEMS' envelope: `data` on success; `errorType` and `error` on failure."""

    model_config = ConfigDict(populate_by_name=True)

    status: str = Field(examples=["success"])
    data: list[T] | None = None
    error_type: str | None = Field(default=None, alias="errorType", examples=["bad_data"])
    error: str | None = Field(default=None, examples=["invalid query fields"])


class ErrorEnvelope(BaseModel):
    """A refused request."""

    model_config = ConfigDict(populate_by_name=True)

    status: str = Field(examples=["error"])
    data: None = None
    error_type: str = Field(alias="errorType", examples=["forbidden"])
    error: str = Field(examples=["current user does not have admin privileges"])


class UnitModel(BaseModel):
    """A compute unit (job, VM, pod); fields left out when empty or not selected."""

    cluster_id: str | None = Field(default=None, examples=["slurm-0"])
    resource_manager: str | None = Field(default=None, examples=["slurm"])
    uuid: str = Field(examples=["1481508"])
    name: str | None = None
    project: str | None = None
    groupname: str | None = None
    username: str | None = None
    created_at: str | None = Field(default=None, examples=["2023-02-21T15:48:20+0100"])
    started_at: str | None = Field(default=None, examples=["2023-02-21T15:49:06+0100"])
    ended_at: str | None = Field(default=None, examples=["N/A"])
    created_at_ts: int | None = Field(default=None, examples=[1676990900000])
    started_at_ts: int | None = None
    ended_at_ts: int | None = None
    elapsed: str | None = Field(default=None, examples=["2-00:10:20"])
    state: str | None = Field(default=None, examples=["RUNNING"])
    allocation: dict[str, Any] | None = None
    total_time_seconds: MetricMapModel | None = None
    avg_cpu_usage: MetricMapModel | None = None
    avg_cpu_mem_usage: MetricMapModel | None = None
    total_cpu_energy_usage_kwh: MetricMapModel | None = None
    total_cpu_emissions_gms: MetricMapModel | None = None
    avg_gpu_usage: MetricMapModel | None = None
    avg_gpu_mem_usage: MetricMapModel | None = None
    total_gpu_energy_usage_kwh: MetricMapModel | None = None
    total_gpu_emissions_gms: MetricMapModel | None = None
    total_io_write_stats: MetricMapModel | None = None
    total_io_read_stats: MetricMapModel | None = None
    total_ingress_stats: MetricMapModel | None = None
    total_egress_stats: MetricMapModel | None = None
    tags: dict[str, Any] | None = None
    provenance: dict[str, str] | None = Field(
        default=None, description="Power source, attribution, PUE and emission factor provider"
    )


class UsageModel(BaseModel):
    """Usage of one user in one project of one cluster."""

    cluster_id: str
    resource_manager: str
    num_units: int
    project: str
    groupname: str
    username: str
    total_time_seconds: MetricMapModel | None = None
    avg_cpu_usage: MetricMapModel | None = None
    avg_cpu_mem_usage: MetricMapModel | None = None
    total_cpu_energy_usage_kwh: MetricMapModel | None = None
    total_cpu_emissions_gms: MetricMapModel | None = None
    avg_gpu_usage: MetricMapModel | None = None
    avg_gpu_mem_usage: MetricMapModel | None = None
    total_gpu_energy_usage_kwh: MetricMapModel | None = None
    total_gpu_emissions_gms: MetricMapModel | None = None
    total_io_write_stats: MetricMapModel | None = None
    total_io_read_stats: MetricMapModel | None = None
    total_ingress_stats: MetricMapModel | None = None
    total_egress_stats: MetricMapModel | None = None


class UserModel(BaseModel):
    """A user of a cluster and the projects they belong to."""

    uid: str | None = None
    cluster_id: str
    resource_manager: str
    name: str
    projects: list[str]
    tags: Any = None


class ProjectModel(BaseModel):
    """A project of a cluster and its users."""

    uid: str | None = None
    cluster_id: str
    resource_manager: str
    name: str
    users: list[str]
    tags: Any = None


class StatModel(BaseModel):
    """Quick counts of one cluster."""

    cluster_id: str
    resource_manager: str
    num_units: int
    num_inactive_units: int
    num_active_units: int
    num_projects: int
    num_users: int


class ClusterModel(BaseModel):
    """A cluster known to the store."""

    id: str
    manager: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "Bad query parameter"},
    401: {"model": ErrorEnvelope, "description": "No user header"},
    500: {"model": ErrorEnvelope, "description": "Store failure"},
}
ADMIN_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    403: {"model": ErrorEnvelope, "description": "Current user is not an admin"},
}
