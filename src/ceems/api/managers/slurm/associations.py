"""SLURM associations (account, user) as CEEMS users and projects."""

from __future__ import annotations

from collections.abc import Iterable

from ceems.api.managers.slurm.units import RESOURCE_MANAGER
from ceems.api.models import Project, User


def users_projects(
    cluster_id: str, pairs: Iterable[tuple[str, str]]
) -> tuple[list[User], list[Project]]:
    """Users and projects, sorted, from (account, user) associations.

    As CEEMS' parseSacctMgrCmdOutput: account-level associations (no user) and the `root`
    account or user are left out, so an account without users is no project.
    """
    projects_of: dict[str, set[str]] = {}
    users_of: dict[str, set[str]] = {}
    for account, user in pairs:
        if not account or not user or "root" in (account, user):
            continue
        projects_of.setdefault(user, set()).add(account)
        users_of.setdefault(account, set()).add(user)
    users = [
        User(cluster_id, RESOURCE_MANAGER, name, projects=tuple(sorted(projects_of[name])))
        for name in sorted(projects_of)
    ]
    projects = [
        Project(cluster_id, RESOURCE_MANAGER, name, users=tuple(sorted(users_of[name])))
        for name in sorted(users_of)
    ]
    return users, projects
