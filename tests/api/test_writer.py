"""The writer loop with the real store, the real SLURM manager over simulated sacct, Grafana."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ceems.api.admins import GrafanaError, GrafanaTeams
from ceems.api.config import ApiServerConfig, GrafanaTeamsConfig, UpdaterConfig
from ceems.api.managers.registry import build_managers
from ceems.api.store.engine import create_store_engine
from ceems.api.store.migrate import migrate
from ceems.api.store.writes import StoreWriter
from ceems.api.writer import WriterLoop, to_ms
from ceems.sim.slurm import append_jobs, write_shims
from tests.api.test_server import NOW, jobs
from tests.conftest import free_port


def build_loop(tmp_path: Path, updaters: dict[str, object] | None = None) -> WriterLoop:
    log = tmp_path / "jobs.jsonl"
    append_jobs(log, jobs())
    write_shims(tmp_path / "bin", log)
    config = ApiServerConfig.model_validate(
        {
            "ceems_api_server": {
                "data": {"path": str(tmp_path / "data"), "update_from": NOW - timedelta(days=11),
                         "max_update_interval": "1d", "retention_period": "1y"},
                "admin": {"users": ["admin"]},
            },
            "clusters": [{"id": "sim", "manager": "slurm", "cli": {"path": str(tmp_path / "bin")},
                          "updaters": list(updaters or {})}],
            "updaters": [{"id": u, "updater": "tsdb", "web": {"url": "http://127.0.0.1:9"}}
                         for u in updaters or {}],  # only referenced: the built ones are given
        }
    )  # fmt: skip
    engine = create_store_engine(config.ceems_api_server.data)
    migrate(engine)
    return WriterLoop(
        config,
        StoreWriter(engine),
        build_managers(config.clusters),
        updaters or {},  # type: ignore[arg-type]
        clock=lambda: NOW,
    )


def checkpoint(tmp_path: Path) -> int | None:
    with sqlite3.connect(tmp_path / "data" / "ceems.db") as db:
        row = db.execute("select last_update_ts from updates where cluster_id = 'sim'").fetchone()
    return None if row is None else int(row[0])


def test_failing_sacct_leaves_the_store_untouched_and_is_retried(tmp_path: Path) -> None:
    loop = build_loop(tmp_path)
    sacct = tmp_path / "bin" / "sacct"
    working = sacct.read_text()
    sacct.write_text(
        "#!/bin/sh\necho 'sacct: error: Problem talking to the database' >&2\nexit 1\n"
    )
    assert loop.run_once() == 0
    assert checkpoint(tmp_path) is None
    failures = loop.metrics.registry.get_sample_value(
        "ceems_api_server_update_failures_total", {"cluster": "sim", "stage": "fetch"}
    )
    assert failures == 1
    sacct.write_text(working)
    assert loop.run_once() >= 30  # a job that spans two windows is written in both
    assert checkpoint(tmp_path) == to_ms(NOW)
    with sqlite3.connect(tmp_path / "data" / "ceems.db") as db:
        assert db.execute("select count(*) from units").fetchone() == (30,)


def test_windows_end_on_whole_seconds(tmp_path: Path) -> None:
    """sacct works in whole seconds: a window ending at .400 would miss a job started at
    .200 (printed as started at .000, inside the window) while counting from the next one."""
    loop = build_loop(tmp_path)
    loop.clock = lambda: NOW + timedelta(milliseconds=400)
    loop.run_once()
    assert checkpoint(tmp_path) == to_ms(NOW)


def test_failing_updater_stores_units_without_its_metrics(tmp_path: Path) -> None:
    """The real tsdb updater with its Prometheus down: units are stored, failures counted."""
    from ceems.api.updaters.registry import build_updaters

    port = free_port()  # nothing listens there
    config = UpdaterConfig(id="tsdb-0", updater="tsdb", web={"url": f"http://127.0.0.1:{port}"})
    loop = build_loop(tmp_path, build_updaters([config]))
    loop.run_once()
    assert checkpoint(tmp_path) == to_ms(NOW)
    with sqlite3.connect(tmp_path / "data" / "ceems.db") as db:
        assert db.execute("select count(*) from units").fetchone() == (30,)
    counted = loop.metrics.registry.get_sample_value(
        "ceems_api_server_updater_failures_total", {"cluster": "sim", "updater": "tsdb-0"}
    )
    # one per window that had units to enrich: the first and last of the 11 days hold none
    assert counted == 9


@pytest.fixture
def grafana() -> Iterator[tuple[str, list[str]]]:
    """A Grafana team-members endpoint: team 1 has ops and root, team 2 answers 500."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            if self.path == "/api/teams/1/members":
                body = json.dumps([{"login": "ops", "teamId": 1}, {"login": "root", "teamId": 1}])
                self.send_response(200)
            else:
                body = '{"message":"Team not found"}'
                self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_grafana_team_members_become_admins(tmp_path: Path, grafana: tuple[str, list[str]]) -> None:
    url, seen = grafana
    teams = GrafanaTeams(
        GrafanaTeamsConfig(
            url=url, teams_ids=["1"], basic_auth={"username": "ceems", "password": "pw"}
        )
    )
    assert teams.members() == ["ops", "root"]
    assert seen[0].startswith("Basic ")
    loop = build_loop(tmp_path)
    loop.admin_source = teams.members
    loop.run_once()
    with sqlite3.connect(tmp_path / "data" / "ceems.db") as db:
        admins = set(db.execute("select name, source from admin_users").fetchall())
    assert {("ops", "grafana"), ("root", "grafana")} <= admins
    with pytest.raises(GrafanaError, match="team 2: HTTP 404"):
        GrafanaTeams(GrafanaTeamsConfig(url=url, teams_ids=["2"])).members()
