"""Config loading: env expansion, error messages with key paths, durations."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ceems.api.config import ApiServerConfig
from ceems.common.config import ConfigError, expand_env, load_config, parse_config
from ceems.common.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30), ("1h30m", 5400), ("7d", 604800), ("1y", 31536000), ("500ms", 0.5), ("0", 0)],
)
def test_durations(text: str, expected: float) -> None:
    assert parse_duration(text) == timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["", "5", "1x", "h1", "1h 30m", "-5m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h30m"
    assert parse_duration(format_duration(timedelta(days=9, seconds=7))) == timedelta(
        days=9, seconds=7
    )


def test_expand_env() -> None:
    env = {"USER_NAME": "ceems", "PW": "s3cret"}
    assert expand_env("${USER_NAME}:$PW and $$5", env) == "ceems:s3cret and $5"
    with pytest.raises(ConfigError, match="MISSING"):
        expand_env("${MISSING}", env)


def test_comments_are_not_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", "/srv/ceems")
    path = tmp_path / "c.yml"
    path.write_text("# url: ${NOT_SET}\nceems_api_server:\n  data:\n    path: ${DATA_DIR}\n")
    config = load_config(path, ApiServerConfig, expand_env_vars=True)
    assert config.ceems_api_server.data.path == "/srv/ceems"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ceems_api_server: {data: {pth: x}}", r"ceems_api_server\.data\.pth: unknown key"),
        ("clusters: [{id: c1}]", r"clusters\.0\.manager: Field required"),
        ("clusters: [{id: 'bad id', manager: slurm}]", r"clusters\.0\.id"),
        ("ceems_api_server: {data: {time_zone: Mars/Olympus}}", "unknown time zone"),
        ("ceems_api_server: {data: {update_interval: 0s}}", "positive"),
        ("ceems_api_server: {data: {update_from: '2026-01-01T00:00:00'}}", "UTC offset"),
        ("clusters: [{id: a, manager: slurm}, {id: a, manager: slurm}]", "duplicate id"),
        ("clusters: [{id: a, manager: slurm, updaters: [t]}]", "undefined updater"),
        ("[1, 2]", "mapping at the top level"),
        ("a: [", "not valid YAML"),
    ],
)
def test_invalid_api_config_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, ApiServerConfig)
