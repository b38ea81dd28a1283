"""The slurmrestd source: recorded 22.05 JSON, and a stand-in slurmrestd over real HTTP."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from ceems.api.config import ClusterConfig
from ceems.api.managers.protocol import ManagerError
from ceems.api.managers.slurm.jwt_token import TokenSource
from ceems.api.managers.slurm.manager import SlurmManager
from ceems.api.managers.slurm.restd import (
    jobs_by_id_query,
    jobs_query,
    parse_restd_associations,
    parse_restd_jobs,
    parse_restd_records,
    relative_time,
    restd_allocation,
    restd_exit_code,
)
from ceems.api.managers.slurm.sacct import parse_sacct, parse_sacctmgr
from ceems.api.models import Unit
from tests.conftest import FIXTURES, free_port

SLURM = FIXTURES / "slurm"
M = 1024**2
KEY = b"k" * 32  # the HS256 key of the stand-in slurmrestd
IDS = {"alice": 1001, "bob": 1002, "carol": 1003, "root": 0}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SLURM / name).read_text())
    return data


def uid(name: str) -> int | None:
    return IDS.get(name)


def by_uuid(units: list[Unit]) -> dict[str, Unit]:
    return {unit.uuid: unit for unit in units}


REAL_START = datetime(2026, 11, 23, 1, 50, tzinfo=UTC)
REAL_END = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


# ---- recorded answers --------------------------------------------------------------------


def test_recorded_jobs_match_recorded_sacct_of_the_same_cluster() -> None:
    """Both recordings were taken from one SLURM 22.05 after the same jobs ran."""
    rest = by_uuid(parse_restd_jobs("c1", load("restd/jobs-22.05.json"), REAL_START, REAL_END,
                                    uid, uid))  # fmt: skip
    text = (SLURM / "sacct/slurm-22.05.txt").read_text()
    sacct = by_uuid(parse_sacct("c1", text, REAL_START, REAL_END))
    assert sorted(rest) == sorted(sacct) == ["1", "2", "4", "5"]
    for job_id, unit in sacct.items():
        if job_id == "2":
            # slurmrestd 22.05 reports exit code 0 for this job, which exited 3 (sacct: 3:0)
            assert rest[job_id].tags["exit_code"] == "0:0"
            assert unit.tags["exit_code"] == "3:0"
            unit = Unit(**{**_fields(unit), "tags": {**unit.tags, "exit_code": "0:0"}})
        assert rest[job_id] == unit


def _fields(unit: Unit) -> dict[str, Any]:
    return {name: getattr(unit, name) for name in Unit.__slots__}


def test_recorded_job_values() -> None:
    units = by_uuid(parse_restd_jobs("c1", load("restd/jobs-22.05.json"), REAL_START, REAL_END,
                                     uid, uid))  # fmt: skip
    assert units["4"].state == "CANCELLED by 0"  # kill_request_user root
    assert dict(units["1"].allocation) == {
        "billing": 2, "cpus": 2, "gpus": 0, "mem": 300 * M, "nodes": 1,
    }  # fmt: skip
    assert units["1"].name == "ceems-ünï"
    assert units["5"].total_time_seconds["walltime"] == 90.0


def test_unknown_names_leave_uid_and_gid_out() -> None:
    units = parse_restd_jobs(
        "c1", load("restd/jobs-22.05.json"), REAL_START, REAL_END, lambda _: None, lambda _: None
    )
    assert all("uid" not in u.tags and "gid" not in u.tags for u in units)
    assert {u.uuid: u.state for u in units}["4"] == "CANCELLED"


ODD_START = datetime(2024, 3, 1, 10, tzinfo=UTC)
ODD_END = datetime(2024, 3, 1, 11, tzinfo=UTC)


def test_odd_jobs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ceems.api.managers.slurm.restd")
    units = by_uuid(parse_restd_jobs("c1", load("restd/jobs-odd.json"), ODD_START, ODD_END,
                                     uid, uid))  # fmt: skip
    # 202 pending, 204 ended before the window, 205 started after it
    assert sorted(units) == ["200", "201", "203", "208"]
    assert dict(units["200"].allocation) == {
        "billing": 32, "cpus": 4, "gpus": 2, "mem": 65536 * M, "nodes": 2,
    }  # fmt: skip
    assert units["200"].tags["nodelistexp"] == "gpu-01|gpu-02"
    assert units["201"].allocation["gpus"] == 3  # typed MIG gres only
    assert units["201"].ended_at_ts == 0
    assert units["201"].total_time_seconds["walltime"] == 3595.0  # running to the window end
    assert (units["203"].state, units["203"].tags["exit_code"]) == ("CANCELLED", "0:15")
    assert units["208"].tags["exit_code"] == "2:0"
    assert [(r.index, r.job_id) for r in caplog.records] == [  # type: ignore[attr-defined]
        (6, 206), (7, None), (8, 207),
    ]  # fmt: skip


def test_nothing_found_is_no_units() -> None:
    payload = load("restd/jobs-nothing-found.json")
    assert parse_restd_jobs("c1", payload, ODD_START, ODD_END) == []


def test_records_are_the_window_units_without_usage() -> None:
    payload = load("restd/jobs-22.05.json")
    records = by_uuid(parse_restd_records("c1", payload, uid, uid))
    windowed = by_uuid(parse_restd_jobs("c1", payload, REAL_START, REAL_END, uid, uid))
    assert sorted(records) == sorted(windowed) == ["1", "2", "4", "5"]
    for job_id, record in records.items():
        assert record.total_time_seconds == {} and record.metrics == {}
        times = windowed[job_id].total_time_seconds
        assert replace(record, total_time_seconds=times) == windowed[job_id]


def test_records_ignore_the_window_but_not_jobs_that_never_ran() -> None:
    # 204 ended and 205 started outside ODD_START..ODD_END: records whenever they ran
    records = by_uuid(parse_restd_records("c1", load("restd/jobs-odd.json"), uid, uid))
    assert sorted(records) == ["200", "201", "203", "204", "205", "208"]  # 202 is pending


def test_jobs_by_id_query_is_a_step_list_fully_encoded() -> None:
    assert jobs_by_id_query(["4", "12"]) == "step=4%2C12"
    assert jobs_by_id_query(["4"], "test cluster") == "step=4&cluster=test%20cluster"
    with pytest.raises(ValueError, match="job ids must be numbers"):
        jobs_by_id_query(["4.batch"])
    with pytest.raises(ValueError, match="job ids must be numbers"):
        jobs_by_id_query([])


def test_recorded_associations_match_sacctmgr() -> None:
    rest = parse_restd_associations("c1", load("restd/associations-22.05.json"))
    assert rest == parse_sacctmgr("c1", (SLURM / "sacctmgr/slurm-22.05.txt").read_text())


def test_associations_of_another_cluster_are_left_out() -> None:
    payload = load("restd/associations-22.05.json")
    assert parse_restd_associations("c1", payload, "othercluster") == ([], [])
    assert parse_restd_associations("c1", payload, "testcluster")[0] != []


@pytest.mark.parametrize(
    ("tres", "expected"),
    [
        ([{"type": "cpu", "count": 2}, {"type": "mem", "count": 300}], (0, 2, 0, 300 * M, 0)),
        ([{"type": "gres", "name": "gpu:a100", "count": 1},
          {"type": "gres", "name": "gpu:v100", "count": 2}], (0, 0, 3, 0, 0)),
        ([{"type": "gres", "name": "gpu", "count": 4},
          {"type": "gres", "name": "gpu:a100", "count": 4}], (0, 0, 4, 0, 0)),
        ([{"type": "energy", "count": None}, {"type": "node", "count": 3},
          {"type": "billing", "count": 9}], (9, 0, 0, 0, 3)),
        ([], (0, 0, 0, 0, 0)),
    ],
)  # fmt: skip
def test_restd_allocation(tres: list[dict[str, Any]], expected: tuple[int, ...]) -> None:
    billing, cpus, gpus, mem, nodes = expected
    assert restd_allocation(tres) == {
        "billing": billing, "cpus": cpus, "gpus": gpus, "mem": mem, "nodes": nodes,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("exit_code", "expected"),
    [
        ({"status": "SUCCESS", "return_code": 0}, "0:0"),
        ({"status": "FAILED", "return_code": 3}, "3:0"),
        ({"status": "SIGNALED", "return_code": None, "signal": {"signal_id": 9}}, "0:9"),
        (None, "0:0"),
    ],
)
def test_restd_exit_code(exit_code: dict[str, Any] | None, expected: str) -> None:
    assert restd_exit_code(exit_code) == expected


@pytest.mark.parametrize(
    ("offset_s", "expected"),
    [(-900.0, "now-900seconds"), (-0.2, "now-1seconds"), (0.0, "now+0seconds"),
     (299.5, "now+300seconds")],
)  # fmt: skip
def test_relative_time(offset_s: float, expected: str) -> None:
    assert relative_time(offset_s) == expected


def test_jobs_query_is_relative_padded_and_encoded() -> None:
    now = datetime(2024, 3, 1, 12, tzinfo=UTC)
    query = jobs_query(now - timedelta(minutes=15), now, now, "test,cluster")
    assert query == ("start_time=now-1200seconds&end_time=now%2B300seconds&cluster=test%2Ccluster")


# ---- a stand-in slurmrestd ---------------------------------------------------------------


@dataclass
class FakeRestd:
    """Serves canned answers per path; checks tokens against `key` like rest_auth/jwt."""

    key: bytes
    answers: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def answer(self, path: str, status: int, body: bytes | dict[str, Any]) -> None:
        self.answers[path] = (
            status,
            body if isinstance(body, bytes) else json.dumps(body).encode(),
        )


@pytest.fixture
def restd() -> Iterator[FakeRestd]:
    fake = FakeRestd(key=KEY)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            fake.requests.append((parts.path, parse_qs(parts.query), headers))
            status, body = fake.answers.get(parts.path, (404, b"Not Found"))
            try:
                claims = jwt.decode(headers.get("x-slurm-user-token", ""), fake.key, ["HS256"])
                if claims["sun"] != headers.get("x-slurm-user-name"):
                    raise jwt.InvalidTokenError("user mismatch")
            except jwt.InvalidTokenError:
                status, body = 200, (SLURM / "restd/associations-bad-token.json").read_bytes()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def restd_manager(url: str, web: dict[str, Any] | None = None, **extra: Any) -> SlurmManager:
    cluster = ClusterConfig.model_validate(
        {"id": "c1", "manager": "slurm", "web": {"url": url, **(web or {})},
         "extra_config": {"source": "slurmrestd", **extra}}
    )  # fmt: skip
    return SlurmManager(cluster)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwt_hs256.key"
    path.write_bytes(KEY)
    return path


def test_fetch_units_with_a_minted_token(restd: FakeRestd, key_file: Path) -> None:
    restd.answer("/slurmdb/v0.0.38/jobs", 200, load("restd/jobs-odd.json"))
    manager = restd_manager(restd.url, jwt_key_file=str(key_file), user_name="ceems")
    units = manager.fetch_units(ODD_START, ODD_END)
    assert sorted(u.uuid for u in units) == ["200", "201", "203", "208"]
    ((path, query, headers),) = restd.requests
    assert path == "/slurmdb/v0.0.38/jobs"
    assert query["start_time"][0].startswith("now-") and query["end_time"][0].startswith("now-")
    assert headers["x-slurm-user-name"] == "ceems"
    assert "authorization" not in headers
    claims = jwt.decode(headers["x-slurm-user-token"], restd.key, ["HS256"])
    assert claims["sun"] == "ceems"
    assert claims["exp"] - claims["iat"] == 300


def test_fetch_users_projects(restd: FakeRestd, key_file: Path) -> None:
    restd.answer("/slurmdb/v0.0.38/associations", 200, load("restd/associations-22.05.json"))
    manager = restd_manager(restd.url, jwt_key_file=str(key_file), cluster_name="testcluster")
    users, projects = manager.fetch_users_projects(REAL_END)
    assert [(u.name, u.projects) for u in users] == [
        ("alice", ("research",)), ("bob", ("research",)), ("carol", ("physics",)),
    ]  # fmt: skip
    assert [(p.name, p.users) for p in projects] == [
        ("physics", ("carol",)), ("research", ("alice", "bob")),
    ]  # fmt: skip
    assert restd.requests[0][1] == {"cluster": ["testcluster"]}


def test_token_from_web_authorization(restd: FakeRestd) -> None:
    token = jwt.encode({"iat": 0, "exp": 2**40, "sun": "slurm"}, restd.key, algorithm="HS256")
    restd.answer("/slurmdb/v0.0.38/jobs", 200, load("restd/jobs-nothing-found.json"))
    manager = restd_manager(restd.url, web={"authorization": {"credentials": token}})
    assert manager.fetch_units(ODD_START, ODD_END) == []
    assert restd.requests[0][2]["x-slurm-user-token"] == token


def test_token_file_is_read_on_every_fetch(restd: FakeRestd, tmp_path: Path) -> None:
    restd.answer("/slurmdb/v0.0.38/jobs", 200, load("restd/jobs-nothing-found.json"))
    token_file = tmp_path / "token"
    manager = restd_manager(restd.url, restd={"token_file": str(token_file)})
    sent = []
    for n in range(2):
        token = jwt.encode({"iat": n, "exp": 2**40, "sun": "slurm"}, restd.key, algorithm="HS256")
        token_file.write_text(token + "\n")
        manager.fetch_units(ODD_START, ODD_END)
        sent.append(token)
    assert [r[2]["x-slurm-user-token"] for r in restd.requests] == sent


def test_minted_token_is_reused_then_replaced_before_expiry(key_file: Path) -> None:
    now = [1_000_000.0]
    tokens = TokenSource("c1", "slurm", jwt_key_file=str(key_file), lifetime_s=400,
                         clock=lambda: now[0])  # fmt: skip
    first = tokens.current()
    now[0] += 299  # more than a quarter of its life left
    assert tokens.current() == first
    now[0] += 2  # less than a quarter left
    second = tokens.current()
    assert second != first
    assert jwt.decode(second, key_file.read_bytes(), ["HS256"], options={"verify_exp": False})[
        "iat"
    ] == int(now[0])


def test_refused_token_is_an_error_despite_http_200(restd: FakeRestd, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(b"w" * 32)
    restd.answer("/slurmdb/v0.0.38/jobs", 200, load("restd/jobs-odd.json"))
    with pytest.raises(ManagerError) as caught:
        restd_manager(restd.url, jwt_key_file=str(wrong)).fetch_units(ODD_START, ODD_END)
    assert str(caught.value) == (
        f"cluster 'c1': GET {restd.url}/slurmdb/v0.0.38/jobs: HTTP 200 with errors: "
        "Protocol authentication error (error 1007, slurmdb_associations_get)"
    )


def test_http_500_names_endpoint_status_and_error(restd: FakeRestd, key_file: Path) -> None:
    restd.answer("/slurmdb/v0.0.38/jobs", 500, load("restd/jobs-bad-time.json"))
    with pytest.raises(ManagerError, match=r"GET http://.*/slurmdb/v0.0.38/jobs: HTTP 500: "
                       r"Unable to parse time format \(error 9000, start_time\)"):  # fmt: skip
        restd_manager(restd.url, jwt_key_file=str(key_file)).fetch_units(ODD_START, ODD_END)


def test_http_400_with_empty_body(restd: FakeRestd, key_file: Path) -> None:
    restd.answer("/slurmdb/v0.0.38/associations", 400, b"")
    with pytest.raises(ManagerError, match=r"associations: HTTP 400: \(empty body\)"):
        restd_manager(restd.url, jwt_key_file=str(key_file)).fetch_users_projects(REAL_END)


def test_answer_that_is_not_json(restd: FakeRestd, key_file: Path) -> None:
    restd.answer("/slurmdb/v0.0.38/jobs", 200, b"<html>proxy error</html>")
    with pytest.raises(ManagerError, match=r"jobs: HTTP 200 but not a JSON object"):
        restd_manager(restd.url, jwt_key_file=str(key_file)).fetch_units(ODD_START, ODD_END)


def test_answer_without_jobs(restd: FakeRestd, key_file: Path) -> None:
    restd.answer("/slurmdb/v0.0.38/jobs", 200, {"meta": {}, "errors": []})
    with pytest.raises(ManagerError, match=r"/jobs: no 'jobs' list in the answer"):
        restd_manager(restd.url, jwt_key_file=str(key_file)).fetch_units(ODD_START, ODD_END)


def test_unreachable_slurmrestd(key_file: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ManagerError, match=rf"GET {url}/slurmdb/v0.0.38/jobs: ConnectError"):
        restd_manager(url, jwt_key_file=str(key_file)).fetch_units(ODD_START, ODD_END)


def test_unreadable_key_file(tmp_path: Path) -> None:
    manager = restd_manager("http://127.0.0.1:1", jwt_key_file=str(tmp_path / "missing.key"))
    with pytest.raises(ManagerError, match=r"cannot read slurmrestd JWT key file .*missing.key"):
        manager.fetch_units(ODD_START, ODD_END)


def test_restd_section_selects_the_source() -> None:
    cluster = ClusterConfig.model_validate(
        {"id": "c1", "manager": "slurm", "web": {"url": "http://x"},
         "extra_config": {"restd": {"token": "t"}}}
    )  # fmt: skip
    manager = SlurmManager(cluster)
    assert manager.options.source == "slurmrestd"
    assert manager.options.restd.token == "t"


@pytest.mark.parametrize(
    ("web", "extra", "message"),
    [
        ({}, {"token": "t"}, r"slurmrestd needs web.url"),
        ({"url": "http://x"}, {}, r"slurmrestd needs a token"),
    ],
)
def test_restd_config_errors(web: dict[str, Any], extra: dict[str, Any], message: str) -> None:
    cluster = ClusterConfig.model_validate(
        {"id": "c1", "manager": "slurm", "web": web,
         "extra_config": {"source": "slurmrestd", **extra}}
    )  # fmt: skip
    with pytest.raises(ManagerError, match=rf"^cluster 'c1': {message}"):
        SlurmManager(cluster)


def test_fetch_units_by_id_asks_jobs_with_a_step_list(restd: FakeRestd, key_file: Path) -> None:
    restd.answer("/slurmdb/v0.0.38/jobs", 200, load("restd/jobs-22.05.json"))
    manager = restd_manager(restd.url, jwt_key_file=str(key_file), cluster_name="testcluster")
    records = manager.fetch_units_by_id(["5", "4", "2", "1", "x-1"])
    assert sorted(u.uuid for u in records) == ["1", "2", "4", "5"]
    assert all(u.total_time_seconds == {} for u in records)
    ((path, query, _headers),) = restd.requests
    assert (path, query) == (
        "/slurmdb/v0.0.38/jobs", {"step": ["1,2,4,5"], "cluster": ["testcluster"]}
    )  # fmt: skip


def test_fetch_units_by_id_in_batches(restd: FakeRestd, key_file: Path) -> None:
    restd.answer("/slurmdb/v0.0.38/jobs", 200, load("restd/jobs-nothing-found.json"))
    manager = restd_manager(restd.url, jwt_key_file=str(key_file))
    assert manager.fetch_units_by_id([str(n) for n in range(1, 251)]) == []
    sizes = [len(query["step"][0].split(",")) for _, query, _ in restd.requests]
    assert sizes == [100, 100, 50]


def test_fetch_units_by_id_failure_is_a_manager_error(restd: FakeRestd, key_file: Path) -> None:
    restd.answer("/slurmdb/v0.0.38/jobs", 500, load("restd/jobs-bad-time.json"))
    with pytest.raises(ManagerError, match=r"/slurmdb/v0.0.38/jobs: HTTP 500"):
        restd_manager(restd.url, jwt_key_file=str(key_file)).fetch_units_by_id(["1"])
    restd.answer("/slurmdb/v0.0.38/jobs", 200, {"meta": {}, "errors": []})
    with pytest.raises(ManagerError, match=r"/jobs: no 'jobs' list in the answer"):
        restd_manager(restd.url, jwt_key_file=str(key_file)).fetch_units_by_id(["1"])
