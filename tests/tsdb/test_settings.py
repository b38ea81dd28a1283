"""TSDB settings from /api/v1/status/config and /flags, with defaults for what is missing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from ceems.common.httpconfig import HttpClientConfig
from ceems.tsdb.client import TsdbClient
from ceems.tsdb.errors import TsdbError
from ceems.tsdb.settings import DEFAULT_QUERY_MAX_SAMPLES as MAX
from ceems.tsdb.settings import TsdbSettings, apply_config, apply_flags
from tests.conftest import FIXTURES, free_port

RECORDED = FIXTURES / "tsdb"


def replay(answers: dict[str, tuple[int, Path]]) -> httpx.MockTransport:
    """A transport answering each path with a recorded body and status."""

    def handle(request: httpx.Request) -> httpx.Response:
        status, body = answers.get(request.url.path, (404, RECORDED / "README.md"))
        kind = "application/json" if body.suffix == ".json" else "text/plain; charset=utf-8"
        return httpx.Response(status, content=body.read_bytes(), headers={"Content-Type": kind})

    return httpx.MockTransport(handle)


def client(transport: httpx.BaseTransport) -> TsdbClient:
    return TsdbClient(HttpClientConfig(url="http://tsdb.test:9090"), transport=transport)


def test_prometheus_answers_give_every_setting() -> None:
    transport = replay(
        {
            "/api/v1/status/config": (200, RECORDED / "prometheus-2.42-status-config.json"),
            "/api/v1/status/flags": (200, RECORDED / "prometheus-2.42-status-flags.json"),
        }
    )
    settings = client(transport).settings()
    assert settings == TsdbSettings(
        scrape_interval=timedelta(seconds=15),
        evaluation_interval=timedelta(seconds=30),
        retention=timedelta(days=30),
        query_max_samples=1_234_567,
        lookback_delta=timedelta(minutes=5),
        query_timeout=timedelta(minutes=2),
    )
    assert settings.rate_interval == timedelta(minutes=1)


def test_victoriametrics_answers_degrade_to_defaults() -> None:
    transport = replay(
        {
            "/api/v1/status/config": (200, RECORDED / "victoriametrics-1.79-status-config.json"),
            "/api/v1/status/flags": (400, RECORDED / "victoriametrics-1.79-status-flags.txt"),
        }
    )
    assert client(transport).settings() == TsdbSettings()


def test_unreachable_tsdb_raises_instead_of_defaulting() -> None:
    web = HttpClientConfig(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TsdbError, match="cannot reach") as caught:
        TsdbClient(web).settings()
    assert caught.value.status is None


@pytest.mark.parametrize(
    ("yaml_text", "scrape", "evaluation"),
    [
        ("global: {scrape_interval: 10s, evaluation_interval: 1m}", 10, 60),
        ("global: {scrape_interval: 1m30s}", 90, 60),
        ("scrape_configs: []", 60, 60),  # Prometheus' defaults: 1m and 1m
        ("", 60, 60),
        ("global: [", 60, 60),  # unparsable: defaults, logged
        ("global: {scrape_interval: soon}", 60, 60),
    ],
)
def test_apply_config(yaml_text: str, scrape: int, evaluation: int) -> None:
    settings = apply_config(TsdbSettings(), yaml_text)
    assert settings.scrape_interval == timedelta(seconds=scrape)
    assert settings.evaluation_interval == timedelta(seconds=evaluation)


@pytest.mark.parametrize(
    ("flags", "retention", "max_samples"),
    [
        ({"storage.tsdb.retention.time": "100y", "query.max-samples": "10"}, 100 * 365, 10),
        ({"storage.tsdb.retention.time": "0s", "storage.tsdb.retention": "7d"}, 7, MAX),
        # neither time nor size set: Prometheus keeps its 15 d default
        ({"storage.tsdb.retention.time": "0s", "storage.tsdb.retention.size": "0B"}, 15, MAX),
        # a size limit alone: time no longer limits retention
        ({"storage.tsdb.retention.time": "0s", "storage.tsdb.retention.size": "1GB"}, 0, MAX),
        ({"query.max-samples": "many"}, 15, MAX),
        ({}, 15, MAX),
    ],
)  # fmt: skip
def test_apply_flags(flags: dict[str, str], retention: int, max_samples: int) -> None:
    settings = apply_flags(TsdbSettings(), flags)
    assert settings.retention == timedelta(days=retention)
    assert settings.query_max_samples == max_samples
