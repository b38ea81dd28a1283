"""Running SLURM's command-line tools: where they are, their environment, sudo, a time limit."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ceems.api.managers.protocol import ManagerError

_STDERR_CHARS = 2000
_REAP_S = 5.0


@dataclass(frozen=True, slots=True)
class SlurmCli:
    """sacct/sacctmgr of one cluster: `bin_dir` (empty: PATH), extra environment, sudo."""

    cluster_id: str
    bin_dir: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)
    sudo: bool = False
    timeout_s: float = 60.0

    def _env(self, overrides: Mapping[str, str]) -> dict[str, str]:
        return {**os.environ, **self.environment, **overrides}

    def argv(self, tool: str, args: Sequence[str], env: Mapping[str, str]) -> list[str]:
        """The command line: the tool's absolute path, behind `sudo -n -E` when configured."""
        if self.bin_dir:
            path = Path(self.bin_dir) / tool
            if not path.is_file():
                raise ManagerError(f"cluster {self.cluster_id!r}: {tool} not found at {path}")
            found = str(path)
        else:
            which = shutil.which(tool, path=env.get("PATH"))
            if which is None:
                raise ManagerError(
                    f"cluster {self.cluster_id!r}: {tool} not found on PATH (set cli.path)"
                )
            found = which
        # -n: fail instead of prompting; -E: keep SLURM_TIME_FORMAT and TZ, which needs
        # SETENV in sudoers (without it sudo refuses and the error says so)
        return ["sudo", "-n", "-E", found, *args] if self.sudo else [found, *args]

    def run(self, tool: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> str:
        """The tool's stdout; ManagerError on a missing tool, a non-zero exit or a timeout."""
        full_env = self._env(env or {})
        argv = self.argv(tool, args, full_env)
        command = shlex.join(argv)
        try:
            # own session, so a timeout kills the tool's children too (they hold the pipes)
            proc = subprocess.Popen(
                argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        except OSError as err:
            raise ManagerError(
                f"cluster {self.cluster_id!r}: cannot run {command}: {err.strerror or err}"
            ) from err
        try:
            out, err_bytes = proc.communicate(timeout=self.timeout_s)
        except subprocess.TimeoutExpired as err:
            _kill(proc)
            raise ManagerError(
                f"cluster {self.cluster_id!r}: {command} timed out after {self.timeout_s:g} s"
            ) from err
        stderr = err_bytes.decode("utf-8", errors="replace").strip()[-_STDERR_CHARS:]
        if proc.returncode != 0:
            raise ManagerError(
                f"cluster {self.cluster_id!r}: {command} exited with status {proc.returncode}: "
                f"{stderr or '(no stderr)'}"
            )
        # a job name in another encoding must not cost the whole window
        return out.decode("utf-8", errors="replace")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (PermissionError, ProcessLookupError):
        proc.kill()  # sudo's group may belong to root; sudo itself is ours to signal
    try:
        proc.communicate(timeout=_REAP_S)
    except subprocess.TimeoutExpired:
        # a child that escaped the group still holds the pipes: stop reading, leave it
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait(timeout=_REAP_S)
