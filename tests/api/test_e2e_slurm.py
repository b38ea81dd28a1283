"""The API server over a real SLURM: jobs of two users in two accounts, via sacct and slurmrestd.

Needs root and the Debian SLURM packages (tests/slurm_service.py); it skips without them on
a developer's machine and fails under CEEMS_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.api.test_server import Server
from tests.slurm_service import END_STATES, SlurmService

SHORT_JOB = "#!/bin/sh\nsleep 2\n"


def test_jobs_of_two_users_through_both_sources(
    slurm_service: SlurmService, tmp_path: Path
) -> None:
    started = datetime.now(UTC) - timedelta(minutes=1)
    alice = slurm_service.submit("alice", "research", SHORT_JOB, mem_mb=300, cpus=2)
    carol = slurm_service.submit("carol", "physics", SHORT_JOB, mem_mb=200, cpus=1)
    for job in (alice, carol):
        slurm_service.wait_state(job, END_STATES, timeout=60)
    config = tmp_path / "config.yml"
    config.write_text(
        "ceems_api_server:\n"
        "  data:\n"
        f"    path: {tmp_path / 'data'}\n"
        "    update_interval: 1s\n"
        f"    update_from: '{started.isoformat()}'\n"
        "  admin:\n"
        "    users: [admin]\n"
        "clusters:\n"
        "  - id: via-sacct\n"
        "    manager: slurm\n"
        "  - id: via-restd\n"
        "    manager: slurm\n"
        "    web:\n"
        f"      url: {slurm_service.restd_url}\n"
        "    extra_config:\n"
        "      source: slurmrestd\n"
        f"      jwt_key_file: {slurm_service.jwt_key_file}\n"
        "      cluster_name: testcluster\n"
    )
    server = Server(config)
    try:
        window = {"from": int(started.timestamp()), "to": int(time.time()) + 60}
        deadline = time.monotonic() + 60
        while True:
            units = server.get("units/admin", "admin", **window).json()["data"]
            found = {(u["cluster_id"], u["uuid"]) for u in units}
            wanted = {(c, j) for c in ("via-sacct", "via-restd") for j in (alice, carol)}
            if wanted <= found:
                break
            assert time.monotonic() < deadline, f"jobs never stored: {found}"
            time.sleep(0.5)
        by_source: dict[str, dict[str, dict[str, object]]] = {}
        for unit in units:
            by_source.setdefault(unit["cluster_id"], {})[unit["uuid"]] = unit
        for source in ("via-sacct", "via-restd"):
            a, c = by_source[source][alice], by_source[source][carol]
            assert (a["username"], a["project"], a["state"]) == ("alice", "research", "COMPLETED")
            assert (c["username"], c["project"], c["state"]) == ("carol", "physics", "COMPLETED")
            assert a["allocation"]["cpus"] == 2 and a["allocation"]["mem"] == 300 * 2**20  # type: ignore[index]
            assert c["allocation"]["cpus"] == 1 and c["allocation"]["nodes"] == 1  # type: ignore[index]
            assert 0 < a["started_at_ts"] < a["ended_at_ts"]  # type: ignore[operator]
            walltime = a["total_time_seconds"]["walltime"]  # type: ignore[index]
            assert 1 <= walltime <= 30
        # Both sources describe the same jobs the same way.
        for job in (alice, carol):
            for key in (
                "username",
                "project",
                "state",
                "allocation",
                "started_at_ts",
                "ended_at_ts",
            ):
                assert by_source["via-sacct"][job][key] == by_source["via-restd"][job][key], key
        # Other tests of the session may have run research jobs on this SLURM too: alice sees
        # research's units (hers and bob's), never carol's physics ones, and vice versa.
        mine = server.get("units", "alice", **window).json()["data"]
        assert alice in {u["uuid"] for u in mine} and carol not in {u["uuid"] for u in mine}
        assert {u["project"] for u in mine} == {"research"}
        theirs = server.get("units", "carol", **window).json()["data"]
        assert carol in {u["uuid"] for u in theirs} and alice not in {u["uuid"] for u in theirs}
        assert {u["username"] for u in theirs} == {"carol"}
        assert server.get("units/verify", "carol", uuid=alice).status_code == 403
    finally:
        server.stop()
