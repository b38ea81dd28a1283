"""`clusters[].extra_config` of a SLURM cluster: which source, and how to reach it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ceems.common.config import StrictModel
from ceems.common.durations import coerce_duration

# slurmrestd keys that may also be written flat in extra_config, next to `source`.
_RESTD_KEYS = ("user_name", "token", "token_file", "jwt_key_file", "token_lifetime", "cluster_name")


class RestdOptions(StrictModel):
    """How to authenticate to slurmrestd (rest_auth/jwt) and which cluster to ask about."""

    # X-SLURM-USER-NAME: a user allowed to see every job when PrivateData is set (SlurmUser,
    # an operator or admin)
    user_name: str = "slurm"
    token: str = ""  # a fixed token, e.g. from `scontrol token lifespan=...`
    token_file: str = ""  # read on every fetch, so an external job can rotate it
    jwt_key_file: str = ""  # SLURM's HS256 key (AuthAltParameters=jwt_key=...): tokens are minted
    token_lifetime: timedelta = timedelta(minutes=5)
    cluster_name: str = ""  # SLURM ClusterName when slurmdbd serves several; empty: all

    _lifetime = field_validator("token_lifetime", mode="before")(coerce_duration)

    @field_validator("token_lifetime")
    @classmethod
    def _long_enough(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=30):
            raise ValueError("must be at least 30s")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> RestdOptions:
        given = [k for k in ("token", "token_file", "jwt_key_file") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"give one of token, token_file, jwt_key_file (got {given})")
        return self


class SlurmOptions(StrictModel):
    """The SLURM manager's extra_config."""

    source: Literal["sacct", "slurmrestd"] = "sacct"
    sudo: bool = False  # run sacct/sacctmgr through `sudo -n -E`
    cli_timeout: timedelta = timedelta(minutes=1)
    restd: RestdOptions = Field(default_factory=RestdOptions)

    _timeout = field_validator("cli_timeout", mode="before")(coerce_duration)

    @field_validator("cli_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    @model_validator(mode="before")
    @classmethod
    def _gather_restd(cls, raw: Any) -> Any:
        """Flat slurmrestd keys move under `restd`; a `restd` section implies that source."""
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        flat = {k: raw.pop(k) for k in _RESTD_KEYS if k in raw}
        if "restd" in raw or flat:
            nested = raw.get("restd") or {}
            if not isinstance(nested, dict):
                return raw  # pydantic reports the type error
            both = sorted(set(flat) & set(nested))
            if both:
                raise ValueError(f"{', '.join(both)} given both flat and under restd")
            raw["restd"] = {**nested, **flat}
            raw.setdefault("source", "slurmrestd")
        return raw
