"""UnitGpuMapper: built from flags, per-manager lookups, caching, re-listing, kubelet calls."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from ceems.exporter.cgroups.unit import CgroupUnit
from ceems.exporter.collector import CollectorError
from ceems.exporter.gpu.flags import add_gpu_flags, add_k8s_gpu_flags, add_slurm_gpu_flags
from ceems.exporter.gpu.mapper import UnitGpuMapper, build_gpu_mapper
from tests.exporter.gpu.conftest import GPU, NVIDIA, nvidia_smi_script, write_tool
from tests.exporter.gpu.kubelet import kubelet, pod_logs, response

NO_GPUS = GPU / "sys-none"
MDEV = "6e1f0c2a-91d4-4c1b-a7e2-00000000000"
GPU_UUID = "GPU-3f2c9a10-7b1e-4c55-9d0a-2b6e8f41c00"


def options(*args: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    group = parser.add_argument_group("collectors")
    for add in (add_gpu_flags, add_slurm_gpu_flags, add_k8s_gpu_flags):
        add(group)
    return parser.parse_args(list(args))


def summary(mapper: UnitGpuMapper, unit: CgroupUnit) -> list[tuple[str, str, float]]:
    return [(s.device.index, s.device.instance_id, round(s.share, 4)) for s in mapper.shares(unit)]


def write_environ(procfs: Path, pid: int, **env: str) -> None:
    (procfs / str(pid)).mkdir(parents=True, exist_ok=True)
    (procfs / str(pid) / "environ").write_bytes(
        b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())
    )


@pytest.fixture
def smi(tmp_path: Path) -> str:
    return nvidia_smi_script(tmp_path)


def slurm_mapper(smi: str, procfs: Path, *args: str) -> UnitGpuMapper:
    mapper = build_gpu_mapper(
        "slurm",
        options("--collector.gpu.type=nvidia", f"--collector.gpu.nvidia-smi-path={smi}", *args),
        NO_GPUS,
        procfs,
    )
    assert mapper is not None
    return mapper


def job(uuid: str, *pids: int, host: str = "") -> CgroupUnit:
    return CgroupUnit("slurm", uuid, f"system.slice/slurmstepd.scope/job_{uuid}", host, pids)


def test_slurm_job_gpus_from_the_first_process_naming_them(smi: str, tmp_path: Path) -> None:
    procfs = tmp_path / "proc"
    write_environ(procfs, 100, HOME="/root")  # slurmstepd: slurmd's environment
    write_environ(procfs, 101, SLURM_JOB_ID="77", SLURM_JOB_GPUS="0")  # another job's
    write_environ(procfs, 102, SLURM_JOB_ID="1009", SLURM_JOB_GPUS="1,3")
    mapper = slurm_mapper(smi, procfs)
    assert summary(mapper, job("1009", 100, 101, 102, 103)) == [
        ("1", "2", 0.5714),
        ("3", "9", 0.1429),
    ]


def test_slurm_answers_are_cached_until_forgotten(smi: str, tmp_path: Path) -> None:
    procfs = tmp_path / "proc"
    write_environ(procfs, 102, SLURM_JOB_ID="1009", SLURM_JOB_GPUS="0")
    mapper = slurm_mapper(smi, procfs)
    unit = job("1009", 102)
    assert summary(mapper, unit) == [("0", "", 1.0)]
    shutil.rmtree(procfs / "102")  # the process ended: the job's GPUs did not change
    assert summary(mapper, unit) == [("0", "", 1.0)]
    mapper.forget({("", "1009")})
    assert summary(mapper, unit) == [("0", "", 1.0)]
    mapper.forget(set())
    assert summary(mapper, unit) == []


def test_slurm_job_without_gpu_environment_is_asked_again(smi: str, tmp_path: Path) -> None:
    procfs = tmp_path / "proc"
    write_environ(procfs, 200, SLURM_JOB_ID="1010")  # only the extern step so far
    mapper = slurm_mapper(smi, procfs)
    unit = job("1010", 200, 201, host="node-b")
    assert summary(mapper, unit) == []
    write_environ(procfs, 201, SLURM_JOB_ID="1010", SLURM_STEP_GPUS="4")
    assert summary(mapper, unit) == [("4", "", 1.0)]


def test_slurm_order_map_and_gres_shards(smi: str, tmp_path: Path) -> None:
    procfs = tmp_path / "proc"
    gres = tmp_path / "gres.conf"
    gres.write_text("Name=gpu File=/dev/nvidia[0-3]\nName=shard Count=70\n")  # 7 devices: 10 each
    write_environ(procfs, 300, SLURM_JOB_ID="12", SLURM_JOB_GPUS="0", SLURM_SHARDS_ON_NODE="5")
    mapper = slurm_mapper(
        smi,
        procfs,
        "--collector.slurm.gpu-order-map=0:2,1:0",
        f"--collector.slurm.gres-config-file={gres}",
    )
    shares = mapper.shares(job("12", 300))
    assert [(s.device.index, s.device.uuid, s.share) for s in shares] == [
        ("0", GPU_UUID + "3", 0.5)
    ]


def test_bad_order_map_fails_the_build(smi: str, tmp_path: Path) -> None:
    with pytest.raises(CollectorError, match=r"--collector\.slurm: bad GPU order map entry '1-2'"):
        slurm_mapper(smi, tmp_path, "--collector.slurm.gpu-order-map=0:0,1-2")


def test_bad_gres_conf_fails_the_build(smi: str, tmp_path: Path) -> None:
    gres = tmp_path / "gres.conf"
    gres.write_text("Name=shard Count=lots\n")
    with pytest.raises(CollectorError, match="bad Count"):
        slurm_mapper(smi, tmp_path, f"--collector.slurm.gres-config-file={gres}")


def test_discovery_failure_fails_the_build(tmp_path: Path) -> None:
    hung = write_tool(tmp_path, "nvidia-smi", "exit 3")
    args = options("--collector.gpu.type=nvidia", f"--collector.gpu.nvidia-smi-path={hung}")
    with pytest.raises(
        CollectorError, match=r"--collector\.libvirt: GPU discovery failed.*exited 3"
    ):
        build_gpu_mapper("libvirt", args, NO_GPUS, tmp_path)


@pytest.mark.parametrize(
    ("manager", "args"),
    [
        ("slurm", ["--collector.gpu.type=nogpu"]),
        ("slurm", []),  # auto-detection finds no GPU in the fixture sysfs
        ("k8s", ["--collector.gpu.type=nvidia"]),  # no kubelet socket configured
    ],
)
def test_no_mapper(manager: str, args: list[str], tmp_path: Path) -> None:
    assert build_gpu_mapper(manager, options(*args), NO_GPUS, tmp_path) is None


def test_unknown_manager_fails(smi: str, tmp_path: Path) -> None:
    args = options("--collector.gpu.type=nvidia", f"--collector.gpu.nvidia-smi-path={smi}")
    with pytest.raises(CollectorError, match="no GPU mapping for resource manager 'lsf'"):
        build_gpu_mapper("lsf", args, NO_GPUS, tmp_path)


def domain_xml(path: Path, *mdevs: str, pci_bus: str = "") -> Path:
    hostdevs = "".join(
        f"<hostdev mode='subsystem' type='mdev'><source><address uuid='{m}'/></source></hostdev>"
        for m in mdevs
    )
    if pci_bus:
        hostdevs += (
            "<hostdev mode='subsystem' type='pci' managed='yes'><source><address "
            f"domain='0x0000' bus='{pci_bus}' slot='0x00' function='0x0'/></source></hostdev>"
        )
    path.write_text(f"<domain><uuid>{path.stem}</uuid><devices>{hostdevs}</devices></domain>")
    return path


def vm(xml: Path) -> CgroupUnit:
    return CgroupUnit(
        "libvirt", xml.stem, f"machine.slice/{xml.stem}", properties={"xml_path": str(xml)}
    )


@pytest.fixture
def libvirt_node(tmp_path: Path) -> tuple[Path, Path, str]:
    """(fixture copy the fake nvidia-smi reads, its call log, tool path)."""
    fixtures = tmp_path / "nvidia"
    shutil.copytree(NVIDIA, fixtures)
    calls = tmp_path / "calls"
    tool = write_tool(
        tmp_path,
        "nvidia-smi",
        f"""echo "$1" >> {calls}
