"""The simulated SLURM cluster: a seeded job stream, placement within capacity, log and truth."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ceems.sim.cluster import GPU_SLOTS, ClusterSpec, SimCluster
from ceems.sim.slurm import read_jobs


class Clock:
    """Wall-clock time the test moves."""

    def __init__(self) -> None:
        self.now = 1_767_225_600.0

    def __call__(self) -> float:
        return self.now


def run(root: Path, seed: int = 3, seconds: int = 400) -> SimCluster:
    clock = Clock()
    spec = ClusterSpec(nodes=4, seed=seed, jobs_per_hour=900, min_job_s=20, max_job_s=60)
    cluster = SimCluster(root, spec, clock=clock)
    cluster.seed_jobs()
    for _ in range(seconds // 5):
        clock.now += 5
        cluster.advance(5.0)
        for node in cluster.nodes:
            assert node.free_cpus() >= 0, "a node was given more CPUs than it has"
            held = [g for gpus in node.gpus_of.values() for g in gpus]
            assert len(held) == len(set(held)), "a GPU was given to two jobs"
            assert sorted(held + node.free_gpus) == (list(GPU_SLOTS) if node.role == "gpu" else [])
    return cluster


def test_the_same_seed_gives_the_same_jobs(tmp_path: Path) -> None:
    first, second = run(tmp_path / "a", seconds=200), run(tmp_path / "b", seconds=200)
    jobs = [(j.user, j.account, j.cpus, j.gpus) for j in read_jobs(first.job_log).values()]
    again = [(j.user, j.account, j.cpus, j.gpus) for j in read_jobs(second.job_log).values()]
    assert len(jobs) > 10 and jobs == again
    other = run(tmp_path / "c", seed=4, seconds=200)
    assert [(j.user, j.cpus) for j in read_jobs(other.job_log).values()] != [
        (u, c) for u, _, c, _ in jobs
    ]


def test_jobs_start_and_end_in_the_log_and_the_truth(tmp_path: Path) -> None:
    cluster = run(tmp_path)
    jobs = read_jobs(cluster.job_log)
    truth = json.loads(cluster.truth_file.read_text())
    ended = [j for j in jobs.values() if j.end_ms]
    assert ended and set(truth) == {str(j) for j in jobs}
    for job in ended:
        record = truth[str(job.job_id)]
        assert job.state in ("COMPLETED", "FAILED") and record["end_ms"] == job.end_ms
        assert record["user"] == job.user and record["node"] == job.nodes[0]
        seconds = (job.end_ms - job.start_ms) / 1000
        # a job keeps between 2 % and 100 % of its CPUs busy
        assert 0.02 * job.cpus * seconds * 0.9 < record["cpu_seconds"] <= job.cpus * seconds + 1
        assert record["attributed_energy_joules"] > 0
    for node in cluster.nodes:  # jobs never get more than their node consumed
        on_node = [t for t in truth.values() if t["node"] == node.hostname]
        node_j = node.sim.ground_truth()["node_joules"]
        assert sum(t["attributed_energy_joules"] for t in on_node) <= node_j


def test_the_sacct_shim_prints_the_jobs(tmp_path: Path) -> None:
    cluster = run(tmp_path, seconds=60)
    out = subprocess.run(
        [str(cluster.slurm_dir / "bin" / "sacct"), "--starttime", "2026-01-01T00:00:00",
         "--endtime", "2026-01-02T00:00:00"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    ids = {line.split("|")[0] for line in out.splitlines()}
    assert ids == {str(j) for j in read_jobs(cluster.job_log)}
