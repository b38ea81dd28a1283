"""Building updaters from the `ceems.updaters` entry points."""

from __future__ import annotations

import pytest

from ceems.api.config import UpdaterConfig
from ceems.api.updaters.registry import UnknownUpdaterError, build_updaters
from ceems.api.updaters.tsdb import TsdbUpdater
from ceems.common.config import ConfigError
from ceems.common.httpconfig import HttpClientConfig

WEB = HttpClientConfig(url="http://127.0.0.1:9090")


def test_builds_one_updater_per_id() -> None:
    extra = {"cutoff_duration": "1m"}
    updaters = build_updaters(
        [
            UpdaterConfig(id="tsdb-0", updater="tsdb", web=WEB),
            UpdaterConfig(id="tsdb-1", updater="tsdb", web=WEB, extra_config=extra),
        ]
    )
    assert list(updaters) == ["tsdb-0", "tsdb-1"]
    assert all(isinstance(u, TsdbUpdater) for u in updaters.values())


def test_unknown_updater_names_id_updater_and_installed_ones() -> None:
    configs = [
        UpdaterConfig(id="tsdb-0", updater="tsdb", web=WEB),
        UpdaterConfig(id="influx-0", updater="influxdb", web=WEB),
    ]
    with pytest.raises(
        UnknownUpdaterError,
        match=r"updater 'influx-0': unknown updater 'influxdb' \(installed: tsdb\)",
    ):
        build_updaters(configs)


def test_duplicate_ids_are_refused() -> None:
    configs = [UpdaterConfig(id="t", updater="tsdb", web=WEB)] * 2
    with pytest.raises(ConfigError, match="duplicate id"):
        build_updaters(configs)


def test_no_updaters() -> None:
    assert build_updaters([]) == {}
