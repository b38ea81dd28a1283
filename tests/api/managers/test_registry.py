"""Building resource managers from the `ceems.resource_managers` entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from ceems.api.config import ClusterConfig
from ceems.api.managers import registry
from ceems.api.managers.protocol import ManagerError
from ceems.api.managers.registry import UnknownManagerError, available_managers, build_managers
from ceems.api.managers.slurm.manager import SlurmManager


def cluster(cluster_id: str, manager: str, **extra: Any) -> ClusterConfig:
    return ClusterConfig.model_validate(
        {"id": cluster_id, "manager": manager, "extra_config": extra}
    )


class BrokenFactory:
    """A third-party factory that fails with something other than ManagerError."""

    def __init__(self, cluster: ClusterConfig) -> None:
        raise KeyError("region")


def test_slurm_is_installed() -> None:
    assert "slurm" in available_managers()


def test_one_manager_per_cluster_keyed_by_id() -> None:
    managers = build_managers([cluster("a", "slurm"), cluster("b", "slurm", sudo=True)])
    assert list(managers) == ["a", "b"]
    assert all(isinstance(m, SlurmManager) for m in managers.values())


def test_unknown_manager_names_cluster_manager_and_installed() -> None:
    with pytest.raises(UnknownManagerError) as caught:
        build_managers([cluster("a", "slurm"), cluster("hpc2", "pbs")])
    assert str(caught.value) == (
        f"cluster 'hpc2': unknown resource manager 'pbs' (installed: "
        f"{', '.join(available_managers())})"
    )
    assert isinstance(caught.value, ManagerError)


def test_bad_extra_config_names_the_cluster() -> None:
    with pytest.raises(ManagerError, match=r"^cluster 'hpc1': extra_config: source: "):
        build_managers([cluster("hpc1", "slurm", source="squeue")])


def test_failing_third_party_factory_names_cluster_and_manager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = EntryPoint("broken", f"{__name__}:BrokenFactory", registry.GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [broken])
    with pytest.raises(ManagerError) as caught:
        build_managers([cluster("x", "broken")])
    assert str(caught.value) == (
        f"cluster 'x': resource manager 'broken' ({__name__}:BrokenFactory) failed to start:"
        " KeyError: 'region'"
    )


def test_unloadable_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = EntryPoint("gone", "no_such_module_xyz:Factory", registry.GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [missing])
    with pytest.raises(ManagerError, match=r"^cluster 'x': resource manager 'gone' .*ModuleNotF"):
        build_managers([cluster("x", "gone")])


def test_repeated_cluster_id() -> None:
    with pytest.raises(ManagerError, match=r"cluster id\(s\) given twice: a"):
        build_managers([cluster("a", "slurm"), cluster("a", "slurm")])


def test_no_clusters_no_managers() -> None:
    assert build_managers([]) == {}
