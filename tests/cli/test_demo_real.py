"""`ceems demo --slurm real` without a SLURM: configs, host load, example jobs, refusals.

The stack over the real SLURM itself is tested in tests/e2e/test_real_slurm.py.
"""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

import pytest
import yaml

from ceems.cli import demo_real
from ceems.cli.ceems import build_parser
from ceems.cli.demo_real import (
    RESTD_CLUSTER,
    SLURM_CLUSTER,
    HostLoad,
    RealSlurm,
    RealSlurmStack,
    example_job,
    power_node,
)
from ceems.cli.demo_stack import SCRAPE_JOBS, StackOptions


def fake_slurm_state(root: Path, v1: bool = True) -> Path:
    """What scripts/services.sh writes under its state directory when SLURM runs."""
    mountpoint = root / "slurm" / "cgroup"
    (mountpoint / ("cpuacct" if v1 else "unified")).mkdir(parents=True)
    (root / "slurm" / "cgroup_mountpoint").write_text(f"{mountpoint}\n")
    (root / "slurm" / "port").write_text("6820\n")
    return root


def write_proc(procfs: Path, busy: int, idle: int, available_kb: int = 3_000_000) -> None:
    procfs.mkdir(parents=True, exist_ok=True)
    # user nice system idle iowait irq softirq steal guest guest_nice
    (procfs / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 0 0 0 0\n")
    (procfs / "meminfo").write_text(
        f"MemTotal: 4000000 kB\nMemFree: 100 kB\nMemAvailable: {available_kb} kB\n"
    )


def test_real_slurm_from_the_services_state(tmp_path: Path) -> None:
    slurm = RealSlurm.from_state_dir(fake_slurm_state(tmp_path / "v1"))
    assert slurm.cgroup_mountpoint == tmp_path / "v1" / "slurm" / "cgroup"
    assert (slurm.restd_url, slurm.cgroup_version) == ("http://127.0.0.1:6820", "v1")
    assert RealSlurm.from_state_dir(fake_slurm_state(tmp_path / "v2", False)).cgroup_version == "v2"
    with pytest.raises(RuntimeError, match="no SLURM started"):
        RealSlurm.from_state_dir(tmp_path / "nothing")


def test_simulated_power_follows_the_real_load(tmp_path: Path) -> None:
    procfs = tmp_path / "proc"
    write_proc(procfs, busy=1000, idle=1000)
    load = HostLoad(0, procfs=procfs)
    load.step(1.0)  # the first reading only sets the baseline
    write_proc(procfs, busy=1075, idle=1025, available_kb=1_000_000)
    load.step(1.0)
    assert load.cpu == pytest.approx(0.75)
    assert load.memory == pytest.approx(0.75)

    write_proc(procfs, busy=0, idle=0)
    node = power_node(tmp_path / "node", "vm", 2, procfs)
    write_proc(procfs, busy=0, idle=100)  # an idle machine
    node.advance(1.0)
    idle_w = node.power_w["package-0"]
    write_proc(procfs, busy=100, idle=100)  # every CPU busy since the last step
    node.advance(1.0)
    assert idle_w == pytest.approx(node.spec.package_idle_w)
    assert node.power_w["package-0"] == pytest.approx(node.spec.package_max_w)
    assert (node.sysfs / "class" / "powercap" / "intel-rapl:0" / "energy_uj").exists()
    assert node.ipmi_command.exists()


@pytest.mark.parametrize("user", ["alice", "bob", "carol"])
def test_example_jobs_are_valid_shell(user: str) -> None:
    script = example_job(user, 30)
    assert subprocess.run(["sh", "-n", "-c", script], check=False).returncode == 0
    assert "timeout 30 sh -c " in script
    if user == "bob":
        assert script.startswith("srun -n2 ")
    assert script.endswith("exit 3" if user == "carol" else "; true")


def test_stack_configs(tmp_path: Path) -> None:
    slurm = RealSlurm.from_state_dir(fake_slurm_state(tmp_path / "state"))
    stack = RealSlurmStack(tmp_path / "data", StackOptions(2.0, 10.0), slurm=slurm)
    argv = stack.exporter.argv
    # the real /proc (no --path.procfs), the simulated node's sysfs, the SLURM cgroups
    assert not any(a.startswith("--path.procfs") for a in argv)
    assert f"--path.sysfs={stack.node.sysfs}" in argv
    assert f"--path.cgroupfs={slurm.cgroup_mountpoint}" in argv
    assert "--collector.cgroups.force-version=v1" in argv and "--collector.slurm" in argv
    assert f"--collector.ipmi_dcmi.cmd={stack.node.ipmi_command}" in argv
    assert f"--collector.hostname={slurm.node}" in argv

    prometheus = yaml.safe_load(stack._prometheus_config().read_text())
    (scrape,) = prometheus["scrape_configs"]
    assert scrape["job_name"] == SCRAPE_JOBS["ipmi"]  # the rules' IPMI+RAPL host job
    assert scrape["static_configs"][0]["labels"] == {"hostname": slurm.node}
    assert list((tmp_path / "data" / "rules").glob("*.rules"))

    api = stack.api_config()
    clusters = {c["id"]: c for c in api["clusters"]}  # type: ignore[attr-defined]
    assert clusters[SLURM_CLUSTER]["cli"] == {"path": "/usr/bin"}
    restd = clusters[RESTD_CLUSTER]
    assert restd["web"] == {"url": "http://127.0.0.1:6820"}
    assert restd["extra_config"]["source"] == "slurmrestd"
    assert restd["extra_config"]["cluster_name"] == "testcluster"
    backends = stack.lb_config()["ceems_lb"]["backends"]  # type: ignore[index]
    assert [b["id"] for b in backends] == [SLURM_CLUSTER, RESTD_CLUSTER]

    alone = RealSlurmStack(tmp_path / "alone", slurm=slurm, with_restd=False)
    assert [c["id"] for c in alone.api_config()["clusters"]] == [SLURM_CLUSTER]  # type: ignore[attr-defined]


def test_demo_refuses_without_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    options = build_parser().parse_args(["demo", "--slurm", "real"])
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert demo_real.run_real_demo(options) == 1
    assert "--slurm real needs root" in capsys.readouterr().err
    assert build_parser().parse_args(["demo"]).slurm == "sim"


def test_demo_refuses_while_another_session_holds_slurm(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    lock = tmp_path / "slurm.lock"
    monkeypatch.setattr(demo_real, "SLURM_LOCK", lock)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    options = build_parser().parse_args(["demo", "--slurm", "real"])
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert demo_real.run_real_demo(options) == 1
    assert "is locked" in capsys.readouterr().err
