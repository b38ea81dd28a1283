"""gres.conf: host lists, Name= lines, shard and MPS counts per GPU."""

from __future__ import annotations

import pytest

from ceems.exporter.gpu.devices import GpuDevice
from ceems.exporter.gpu.gres import (
    GresConfigError,
    GresLine,
    expand_hostlist,
    parse_gres_conf,
    shares_per_device,
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("", []),
        ("gpu1", ["gpu1"]),
        ("gpu[1-3]", ["gpu1", "gpu2", "gpu3"]),
        ("gpu[08-10],cpu1", ["gpu08", "gpu09", "gpu10", "cpu1"]),
        ("r[1-2]n[1,3]", ["r1n1", "r1n3", "r2n1", "r2n3"]),
        ("/dev/nvidia[0-1],/dev/nvidia3", ["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia3"]),
    ],
)
def test_expand_hostlist(expr: str, names: list[str]) -> None:
    assert expand_hostlist(expr) == names


@pytest.mark.parametrize(
    ("expr", "message"),
    [("gpu[1-3", "unclosed"), ("gpu[a-b]", "bad range"), ("gpu[3-1]", "descending")],
)
def test_expand_hostlist_rejects_bad_ranges(expr: str, message: str) -> None:
    with pytest.raises(GresConfigError, match=message):
        expand_hostlist(expr)


GRES = """\
# GPUs of the A100 nodes
AutoDetect=nvml
NodeName=gpu[01-04] Name=gpu Type=a100 File=/dev/nvidia[0-3]
NodeName=gpu[01-04] Name=shard Count=32
NodeName=gpu05 Name=mps Count=200 File=/dev/nvidia0   # one GPU with MPS
Name=mps Count=2K File=/dev/nvidia[1-2]
"""


def test_parse_gres_conf() -> None:
    lines = parse_gres_conf(GRES)
    assert lines[0] == GresLine(
        name="gpu",
        node_names=("gpu01", "gpu02", "gpu03", "gpu04"),
        type="a100",
        files=("/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia2", "/dev/nvidia3"),
    )
    assert [(line.name, line.count) for line in lines] == [
        ("gpu", None),
        ("shard", 32),
        ("mps", 200),
        ("mps", 2048),
    ]


@pytest.mark.parametrize(
    ("text", "message"), [("Name=shard Count=many", "bad Count"), ("Name=gpu junk", "Key=Value")]
)
def test_parse_gres_conf_rejects_bad_lines(text: str, message: str) -> None:
    with pytest.raises(GresConfigError, match=message):
        parse_gres_conf(text)


def gpus(n: int) -> list[GpuDevice]:
    return [GpuDevice(str(i), f"/gpu-{i}", f"GPU-{i}", minor_number=str(i)) for i in range(n)]


def test_count_without_file_is_spread_over_the_gpus() -> None:
    counts = shares_per_device(parse_gres_conf(GRES), "shard", "gpu02.cluster", gpus(4))
    assert counts == {(f"GPU-{i}", ""): 8.0 for i in range(4)}


def test_lines_of_other_nodes_do_not_apply() -> None:
    assert shares_per_device(parse_gres_conf(GRES), "shard", "gpu05", gpus(4)) == {}


def test_count_with_files_is_spread_over_those_devices() -> None:
    counts = shares_per_device(parse_gres_conf(GRES), "mps", "gpu05", gpus(4))
    assert counts == {("GPU-0", ""): 200.0, ("GPU-1", ""): 1024.0, ("GPU-2", ""): 1024.0}
