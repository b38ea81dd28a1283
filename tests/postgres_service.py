"""A real PostgreSQL server (`scripts/services.sh start postgresql`) for store tests.

Use the session fixture `postgres_url`: the SQLAlchemy URL of the database `ceems`, owned by
the role `ceems` (which may create databases). The server has its own state directory and a
free port, and is stopped at the end of the session.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SERVICES, free_port, missing_service

# Not a pytest tmp dir: those are 0700, and the server runs as the user postgres.
STATE_PARENT = Path("/var/tmp")


def _server_installed() -> bool:
    return any(Path("/usr/lib/postgresql").glob("*/bin/postgres"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL (postgresql+psycopg://ceems:...@127.0.0.1:PORT/ceems) of a running server."""
    if importlib.util.find_spec("psycopg") is None:
        missing_service("psycopg is not installed (pip install -e '.[dev]')")
    if not _server_installed():
        if os.geteuid() != 0:
            missing_service("PostgreSQL not installed and not root to install it")
        install = subprocess.run(
            [str(SERVICES), "install", "postgresql"], capture_output=True, text=True, timeout=900
        )
        if install.returncode != 0:
            missing_service(f"cannot install PostgreSQL: {install.stderr.strip()[-500:]}")
    state = Path(tempfile.mkdtemp(prefix="ceems-postgresql-", dir=STATE_PARENT))
    state.chmod(0o755)
    env = {**os.environ, "CEEMS_SERVICES_DIR": str(state), "POSTGRES_PORT": str(free_port())}
    try:
        start = subprocess.run(
            [str(SERVICES), "start", "postgresql"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if start.returncode != 0:
            pytest.fail(
                f"scripts/services.sh start postgresql failed:\n{start.stdout}{start.stderr}"
            )
        yield (state / "postgresql" / "url").read_text().strip()
    finally:
        subprocess.run(
            [str(SERVICES), "stop", "postgresql"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        shutil.rmtree(state, ignore_errors=True)
