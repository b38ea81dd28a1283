"""Parsers of SLURM job fields: TRES, host lists, times, durations, states, window times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from ceems.api.managers.slurm.nodelist import expand_hostlist, nodelist_exp, quote_meta
from ceems.api.managers.slurm.units import (
    base_state,
    parse_alloc_tres,
    parse_elapsed_seconds,
    parse_mem_bytes,
    parse_time_ms,
    to_ms,
    window_times,
)

G = 1024**3
M = 1024**2


@pytest.mark.parametrize(
    ("tres", "expected"),
    [
        ("billing=4,cpu=2,mem=4G,node=1,gres/gpu=2", (4, 2, 2, 4 * G, 1)),
        ("billing=80,cpu=8,energy=1439089,gres/gpu=8,mem=320G,node=1", (80, 8, 8, 320 * G, 1)),
        ("cpu=16,gres/gpu=0,mem=320.5G,node=2", (0, 16, 0, int(320.5 * G), 2)),
        ("cpu=4,gres/gpu:a100=2,gres/gpu=2,mem=64000M,node=2", (0, 4, 2, 64000 * M, 2)),
        ("cpu=4,gres/gpu:a100=1,gres/gpu:v100=2,node=1", (0, 4, 3, 0, 1)),
        ("cpu=4,gres/gpu:1g.5gb=3,mem=4T,node=1", (0, 4, 3, 4 * 1024 * G, 1)),
        ("cpu=1,gres/gpu=1,gres/gpumem=40G,gres/gpuutil=100,node=1", (0, 1, 1, 0, 1)),
        ("cpu=1,mem=1024K,node=1", (0, 1, 0, 1024 * 1024, 1)),
        ("cpu=1,mem=300,node=1", (0, 1, 0, 300 * M, 1)),
        ("cpu=2,fs/disk=48486,license/matlab=1,node=1", (0, 2, 0, 0, 1)),
        ("", (0, 0, 0, 0, 0)),
    ],
)
def test_alloc_tres(tres: str, expected: tuple[int, int, int, int, int]) -> None:
    billing, cpus, gpus, mem, nodes = expected
    assert parse_alloc_tres(tres) == {
        "billing": billing, "cpus": cpus, "gpus": gpus, "mem": mem, "nodes": nodes,
    }  # fmt: skip


@pytest.mark.parametrize("tres", ["cpu=lots", "cpu", "mem=4X", "mem=G", "gres/gpu=two", "node=-1"])
def test_alloc_tres_refuses_bad_values(tres: str) -> None:
    with pytest.raises(ValueError, match=r"TRES|memory"):
        parse_alloc_tres(tres)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512M", 512 * M), ("1.5G", int(1.5 * G)), ("0", 0), ("2P", 2 * 1024**5), ("100", 100 * M)],
)
def test_mem_bytes(text: str, expected: int) -> None:
    assert parse_mem_bytes(text) == expected


@pytest.mark.parametrize(
    ("hostlist", "expected"),
    [
        ("vm", ["vm"]),
        ("compute-[0-2]", ["compute-0", "compute-1", "compute-2"]),
        ("node[1-3,5],gpu-[01-02]", ["node1", "node2", "node3", "node5", "gpu-01", "gpu-02"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("n[008-010]", ["n008", "n009", "n010"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("a,b[7],c", ["a", "b7", "c"]),
        ("", []),
    ],
)
def test_expand_hostlist(hostlist: str, expected: list[str]) -> None:
    assert expand_hostlist(hostlist) == expected


@pytest.mark.parametrize("hostlist", ["n[2-", "n2]", "n[a-b]", "n[5-3]", "n[1-2"])
def test_expand_hostlist_refuses_malformed(hostlist: str) -> None:
    with pytest.raises(ValueError, match="host list"):
        expand_hostlist(hostlist)


@pytest.mark.parametrize(
    ("hostlist", "expected"),
    [
        ("compute-[0-2]", "compute-0|compute-1|compute-2"),
        ("node.a,node[1-2].b", r"node\.a|node1\.b|node2\.b"),
    ],
)
def test_nodelistexp_is_ceems_regex_alternation(hostlist: str, expected: str) -> None:
    assert nodelist_exp(hostlist) == expected


def test_quote_meta_leaves_hyphens_as_go_does() -> None:
    assert quote_meta("gpu-01+x") == r"gpu-01\+x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-02-21T15:48:20+0100", datetime(2023, 2, 21, 14, 48, 20, tzinfo=UTC)),
        ("2026-11-23T01:52:42+0000", datetime(2026, 11, 23, 1, 52, 42, tzinfo=UTC)),
        ("2024-06-30T23:00:00-0530", datetime(2024, 7, 1, 4, 30, tzinfo=UTC)),
        ("2024-06-30T23:00:00Z", datetime(2024, 6, 30, 23, tzinfo=UTC)),
    ],
)
def test_time_with_offset_to_utc_ms(text: str, expected: datetime) -> None:
    assert parse_time_ms(text) == int(expected.timestamp()) * 1000


@pytest.mark.parametrize("text", ["Unknown", "None", "", "N/A"])
def test_unset_time_is_zero(text: str) -> None:
    assert parse_time_ms(text) == 0


@pytest.mark.parametrize(
    "text", ["yesterday", "2024-03-01T10:00:00", "2024-13-01T10:00:00+0000", "1709287200"]
)
def test_time_without_offset_or_garbage_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad time"):
        parse_time_ms(text)


def test_to_ms_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_ms(datetime(2024, 1, 1))


def test_to_ms_of_other_zone() -> None:
    paris = timezone(timedelta(hours=1))
    assert to_ms(datetime(2024, 1, 1, 1, tzinfo=paris)) == to_ms(datetime(2024, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:08:17", 497), ("1-02:03:04", 93784), ("12:34", 754), ("100-00:00:00", 8640000)],
)
def test_elapsed(text: str, seconds: int) -> None:
    assert parse_elapsed_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "INVALID", "1-", "a:b:c", "00:08:17.5"])
def test_elapsed_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_elapsed_seconds(text)


@pytest.mark.parametrize(
    ("state", "base"),
    [
        ("CANCELLED by 1002", "CANCELLED"),
        ("COMPLETED", "COMPLETED"),
        ("CANCELLED by 0", "CANCELLED"),
    ],
)
def test_base_state(state: str, base: str) -> None:
    assert base_state(state) == base


ALLOC = {"billing": 4, "cpus": 2, "gpus": 2, "mem": 4 * G, "nodes": 1}
S = 1_000_000_000_000  # window start, ms
E = S + 3_600_000  # window end: one hour later


@pytest.mark.parametrize(
    ("started", "ended", "walltime"),
    [
        (S + 600_000, S + 1_200_000, 600.0),  # inside the window
        (S - 600_000, S + 600_000, 600.0),  # started before: clipped at the start
        (S + 3_000_000, E + 600_000, 600.0),  # ended after: clipped at the end
        (S - 600_000, E + 600_000, 3600.0),  # spans the window
        (S + 3_000_000, 0, 600.0),  # running: counts up to the window's end
        (0, 0, 0.0),  # pending
        (S - 7_200_000, S - 3_600_000, 0.0),  # ended before the window
        (E + 1000, E + 2000, 0.0),  # started after the window
        (S + 500, S + 1500, 1.0),  # sub-second window edges are kept exactly
    ],
)
def test_window_walltime(started: int, ended: int, walltime: float) -> None:
    assert window_times(started, ended, S, E, ALLOC)["walltime"] == walltime


def test_window_times_follow_ceems_units() -> None:
    times = window_times(S, S + 497_000, S, E, ALLOC)
    assert times == {
        "walltime": 497.0,
        "alloc_cputime": 994.0,  # cpus x walltime
        "alloc_cpumemtime": 497.0 * 4096,  # MiB x walltime
        "alloc_gputime": 994.0,  # gpus x walltime
        "alloc_gpumemtime": 497.0,  # walltime when there are GPUs
    }


def test_window_times_without_memory_or_gpus() -> None:
    times = window_times(S, S + 10_000, S, E, {"cpus": 1, "mem": 0, "gpus": 0})
    # CEEMS counts the walltime as memory time when no memory is recorded
    assert times["alloc_cpumemtime"] == 10.0
    assert times["alloc_gputime"] == times["alloc_gpumemtime"] == 0.0


def test_golden_ceems_unit_times() -> None:
    """CEEMS' e2e-test-api-server-uuid-query output for job 1481508 (320G counted as CEEMS)."""
    alloc = {"billing": 160, "cpus": 16, "gpus": 0, "mem": 343597383680, "nodes": 2}
    times = window_times(S, S + 497_000, S, E, alloc)
    assert times == {
        "walltime": 497,
        "alloc_cputime": 7952,
        "alloc_cpumemtime": 162856960,
        "alloc_gputime": 0,
        "alloc_gpumemtime": 0,
    }
