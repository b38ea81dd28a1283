"""A real single-node SLURM cluster (`scripts/services.sh start slurm`) for tests that run jobs.

Use the session fixture `slurm_service`: it installs the Debian packages if needed, starts munged,
MariaDB, slurmdbd, slurmctld, slurmd and slurmrestd with the cgroup v1 plugins, and stops them all
(unmounting the cgroup binds) at the end of the session. Jobs run as the Linux users the script
creates: alice and bob (account research) and carol (account physics).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import SERVICES, missing_service

# Not a pytest tmp dir: those are 0700 under /tmp/pytest-of-root, and mariadbd (user mysql) and
# the slurm daemons (user slurm) must reach their files inside the state directory.
STATE_PARENT = Path("/var/tmp")
# One cluster per machine (ports 6817-6819, /run/munge, /etc/slurm): concurrent pytest sessions
# take turns through this lock instead of failing on each other's ports.
LOCK = STATE_PARENT / "ceems-slurm.lock"
LOCK_WAIT_S = 600
JWT_KEY_FILE = Path("/etc/slurm/jwt_hs256.key")  # written by scripts/services.sh
END_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)


def slurm_env() -> dict[str, str]:
    """This process's environment without SLURM_* variables (pytest may itself run in a job)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}


def _run(*args: str, user: str | None = None, stdin: str | None = None) -> str:
    command = ["runuser", "-u", user, "--", *args] if user else list(args)
    done = subprocess.run(
        command, input=stdin, env=slurm_env(), capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class SlurmService:
    """The running cluster: where its job cgroups are, and how to submit and follow jobs."""

    state_dir: Path
    cgroup_mountpoint: Path

    def submit(
        self,
        user: str,
        account: str,
        script: str,
        *,
        mem_mb: int = 100,
        cpus: int = 1,
        time_limit: int = 5,
        name: str = "ceems-test",
    ) -> str:
        """Submit `script` (a shell script body) as `user`; returns the job id.

        Output goes to /dev/null (a leftover slurm-<id>.out owned by someone else fails a job)
        and the job runs in /tmp, which every user can enter. `time_limit` is in minutes.
        """
        if not script.startswith("#!"):
            script = "#!/bin/sh\n" + script
        out = _run(
            "sbatch",
            "--parsable",
            "-o",
            "/dev/null",
            "--chdir=/tmp",
            f"--account={account}",
            f"--job-name={name}",
            "--ntasks=1",
            f"--cpus-per-task={cpus}",
            f"--mem={mem_mb}M",
            f"--time={time_limit}",
            user=user,
            stdin=script,
        )
        return out.strip().split(";")[0]

    def state(self, job_id: str) -> str:
        """The job's state (RUNNING, COMPLETED, ...) from squeue, else from accounting."""
        out = _run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T").strip()
        if not out:
            out = _run("sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State").strip()
        # sacct says "CANCELLED by 0"
        return out.split()[0] if out else "UNKNOWN"

    def wait_state(self, job_id: str, states: str | Iterable[str], timeout: float = 30) -> str:
        """Poll until the job is in one of `states` (a name, or e.g. END_STATES); returns it."""
        wanted = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        while True:
            current = self.state(job_id)
            if current in wanted:
                return current
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} is {current}, not {sorted(wanted)}, after {timeout}s\n"
                    f"slurmctld.log:\n{_tail(self.log('slurmctld.log'))}"
                )
            time.sleep(0.2)

    def cancel(self, job_id: str) -> None:
        """scancel as root (an already finished job is fine)."""
        subprocess.run(
            ["scancel", job_id], env=slurm_env(), capture_output=True, text=True, timeout=30
        )

    def active_jobs(self) -> list[str]:
        """Ids of jobs pending, running or completing."""
        return _run("squeue", "-h", "-o", "%A").split()

    def log(self, name: str) -> str:
        """A daemon's log under the state directory, e.g. "slurmd.log", "slurmctld.log"."""
        path = self.state_dir / "slurm" / "log" / name
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def restd_url(self) -> str:
        """slurmrestd's base URL (rest_auth/jwt, openapi/v0.0.38 and dbv0.0.38)."""
        port = (self.state_dir / "slurm" / "port").read_text().strip()
        return f"http://127.0.0.1:{port}"

    @property
    def jwt_key_file(self) -> Path:
        """The HS256 key slurmctld, slurmdbd and slurmrestd share (AuthAltParameters)."""
        return JWT_KEY_FILE

    def token(self, user: str, lifetime_s: int = 300) -> str:
        """A slurmrestd token for `user`, as `scontrol token username=<user>` makes it."""
        out = _run("scontrol", "token", f"username={user}", f"lifespan={lifetime_s}")
        return out.strip().removeprefix("SLURM_JWT=")

    def run_as(self, user: str, *args: str) -> str:
        """Run a command as `user` (runuser) without SLURM_* variables; returns its stdout."""
        return _run(*args, user=user)


def _lock_cluster() -> IO[str]:
    handle = LOCK.open("a")
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                missing_service(f"another test session kept the SLURM cluster ({LOCK}) busy")
            time.sleep(1)


def _mounted_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with Path("/proc/self/mounts").open() as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]


@pytest.fixture(scope="session")
def slurm_service() -> Iterator[SlurmService]:
    """A running single-node SLURM cluster for the whole session; stopped at its end."""
    if os.geteuid() != 0:
        missing_service("SLURM tests need root (scripts/services.sh start slurm)")
    install = subprocess.run(
        [str(SERVICES), "install", "slurm"], capture_output=True, text=True, timeout=900
    )
    if install.returncode != 0:
        missing_service(f"cannot install the SLURM packages: {_tail(install.stderr, 5)}")
    lock = _lock_cluster()
    state = Path(tempfile.mkdtemp(prefix="ceems-slurm-", dir=STATE_PARENT))
    state.chmod(0o755)
    env = {**slurm_env(), "CEEMS_SERVICES_DIR": str(state)}
    try:
        start = subprocess.run(
            [str(SERVICES), "start", "slurm"], env=env, capture_output=True, text=True, timeout=300
        )
        if start.returncode != 0:
            pytest.fail(f"scripts/services.sh start slurm failed:\n{start.stdout}{start.stderr}")
        mountpoint = state / "slurm" / "cgroup_mountpoint"
        cgroups = Path(mountpoint.read_text().strip()) if mountpoint.exists() else Path()
        yield SlurmService(state, cgroups)
    finally:
        subprocess.run(
            [str(SERVICES), "stop", "slurm"], env=env, capture_output=True, text=True, timeout=120
        )
        # never rmtree through a bind mount of the cgroup hierarchies
        if not _mounted_under(state):
            shutil.rmtree(state, ignore_errors=True)
        lock.close()
