"""Resource managers by cluster, from the `ceems.resource_managers` entry points."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from ceems.api.config import ClusterConfig
from ceems.api.managers.protocol import ManagerError, ResourceManager

GROUP = "ceems.resource_managers"

ManagerFactory = Callable[[ClusterConfig], ResourceManager]


class UnknownManagerError(ManagerError):
    """A cluster names a resource manager no installed package provides."""


def available_managers() -> list[str]:
    """Names of the installed resource managers, sorted."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def build_managers(clusters: Sequence[ClusterConfig]) -> dict[str, ResourceManager]:
    """One manager per cluster, keyed by cluster id; an unknown name fails before any is built.

    A factory that refuses its cluster's config (or fails to load) raises ManagerError
    naming the cluster and the manager.
    """
    available = {ep.name: ep for ep in entry_points(group=GROUP)}
    installed = ", ".join(sorted(available)) or "none"
    for cluster in clusters:
        if cluster.manager not in available:
            raise UnknownManagerError(
                f"cluster {cluster.id!r}: unknown resource manager {cluster.manager!r}"
                f" (installed: {installed})"
            )
    ids = [cluster.id for cluster in clusters]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ManagerError(f"cluster id(s) given twice: {', '.join(repeated)}")
    managers: dict[str, ResourceManager] = {}
    for cluster in clusters:
        entry_point = available[cluster.manager]
        try:
            factory: ManagerFactory = entry_point.load()
            managers[cluster.id] = factory(cluster)
        except ManagerError as err:
            if str(err).startswith(f"cluster {cluster.id!r}"):
                raise  # already says which cluster (the convention of our managers)
            raise ManagerError(
                f"cluster {cluster.id!r}: resource manager {cluster.manager!r}: {err}"
            ) from err
        except Exception as err:  # a third-party factory may fail in any way
            raise ManagerError(
                f"cluster {cluster.id!r}: resource manager {cluster.manager!r}"
                f" ({entry_point.value}) failed to start: {type(err).__name__}: {err}"
            ) from err
    return managers