case "$1" in
  --query) cat "{fixtures}/query.xml" ;;
  -L) cat "{fixtures}/list.txt" ;;
  vgpu) cat "{fixtures}/vgpu.txt" ;;
esac""",
    )
    return fixtures, calls, tool


def libvirt_mapper(tool: str, tmp_path: Path) -> UnitGpuMapper:
    args = options("--collector.gpu.type=nvidia", f"--collector.gpu.nvidia-smi-path={tool}")
    mapper = build_gpu_mapper("libvirt", args, NO_GPUS, tmp_path)
    assert mapper is not None
    return mapper


def add_vgpu(fixtures: Path, mdev: str) -> None:
    """A new VM's vGPU on the whole A100 at 8A:00.0 (its block ends where C1's begins)."""
    text = (fixtures / "vgpu.txt").read_text()
    block = f"    vGPU ID : 9\n        MDEV UUID : {mdev}\n        GPU Instance ID : N/A\n"
    (fixtures / "vgpu.txt").write_text(
        text.replace("\nGPU 00000000:C1:00.0", block + "\nGPU 00000000:C1:00.0")
    )


def test_libvirt_vgpus_and_passthrough(
    libvirt_node: tuple[Path, Path, str], tmp_path: Path
) -> None:
    _, _, tool = libvirt_node
    mapper = libvirt_mapper(tool, tmp_path)
    xml = domain_xml(tmp_path / "vm-a.xml", MDEV + "1", pci_bus="0x1b")
    assert summary(mapper, vm(xml)) == [("0", "", 1.0), ("4", "", 0.5)]


def test_libvirt_new_mdev_relists_vgpus_once_per_scrape(
    libvirt_node: tuple[Path, Path, str], tmp_path: Path
) -> None:
    fixtures, calls, tool = libvirt_node
    mapper = libvirt_mapper(tool, tmp_path)
    old = vm(domain_xml(tmp_path / "vm-a.xml", MDEV + "1"))
    assert summary(mapper, old) == [("4", "", 0.5)]
    add_vgpu(fixtures, "7a000000-0000-4000-8000-000000000001")
    first = vm(domain_xml(tmp_path / "vm-new1.xml", "7a000000-0000-4000-8000-000000000001"))
    second = vm(domain_xml(tmp_path / "vm-new2.xml", "7a000000-0000-4000-8000-000000000002"))
    before = calls.read_text().count("vgpu")
    mapper.refresh()
    assert summary(mapper, first) == [("4", "", 0.3333)]  # three vGPUs on that A100 now
    assert summary(mapper, old) == [("4", "", 0.3333)]  # recomputed with the new count
    add_vgpu(fixtures, "7a000000-0000-4000-8000-000000000002")
    assert summary(mapper, second) == []  # not re-listed twice in one scrape
    assert calls.read_text().count("vgpu") == before + 1
    mapper.refresh()
    assert summary(mapper, second) == [("4", "", 0.25)]
    assert calls.read_text().count("vgpu") == before + 2


def test_libvirt_unreadable_xml_is_asked_again(
    libvirt_node: tuple[Path, Path, str], tmp_path: Path
) -> None:
    _, _, tool = libvirt_node
    mapper = libvirt_mapper(tool, tmp_path)
    unit = vm(tmp_path / "vm-late.xml")
    assert mapper.shares(unit) == []
    domain_xml(tmp_path / "vm-late.xml", pci_bus="0x8a")
    assert summary(mapper, unit) == [("4", "", 1.0)]


GPU_ANSWER = response(
    [
        ("ml", "train-0", [("nvidia.com/gpu", [GPU_UUID + "1"])]),
        ("ml", "ts-a", [("nvidia.com/gpu", [GPU_UUID + "3::0"])]),
        ("ml", "ts-b", [("nvidia.com/gpu", [GPU_UUID + "3::1"])]),
        ("ml", "web", []),
    ]
)


def pod(uid: str) -> CgroupUnit:
    return CgroupUnit("k8s", uid, f"kubepods.slice/kubepods-pod{uid}.slice", properties={"qos": ""})


def test_k8s_asks_the_kubelet_once_per_scrape_and_only_for_new_pods(
    smi: str, tmp_path: Path
) -> None:
    sock = tmp_path / "k.sock"
    logs = pod_logs(
        tmp_path / "pods",
        ("ml", "train-0", "u1"),
        ("ml", "ts-a", "u2"),
        ("ml", "ts-b", "u3"),
        ("ml", "web", "u4"),
    )
    args = options(
        "--collector.gpu.type=nvidia",
        f"--collector.gpu.nvidia-smi-path={smi}",
        f"--collector.k8s.kubelet-podresources-socket.file={sock}",
        f"--collector.k8s.pod-logs-dir={logs}",
    )
    mapper = build_gpu_mapper("k8s", args, NO_GPUS, tmp_path)
    assert mapper is not None
    with kubelet(sock, GPU_ANSWER) as calls:
        mapper.refresh()
        assert summary(mapper, pod("u1")) == [("0", "", 1.0)]
        assert summary(mapper, pod("u2")) == [("4", "", 0.5)]
        assert summary(mapper, pod("u3")) == [("4", "", 0.5)]
        assert summary(mapper, pod("u4")) == []
        assert len(calls) == 1
        mapper.refresh()
        assert summary(mapper, pod("u1")) == [("0", "", 1.0)]
        assert len(calls) == 1  # cached: a pod's devices do not change
        assert summary(mapper, pod("u9")) == []  # a new pod: the kubelet is asked again
        assert len(calls) == 2
        mapper.forget({("", "u1"), ("", "u2")})  # ts-b and web ended: ts-a's share changes
        mapper.refresh()
        assert summary(mapper, pod("u2")) == [("4", "", 0.5)]
        assert len(calls) == 3


def test_k8s_kubelet_down_gives_nothing_and_retries(smi: str, tmp_path: Path) -> None:
    sock = tmp_path / "k.sock"
    logs = pod_logs(tmp_path / "pods", ("ml", "train-0", "u1"))
    args = options(
        "--collector.gpu.type=nvidia",
        f"--collector.gpu.nvidia-smi-path={smi}",
        f"--collector.k8s.kubelet-podresources-socket.file={sock}",
        f"--collector.k8s.pod-logs-dir={logs}",
    )
    mapper = build_gpu_mapper("k8s", args, NO_GPUS, tmp_path)
    assert mapper is not None
    mapper.refresh()
    assert mapper.shares(pod("u1")) == []
    with kubelet(sock, GPU_ANSWER):
        mapper.refresh()
        assert summary(mapper, pod("u1")) == [("0", "", 1.0)]


def test_families_label_units(smi: str, tmp_path: Path) -> None:
    procfs = tmp_path / "proc"
    write_environ(procfs, 5, SLURM_JOB_ID="3", SLURM_JOB_GPUS="6")
    mapper = slurm_mapper(smi, procfs)
    shares = {("slurm", "node-b", "3"): mapper.shares(job("3", 5, host="node-b"))}
    families = mapper.families("host1", shares)
    sample = families[0].samples[0]
    assert sample.labels == {
        "manager": "slurm",
        "hostname": "host1",
        "cgrouphostname": "node-b",
        "uuid": "3",
        "index": "6",
        "hindex": "host1/gpu-6",
        "gpuuuid": GPU_UUID + "4",
        "gpuiid": "2",
    }
    assert sample.value == 0.5


def test_libvirt_vm_leaving_relists_vgpus(
    libvirt_node: tuple[Path, Path, str], tmp_path: Path
) -> None:
    fixtures, _, tool = libvirt_node
    mapper = libvirt_mapper(tool, tmp_path)
    staying = vm(domain_xml(tmp_path / "vm-a.xml", MDEV + "1"))
    leaving = vm(domain_xml(tmp_path / "vm-b.xml", MDEV + "2"))
    assert summary(mapper, staying) == summary(mapper, leaving) == [("4", "", 0.5)]
    text = (fixtures / "vgpu.txt").read_text()
    (fixtures / "vgpu.txt").write_text(text.replace(MDEV + "2", "N/A"))  # its mdev removed
    mapper.forget({("", "vm-a")})
    mapper.refresh()
    assert summary(mapper, staying) == [("4", "", 1.0)]


def test_slurm_units_of_two_slurmd_are_cached_apart(smi: str, tmp_path: Path) -> None:
    procfs = tmp_path / "proc"
    write_environ(procfs, 1, SLURM_JOB_ID="5", SLURM_JOB_GPUS="0")
    write_environ(procfs, 2, SLURM_JOB_ID="5", SLURM_JOB_GPUS="4")
    mapper = slurm_mapper(smi, procfs)
    assert summary(mapper, job("5", 1, host="virt-a")) == [("0", "", 1.0)]
    assert summary(mapper, job("5", 2, host="virt-b")) == [("4", "", 1.0)]
