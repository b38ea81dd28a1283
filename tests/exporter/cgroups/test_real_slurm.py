"""The slurm collector over a real SLURM cluster: job cgroups read while the jobs run.

Needs root and the Debian SLURM packages (tests/slurm_service.py); skipped otherwise, failed
under CEEMS_REQUIRE_SERVICES=1. slurmd's cgroup/v1 plugin makes
`<mnt>/<controller>/slurm_<node>/uid_<uid>/job_<id>/step_batch/task_0` under the bind mounts of
`scripts/services.sh`, which the exporter reads through `--path.cgroupfs <mnt>`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ceems.exporter.cli import Exporter
from tests.conftest import StartExporter
from tests.slurm_service import END_STATES, SlurmService

pytestmark = pytest.mark.services

# One CPU burnt for a minute (cancelled long before); /bin/sh is dash, which has no $SECONDS.
BURN = 'timeout 60 sh -c "while :; do :; done"; true\n'
# tail keeps the newline-less 80 MB in memory until the sleep ends and the pipe closes.
HOLD = "(head -c 80M /dev/zero; sleep 60) | tail\n"
MB = 1_000_000

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(exporter: Exporter) -> Samples:
    """Every sample of one /metrics scrape, by sample name."""
    response = httpx.get(f"http://127.0.0.1:{exporter.server.ports[0]}/metrics", timeout=30)
    response.raise_for_status()
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The one sample of `name` whose labels include `labels`, or None."""
    found = [v for lbls, v in samples.get(name, []) if labels.items() <= lbls.items()]
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
    return found[0] if found else None


def job_uuids(samples: Samples) -> set[str]:
    return {
        labels["uuid"]
        for labels, _ in samples.get("ceems_compute_unit_cpu_user_seconds_total", [])
        if labels.get("manager") == "slurm"
    }


def cpu_seconds(samples: Samples, job: str) -> float:
    user = value(samples, "ceems_compute_unit_cpu_user_seconds_total", uuid=job)
    system = value(samples, "ceems_compute_unit_cpu_system_seconds_total", uuid=job)
    assert user is not None and system is not None, f"no CPU time for job {job}"
    return user + system


@pytest.fixture
def jobs(slurm_service: SlurmService) -> Iterator[tuple[str, str]]:
    """alice burning one CPU and bob holding 80 MB, both RUNNING; cancelled afterwards."""
    assert slurm_service.active_jobs() == [], "jobs left over from another test"
    burn = slurm_service.submit("alice", "research", BURN, mem_mb=100, cpus=1)
    hold = slurm_service.submit("bob", "research", HOLD, mem_mb=200, cpus=1)
    try:
        slurm_service.wait_state(burn, "RUNNING")
        slurm_service.wait_state(hold, "RUNNING")
        yield burn, hold
    finally:
        slurm_service.cancel(burn)
        slurm_service.cancel(hold)


def test_running_jobs_are_reported_and_vanish_when_they_end(
    slurm_service: SlurmService,
    jobs: tuple[str, str],
    start_exporter: StartExporter,
) -> None:
    burn, hold = jobs
    mountpoint = slurm_service.cgroup_mountpoint
    if not (mountpoint / "cpuacct").is_dir():
        pytest.skip(f"needs a cgroup v1 host; SLURM's cgroups are at {mountpoint}")
    exporter = start_exporter(
        "--collector.disable-defaults",
        "--collector.slurm",
        "--path.cgroupfs",
        str(mountpoint),
        "--collector.cgroups.force-version",
        "v1",
        "--collector.hostname",
        "testnode",
        "--web.disable-exporter-metrics",
    )
    # bob's 80 MB arrive in his cgroup a moment after the job starts
    deadline = time.monotonic() + 20
    while True:
        t1 = time.monotonic()
        first = scrape(exporter)
        rss = value(first, "ceems_compute_unit_memory_rss_bytes", uuid=hold)
        if (rss is not None and rss >= 60 * MB) or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    assert job_uuids(first) >= {burn, hold}
    assert value(first, "ceems_compute_units", manager="slurm") == 2
    assert rss is not None and rss >= 60 * MB, f"bob's job rss {rss}"
    used = value(first, "ceems_compute_unit_memory_used_bytes", uuid=hold)
    assert used is None or used >= 60 * MB

    time.sleep(4)
    t2 = time.monotonic()
    second = scrape(exporter)
    grown, wall = cpu_seconds(second, burn) - cpu_seconds(first, burn), t2 - t1
    assert 0.5 * wall <= grown <= 1.5 * wall, f"alice's job used {grown:.2f} s CPU in {wall:.2f} s"
    assert cpu_seconds(second, hold) - cpu_seconds(first, hold) < 0.5 * wall  # bob only sleeps

    for job in jobs:
        slurm_service.cancel(job)
        slurm_service.wait_state(job, END_STATES)
    # slurmstepd removes the job cgroups once the job's processes are gone
    deadline = time.monotonic() + 30
    while job_uuids(last := scrape(exporter)) & {burn, hold} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not job_uuids(last) & {burn, hold}
    assert value(last, "ceems_compute_units", manager="slurm") == 0
