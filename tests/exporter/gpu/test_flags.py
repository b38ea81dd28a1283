"""GPU flags: names, destinations, defaults, and declaring them from several collectors."""

from __future__ import annotations

import argparse

import pytest

from ceems.exporter.gpu.flags import add_gpu_flags, add_k8s_gpu_flags, add_slurm_gpu_flags


def parser() -> tuple[argparse.ArgumentParser, argparse._ArgumentGroup]:
    parser = argparse.ArgumentParser()
    return parser, parser.add_argument_group("collectors")


def test_defaults() -> None:
    p, group = parser()
    for add in (add_gpu_flags, add_slurm_gpu_flags, add_k8s_gpu_flags):
        add(group)
    options = p.parse_args([])
    assert vars(options) == {
        "gpu_type": "",
        "gpu_nvidia_smi_path": "nvidia-smi",
        "gpu_amd_smi_path": "amd-smi",
        "gpu_rocm_smi_path": "rocm-smi",
        "slurm_gres_config_file": "/etc/slurm/gres.conf",
        "slurm_gpu_order_map": "",
        "k8s_kubelet_podresources_socket_file": "",
        "k8s_pod_logs_dir": "/var/log/pods",
    }


def test_collectors_may_each_declare_the_gpu_flags() -> None:
    p, group = parser()
    add_gpu_flags(group)  # slurm
    add_gpu_flags(group)  # libvirt
    options = p.parse_args(
        ["--collector.gpu.type=amd", "--collector.gpu.rocm-smi-path", "/opt/rocm/bin/rocm-smi"]
    )
    assert (options.gpu_type, options.gpu_rocm_smi_path) == ("amd", "/opt/rocm/bin/rocm-smi")


def test_gpu_type_is_checked() -> None:
    p, group = parser()
    add_gpu_flags(group)
    with pytest.raises(SystemExit):
        p.parse_args(["--collector.gpu.type=intel"])


def test_slurm_and_k8s_flags() -> None:
    p, group = parser()
    add_slurm_gpu_flags(group)
    add_k8s_gpu_flags(group)
    options = p.parse_args(
        [
            "--collector.slurm.gpu-order-map=0:0,1:1.2",
            "--collector.slurm.gres-config-file=/tmp/gres.conf",
            "--collector.k8s.kubelet-podresources-socket.file=/run/kubelet.sock",
        ]
    )
    assert options.slurm_gpu_order_map == "0:0,1:1.2"
    assert options.slurm_gres_config_file == "/tmp/gres.conf"
    assert options.k8s_kubelet_podresources_socket_file == "/run/kubelet.sock"
