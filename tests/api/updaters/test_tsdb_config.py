"""TSDB updater construction: extra_config validation and query templates checked up front."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ceems.api.config import UpdaterConfig
from ceems.api.updaters.protocol import Updater
from ceems.api.updaters.queries import DEFAULT_QUERIES
from ceems.api.updaters.tsdb import TsdbUpdater
from ceems.common.config import ConfigError
from ceems.common.httpconfig import HttpClientConfig


def build(extra: dict[str, Any], url: str = "http://127.0.0.1:9090") -> TsdbUpdater:
    return TsdbUpdater(
        UpdaterConfig(
            id="tsdb-0", updater="tsdb", web=HttpClientConfig(url=url), extra_config=extra
        )
    )


def test_defaults() -> None:
    updater = build({})
    assert updater.config.cutoff_duration == timedelta(0)
    assert updater.config.delete_ignored is False
    assert updater.config.query_batch_size is None
    assert {q.metric for q in updater.queries} == set(DEFAULT_QUERIES)


def test_ceems_example_config_is_accepted() -> None:
    # the updaters section of CEEMS' pkg/api/testdata/config.yml (tsdb-0)
    updater = build(
        {
            "cutoff_duration": "0s",
            "query_batch_size": 1,
            "queries": {
                "avg_cpu_usage": {"global": 'avg_cpu_usage{uuid=~"{{.UUIDs}}"}'},
                "total_cpu_emissions_gms": {
                    "rte_total": 'total_cpu_emissions_gms{uuid=~"{{.UUIDs}}",provider="rte"}',
                    "emaps_total": 'total_cpu_emissions_gms{uuid=~"{{.UUIDs}}",provider="emaps"}',
                },
            },
        }
    )
    assert [q.key.source for q in updater.queries] == ["global", "rte_total", "emaps_total"]


def test_bad_placeholder_fails_at_construction() -> None:
    queries = {"avg_cpu_usage": {"global": "avg_over_time(x{uuid=~`{{.UUIDS}}`}[{{.Range}}])"}}
    with pytest.raises(ConfigError) as caught:
        build({"queries": queries})
    message = str(caught.value)
    assert "updater 'tsdb-0': extra_config.queries.avg_cpu_usage.global" in message
    assert "unknown placeholder {{.UUIDS}}" in message
    assert "UUIDs" in message  # the known ones are listed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"cutoff_duration": "5 minutes"}, "extra_config.cutoff_duration: .*invalid duration"),
        ({"cutoff_duration": "-5m"}, "extra_config.cutoff_duration"),
        ({"query_batch_size": 0}, "extra_config.query_batch_size: .*greater than 0"),
        ({"delete_ignored": "perhaps"}, "extra_config.delete_ignored"),
        ({"query_max_series": 50}, "extra_config.query_max_series: Extra inputs"),
        ({"queries": {"avg_cpu": {"q": "x"}}}, r"avg_cpu: unknown metric \(known: avg_cpu_usage"),
        ({"queries": {"avg_cpu_usage": {}}}, "queries.avg_cpu_usage: no queries"),
        ({"queries": {"avg_cpu_usage": {"global": "{{.Range"}}}, "unclosed"),
        ({"queries": {"avg_cpu_usage": {"{{.Node}}": "x"}}}, r"unknown placeholder \{\{.Node\}\}"),
        ({"queries": {"avg_cpu_usage": ["x"]}}, "extra_config.queries.avg_cpu_usage"),
    ],
)  # fmt: skip
def test_invalid_extra_config_names_the_key(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(extra)


def test_missing_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"updater 'tsdb-0': web\.url is empty"):
        build({}, url="")


def test_tsdb_updater_satisfies_the_updater_protocol() -> None:
    updater: Updater = build({})  # checked by mypy
    assert callable(updater.update)
