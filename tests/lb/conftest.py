"""The LB test stack, started once for the package: real Prometheus and VictoriaMetrics."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PrometheusService, free_port, missing_service
from tests.lb.stack import (
    CountingProxy,
    LbProcess,
    VictoriaMetrics,
    build_store,
    lb_config,
    unit_series,
)
from tests.tsdb.backfill import start_loaded


def _need(binary: str, package: str) -> None:
    if shutil.which(binary) is None and os.geteuid() != 0:
        missing_service(f"{binary} not installed and not root to install {package}")


@pytest.fixture(scope="package")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The API server's store: who owns which unit."""
    return build_store(tmp_path_factory.mktemp("lb-store"))


@pytest.fixture(scope="package")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusService]:
    """Prometheus with slurm-0's series."""
    _need("prometheus", "prometheus")
    promtool = shutil.which("promtool")
    service = PrometheusService(tmp_path_factory.mktemp("lb-prom") / "services", free_port())
    with pytest.MonkeyPatch.context() as patch:
        try:
            start_loaded(service, promtool or "promtool", unit_series("slurm-0"), patch)
        except Exception:
            service.stop()
            raise
    yield service
    service.stop()


@pytest.fixture(scope="package")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """VictoriaMetrics with slurm-1's series."""
    _need("victoria-metrics", "victoria-metrics")
    service = VictoriaMetrics(tmp_path_factory.mktemp("lb-vm") / "services")
    service.start()
    try:
        service.load(unit_series("slurm-1"))
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="package")
def prom_proxy(prometheus: PrometheusService) -> Iterator[CountingProxy]:
    """Counts what reaches Prometheus."""
    proxy = CountingProxy(prometheus.url)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="package")
def vm_proxy(victoria: VictoriaMetrics) -> Iterator[CountingProxy]:
    """Counts what reaches VictoriaMetrics."""
    proxy = CountingProxy(victoria.url)
    yield proxy
    proxy.stop()


@pytest.fixture(scope="package")
def lb(
    store: Path,
    prom_proxy: CountingProxy,
    vm_proxy: CountingProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LbProcess]:
    """`ceems_lb` in front of both: slurm-0 -> Prometheus, slurm-1 -> VictoriaMetrics."""
    config = lb_config(store, {"slurm-0": [prom_proxy.url], "slurm-1": [vm_proxy.url]})
    process = LbProcess(config, tmp_path_factory.mktemp("lb"))
    process.start()
    yield process
    process.stop()
