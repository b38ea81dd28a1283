"""The `slurm` resource manager: jobs, users and projects from sacct/sacctmgr or slurmrestd.

sacct (the default) runs as the API server's user, or through `sudo -n -E` with
`extra_config: {sudo: true}`. SLURM shows a user only their own jobs when slurm.conf sets
`PrivateData=jobs` (or `accounts`/`users` for sacctmgr): then it must run as root, SlurmUser,
or a SLURM operator/admin, else units of other users are silently missing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from pydantic import ValidationError

from ceems.api.config import ClusterConfig
from ceems.api.managers.protocol import ManagerError
from ceems.api.managers.slurm.commands import SlurmCli
from ceems.api.managers.slurm.config import SlurmOptions
from ceems.api.managers.slurm.jwt_token import TokenSource
from ceems.api.managers.slurm.restd import RestdSource
from ceems.api.managers.slurm.sacct import (
    SACCT_TIME_FORMAT,
    SACCTMGR_ARGS,
    parse_sacct,
    parse_sacct_records,
    parse_sacctmgr,
    sacct_args,
    sacct_jobs_args,
)
from ceems.api.managers.slurm.units import job_ids
from ceems.api.models import Project, Unit, User
from ceems.common.config import format_validation_error

log = logging.getLogger(__name__)


class _Source(Protocol):
    def fetch_units(self, start: datetime, end: datetime) -> list[Unit]: ...

    def fetch_users_projects(self, now: datetime) -> tuple[list[User], list[Project]]: ...

    def fetch_units_by_id(self, job_ids: Sequence[str]) -> list[Unit]: ...


# Job ids per `sacct --jobs=` call: a short command line (about 1 KB) and slurmdbd query.
SACCT_JOBS_PER_CALL = 100
# Our time format and zone win over cli.environment_variables: the parser needs the offset,
# and --starttime/--endtime are given in UTC.
_SACCT_ENV = {"SLURM_TIME_FORMAT": SACCT_TIME_FORMAT, "TZ": "UTC"}


class SacctSource:
    """Jobs from sacct, associations from sacctmgr."""

    def __init__(self, cluster_id: str, cli: SlurmCli) -> None:
        self.cluster_id = cluster_id
        self.cli = cli

    def fetch_units(self, start: datetime, end: datetime) -> list[Unit]:
        """Jobs that ran during [start, end), with their usage inside it."""
        output = self.cli.run("sacct", sacct_args(start, end), _SACCT_ENV)
        units = parse_sacct(self.cluster_id, output, start, end)
        log.debug("sacct units", extra={"cluster": self.cluster_id, "units": len(units)})
        return units

    def fetch_units_by_id(self, job_ids: Sequence[str]) -> list[Unit]:
        """Every record of these jobs (numbers), without usage; SACCT_JOBS_PER_CALL a call."""
        units: list[Unit] = []
        for first in range(0, len(job_ids), SACCT_JOBS_PER_CALL):
            chunk = job_ids[first : first + SACCT_JOBS_PER_CALL]
            output = self.cli.run("sacct", sacct_jobs_args(chunk), _SACCT_ENV)
            units.extend(parse_sacct_records(self.cluster_id, output))
        return units

    def fetch_users_projects(self, now: datetime) -> tuple[list[User], list[Project]]:
        """Users and projects from the associations."""
        return parse_sacctmgr(self.cluster_id, self.cli.run("sacctmgr", SACCTMGR_ARGS))


class SlurmManager:
    """A ResourceManager for one SLURM cluster; the source is chosen by extra_config."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster
        try:
            self.options = SlurmOptions.model_validate(cluster.extra_config)
        except ValidationError as err:
            raise ManagerError(
                f"cluster {cluster.id!r}: extra_config: {format_validation_error(err)}"
            ) from err
        self.source: _Source = (
            self._restd() if self.options.source == "slurmrestd" else self._sacct()
        )

    def _sacct(self) -> SacctSource:
        if not self.options.sudo and os.geteuid() != 0:
            log.info(
                "sacct runs as the current user: with PrivateData set, other users' jobs are "
                "missing unless it is SlurmUser or a SLURM operator",
                extra={"cluster": self.cluster.id, "uid": os.geteuid()},
            )
        cli = SlurmCli(
            cluster_id=self.cluster.id,
            bin_dir=self.cluster.cli.path,
            environment=dict(self.cluster.cli.environment_variables),
            sudo=self.options.sudo,
            timeout_s=self.options.cli_timeout.total_seconds(),
        )
        return SacctSource(self.cluster.id, cli)

    def _restd(self) -> RestdSource:
        web, restd = self.cluster.web, self.options.restd
        if not web.url:
            raise ManagerError(f"cluster {self.cluster.id!r}: slurmrestd needs web.url")
        token, token_file = restd.token, restd.token_file
        if not (token or token_file or restd.jwt_key_file) and web.authorization is not None:
            token, token_file = web.authorization.credentials, web.authorization.credentials_file
        if not (token or token_file or restd.jwt_key_file):
            raise ManagerError(
                f"cluster {self.cluster.id!r}: slurmrestd needs a token: extra_config "
                "token, token_file or jwt_key_file, or web.authorization"
            )
        tokens = TokenSource(
            cluster_id=self.cluster.id,
            user_name=restd.user_name,
            token=token,
            token_file=token_file,
            jwt_key_file=restd.jwt_key_file,
            lifetime_s=int(restd.token_lifetime.total_seconds()),
        )
        return RestdSource(self.cluster.id, web, tokens, restd.cluster_name)

    def fetch_units(self, start: datetime, end: datetime) -> list[Unit]:
        """Jobs that ran during [start, end), with their usage inside it."""
        return self.source.fetch_units(start, end)

    def fetch_users_projects(self, now: datetime) -> tuple[list[User], list[Project]]:
        """Every user and project (SLURM account) with their associations."""
        return self.source.fetch_users_projects(now)

    def fetch_units_by_id(self, uuids: Sequence[str]) -> list[Unit]:
        """The current records of these jobs, every run of each, without usage.

        A uuid that is not a job id number is left out with a warning: sacct would refuse
        the whole list for it.
        """
        numbers, others = job_ids(uuids)
        if others:
            log.warning(
                "not SLURM job ids; not looked up",
                extra={"cluster": self.cluster.id, "uuids": others[:20], "count": len(others)},
            )
        return self.source.fetch_units_by_id(numbers) if numbers else []
