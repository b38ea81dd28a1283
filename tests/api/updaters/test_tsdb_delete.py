"""Deleting ignored units' series: what is asked of the TSDB, and a refusal that is only logged."""

from __future__ import annotations

import logging

import httpx
import pytest

from ceems.api.config import UpdaterConfig
from ceems.api.models import Unit
from ceems.api.updaters.tsdb import TsdbUpdater
from ceems.common.httpconfig import HttpClientConfig
from ceems.tsdb.client import TsdbClient
from tests.api.updaters.scenario import WINDOW, WINDOW_START_S

MS = 1000
UNITS = [
    Unit("c", "slurm", "short.1", started_at_ts=(WINDOW_START_S + 60) * MS,
         ended_at_ts=(WINDOW_START_S + 120) * MS),
    Unit("c", "slurm", "long", started_at_ts=(WINDOW_START_S - 3600) * MS,
         ended_at_ts=(WINDOW_START_S + 1800) * MS),
    Unit("c", "slurm", "running", started_at_ts=(WINDOW_START_S + 60) * MS),
]  # fmt: skip


class FakeTsdb:
    """Answers queries with nothing and refuses the admin API, as without --web.enable-admin-api."""

    def __init__(self) -> None:
        self.deletes: list[httpx.QueryParams] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/admin/tsdb/delete_series":
            self.deletes.append(httpx.QueryParams(request.content.decode()))
            body = {"status": "error", "errorType": "unavailable", "error": "admin APIs disabled"}
            return httpx.Response(500, json=body)
        if request.url.path == "/api/v1/query":
            data = {"resultType": "vector", "result": []}
            return httpx.Response(200, json={"status": "success", "data": data})
        return httpx.Response(404, text="404 page not found")


def test_refused_delete_is_logged_and_units_are_kept(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTsdb()
    config = UpdaterConfig(
        id="tsdb-0",
        updater="tsdb",
        web=HttpClientConfig(url="http://tsdb.test"),
        extra_config={"cutoff_duration": "5m", "delete_ignored": True},
    )
    updater = TsdbUpdater(
        config, client=TsdbClient(config.web, transport=httpx.MockTransport(fake))
    )
    with caplog.at_level(logging.ERROR):
        updated = updater.update(*WINDOW, UNITS)
    assert [u.ignore for u in updated] == [True, False, False]
    (delete,) = fake.deletes
    assert delete.get_list("match[]") == ['{uuid=~"short\\\\.1"}']
    # from cutoff_duration before the window to its end
    assert float(delete["start"]) == WINDOW_START_S - 300
    assert float(delete["end"]) == WINDOW[1].timestamp()
    (record,) = [r for r in caplog.records if r.name == "ceems.api.updaters.tsdb"]
    assert record.getMessage() == "cannot delete ignored units' series"
    assert "admin APIs disabled" in record.__dict__["err"]
