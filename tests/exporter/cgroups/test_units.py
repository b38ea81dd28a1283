"""Unit discovery and per-unit metrics over our own v1 and v2 fixture trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ceems.exporter.cgroups.cpuset import count_cpus
from ceems.exporter.cgroups.fs import CgroupError, CgroupFS, detect_version
from ceems.exporter.cgroups.layouts import (
    LibvirtUuidResolver,
    k8s_cpus,
    k8s_layout,
    libvirt_layout,
    pod_cpus,
    slurm_layout,
    systemd_unescape,
    userslice_layout,
)
from ceems.exporter.cgroups.stats import (
    StatsOptions,
    parse_blkio_throttle,
    parse_psi_total_s,
    parse_rdma_current,
)
from tests.exporter.cgroups.conftest import CGROUPS, Scrape, make_collector

V2 = CGROUPS / "v2"
V1 = CGROUPS / "v1"
MEM_TOTAL = 32768000 * 1024


def unit(manager: str, uuid: str, host: str = "") -> dict[str, str]:
    return {"manager": manager, "hostname": "n1", "cgrouphostname": host, "uuid": uuid}


def resolver() -> LibvirtUuidResolver:
    return LibvirtUuidResolver(CGROUPS / "libvirt" / "qemu", CGROUPS / "libvirt" / "run")


def test_version_detection() -> None:
    assert detect_version(V2) == "v2"
    assert detect_version(V1) == "v1"
    assert detect_version(V1, "v2") == "v2"
    with pytest.raises(CgroupError, match="v3"):
        detect_version(V2, "v3")
    with pytest.raises(CgroupError, match="does not exist"):
        detect_version(Path("/nonexistent/cgroup"))


def test_co_mounted_v1_controllers_resolve() -> None:
    fs = CgroupFS.open(V1)
    assert fs.controller_root("cpuacct") == V1 / "cpu,cpuacct"
    assert fs.controller_root("cpu") == V1 / "cpu,cpuacct"
    assert fs.controller_root("freezer") is None


def test_slurm_v2_jobs_multi_slurmd_and_stale(scrape: Scrape) -> None:
    collector = make_collector(slurm_layout(), V2)
    found = {(u.cgrouphostname, u.uuid) for u in collector.units()}
    # job_102 has no process left: stale and dropped; job_103 is live (its files are broken).
    assert found == {("", "101"), ("", "103"), ("node0", "201"), ("node1", "301")}
    registry = scrape(collector)
    value = registry.get_sample_value
    assert value("ceems_compute_unit_cpu_user_seconds_total", unit("slurm", "101")) == 3600.0
    assert value("ceems_compute_unit_cpu_system_seconds_total", unit("slurm", "101")) == 120.5
    assert value("ceems_compute_unit_cpus", unit("slurm", "101")) == 4
    assert value("ceems_compute_unit_memory_rss_bytes", unit("slurm", "101")) == 2e9
    assert value("ceems_compute_unit_memory_cache_bytes", unit("slurm", "101")) == 5e8
    assert value("ceems_compute_unit_memory_used_bytes", unit("slurm", "101")) == 2.6e9
    assert value("ceems_compute_unit_memory_total_bytes", unit("slurm", "101")) == 8589934592
    assert value("ceems_compute_unit_memory_fail_count", unit("slurm", "101")) == 3
    # Unlimited memory falls back to the node's MemTotal.
    assert value("ceems_compute_unit_memory_total_bytes", unit("slurm", "201", "node0")) == (
        MEM_TOTAL
    )
    assert value("ceems_compute_unit_cpus", unit("slurm", "201", "node0")) == 3
    assert value("ceems_compute_units", {"manager": "slurm", "hostname": "n1"}) == 3
    # A unit whose files are garbage is reported, and the others are still exported.
    assert value("ceems_compute_unit_collect_error", unit("slurm", "103")) == 1
    assert value("ceems_compute_unit_cpu_user_seconds_total", unit("slurm", "103")) is None
    assert (
        value("ceems_compute_unit_rdma_hca_handles", {**unit("slurm", "101"), "device": "mlx5_0"})
        == 2
    )


def test_optional_metric_groups(scrape: Scrape) -> None:
    options = StatsOptions(swap=True, psi=True, blkio=True)
    registry = scrape(make_collector(slurm_layout(), V2, stats=options))
    value = registry.get_sample_value
    labels = unit("slurm", "101")
    assert value("ceems_compute_unit_memsw_used_bytes", labels) == 1048576
    assert value("ceems_compute_unit_memsw_total_bytes", labels) == MEM_TOTAL
    assert value("ceems_compute_unit_memsw_fail_count", labels) == 1
    assert value("ceems_compute_unit_cpu_psi_seconds", labels) == 2.5
    assert value("ceems_compute_unit_memory_psi_seconds", labels) == 0.5
    sda = {**labels, "device": "sda"}
    assert value("ceems_compute_unit_blkio_read_total_bytes", sda) == 1048576
    assert value("ceems_compute_unit_blkio_write_total_requests", sda) == 20
    assert (
        value("ceems_compute_unit_blkio_read_total_bytes", {**labels, "device": "nvme0n1"}) == 4096
    )


def test_default_series_per_unit_stay_bounded(scrape: Scrape) -> None:
    registry = scrape(make_collector(slurm_layout(), V2))
    series = [
        s
        for family in registry.collect()
        for s in family.samples
        if s.labels.get("uuid") == "301" and s.name.startswith("ceems_compute_unit_")
    ]
    assert len(series) == 8  # cpu user/system, cpus, memory rss/cache/used/total/fail


def test_slurm_v1_jobs(scrape: Scrape) -> None:
    registry = scrape(make_collector(slurm_layout(), V1, stats=StatsOptions(swap=True, blkio=True)))
    value = registry.get_sample_value
    labels = unit("slurm", "11")
    assert value("ceems_compute_unit_cpu_user_seconds_total", labels) == 5.5
    assert value("ceems_compute_unit_cpu_system_seconds_total", labels) == 0.5
    assert value("ceems_compute_unit_cpus", labels) == 2
    assert value("ceems_compute_unit_memory_rss_bytes", labels) == 3e8  # hierarchical total_rss
    assert value("ceems_compute_unit_memory_total_bytes", labels) == 1073741824
    assert value("ceems_compute_unit_memory_fail_count", labels) == 2
    assert value("ceems_compute_unit_memsw_total_bytes", labels) == MEM_TOTAL
    sda = {**labels, "device": "sda"}
    assert value("ceems_compute_unit_blkio_read_total_bytes", sda) == 4096
    assert value("ceems_compute_unit_blkio_write_total_requests", sda) == 2
    assert value("ceems_compute_unit_rdma_hca_objects", {**labels, "device": "mlx5_0"}) == 300
    assert value("ceems_compute_unit_rdma_hca_objects", {**labels, "device": "mlx5_1"}) is None
    assert value("ceems_compute_unit_memory_total_bytes", unit("slurm", "21", "host0")) == MEM_TOTAL
    assert value("ceems_compute_unit_cpu_user_seconds_total", unit("slurm", "12")) is None  # stale
    assert value("ceems_compute_units", {"manager": "slurm", "hostname": "n1"}) == 2


def test_v1_units_found_through_another_subsystem(scrape: Scrape) -> None:
    registry = scrape(make_collector(slurm_layout(), V1, subsystem="memory"))
    assert (
        registry.get_sample_value("ceems_compute_units", {"manager": "slurm", "hostname": "n1"})
        == 2
    )


def test_libvirt_uuid_from_persistent_then_runtime_xml(scrape: Scrape) -> None:
    registry = scrape(make_collector(libvirt_layout(resolver()), V2))
    value = registry.get_sample_value
    # The persistent definition wins over the runtime copy of the same domain.
    vm1 = unit("libvirt", "a1b2c3d4-0001-4e5f-8a9b-0c1d2e3f4a01")
    assert value("ceems_compute_unit_cpu_user_seconds_total", vm1) == 900
    # Runtime-only domain (OpenStack): found in /run/libvirt/qemu inside <domstatus>.
    vm2 = unit("libvirt", "a1b2c3d4-0002-4e5f-8a9b-0c1d2e3f4a02")
    assert value("ceems_compute_unit_memory_total_bytes", vm2) == 4294967296
    # A domain with no XML anywhere cannot be identified and is left out.
    assert value("ceems_compute_units", {"manager": "libvirt", "hostname": "n1"}) == 2


def test_libvirt_non_systemd_layout_v1(scrape: Scrape) -> None:
    registry = scrape(make_collector(libvirt_layout(resolver()), V1))
    vm3 = unit("libvirt", "a1b2c3d4-0003-4e5f-8a9b-0c1d2e3f4a03")
    assert registry.get_sample_value("ceems_compute_unit_cpu_user_seconds_total", vm3) == 3.0


def test_libvirt_identity_survives_xml_removal_while_cgroup_lives(tmp_path: Path) -> None:
    shutil.copytree(CGROUPS / "libvirt", tmp_path / "libvirt")
    live = LibvirtUuidResolver(tmp_path / "libvirt" / "qemu", tmp_path / "libvirt" / "run")
    assert live.resolve("instance-00000003") is not None
    (tmp_path / "libvirt" / "qemu" / "instance-00000003.xml").unlink()  # VM undefined
    resolved = live.resolve("instance-00000003")
    assert resolved is not None and resolved[0].endswith("4a03")
    live.forget_except(set())  # its cgroup is gone
    assert live.resolve("instance-00000003") is None


def test_k8s_pods_of_every_qos_class(scrape: Scrape) -> None:
    registry = scrape(make_collector(k8s_layout(), V2, cpus=pod_cpus))
    value = registry.get_sample_value
    guaranteed = unit("k8s", "3f2d1c7e-8a4b-4c1d-9e2f-0a1b2c3d4e5f")
    burstable = unit("k8s", "7d4e2a10-1b2c-4d3e-8f9a-b0c1d2e3f4a5")
    besteffort = unit("k8s", "11111111-2222-3333-4444-555555555555")
    assert value("ceems_compute_unit_cpus", guaranteed) == pytest.approx(2.0, abs=0.01)
    # cpu.weight is an integer: one step is about 26 shares, i.e. 0.026 CPU of request.
    assert value("ceems_compute_unit_cpus", burstable) == pytest.approx(0.1, abs=0.026)
    assert value("ceems_compute_unit_cpus", besteffort) == pytest.approx(0.002, abs=0.001)
    assert value("ceems_compute_units", {"manager": "k8s", "hostname": "n1"}) == 3


def test_k8s_cgroupfs_driver_v1(scrape: Scrape) -> None:
    registry = scrape(make_collector(k8s_layout(), V1, cpus=pod_cpus))
    pod = unit("k8s", "9a8b7c6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d")
    assert registry.get_sample_value("ceems_compute_unit_cpus", pod) == 2.0


def test_userslice_uuid_is_the_login_name(scrape: Scrape) -> None:
    registry = scrape(make_collector(userslice_layout(), V2))
    value = registry.get_sample_value
    assert value("ceems_compute_unit_cpu_user_seconds_total", unit("userslice", "root")) == 30
    # A uid unknown to this node keeps its number, so the unit is still counted.
    assert value("ceems_compute_unit_cpu_user_seconds_total", unit("userslice", "4242")) == 60


def test_unit_vanishing_mid_scrape_is_left_out_silently(tmp_path: Path, scrape: Scrape) -> None:
    shutil.copytree(V2, tmp_path / "v2", symlinks=True)
    collector = make_collector(slurm_layout(), tmp_path / "v2")
    units = collector.units()
    shutil.rmtree(tmp_path / "v2" / "system.slice" / "slurmstepd.scope" / "job_101")
    collector.units = lambda: units  # type: ignore[method-assign]  # discovered before it ended
    registry = scrape(collector)
    assert (
        registry.get_sample_value("ceems_compute_unit_cpu_user_seconds_total", unit("slurm", "101"))
        is None
    )
    assert (
        registry.get_sample_value("ceems_compute_unit_collect_error", unit("slurm", "101")) is None
    )
    assert (
        registry.get_sample_value("ceems_compute_units", {"manager": "slurm", "hostname": "n1"})
        == 2
    )


def test_unreadable_unit_file_is_a_collect_error(tmp_path: Path, scrape: Scrape) -> None:
    shutil.copytree(V2, tmp_path / "v2", symlinks=True)
    stat = tmp_path / "v2/system.slice/node1_slurmstepd.scope/job_301/memory.stat"
    stat.unlink()
    stat.mkdir()  # read fails with IsADirectoryError, as an unreadable file would
    registry = scrape(make_collector(slurm_layout(), tmp_path / "v2"))
    assert (
        registry.get_sample_value("ceems_compute_unit_collect_error", unit("slurm", "301", "node1"))
        == 1
    )
    assert registry.get_sample_value("ceems_compute_unit_cpus", unit("slurm", "101")) == 4


@pytest.mark.parametrize(
    ("cpulist", "count"), [("0-3", 4), ("1,41", 2), ("0-1,8,10-11\n", 5), ("", 0)]
)
def test_count_cpus(cpulist: str, count: int) -> None:
    assert count_cpus(cpulist) == count


@pytest.mark.parametrize("cpulist", ["0-", "a", "1-b"])
def test_bad_cpulist(cpulist: str) -> None:
    with pytest.raises(ValueError, match="cpulist"):
        count_cpus(cpulist)


def test_parsers() -> None:
    assert parse_psi_total_s("some avg10=0 avg60=0 avg300=0 total=1500000\n") == 1.5
    with pytest.raises(ValueError, match="some"):
        parse_psi_total_s("full avg10=0 total=1\n")
    assert parse_blkio_throttle("8:0 Read 1\n8:0 Total 1\nTotal 1\n", "") == {
        "8:0": {"rbytes": 1.0}
    }
    assert parse_rdma_current("hfi1_0 hca_handle=479 hca_object=max\n") == {
        "hfi1_0": {"hca_handle": 479.0}
    }
    assert systemd_unescape("instance\\x2d00000001") == "instance-00000001"


@pytest.mark.parametrize(
    ("value", "version", "cpus"), [("2048", "v1", 2.0), ("79", "v2", 2.0), ("2", "v1", 0.002)]
)
def test_k8s_cpus_invert_kubelet_formulas(value: str, version: str, cpus: float) -> None:
    assert k8s_cpus(value, version) == pytest.approx(cpus, abs=0.01)
