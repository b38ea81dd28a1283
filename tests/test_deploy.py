"""Examples in deploy/ are loaded, so they never rot."""

from __future__ import annotations

import base64
import configparser
import shlex

import pytest

from ceems.common.webconfig import BasicAuth, parse_web_config
from ceems.exporter.cli import build_parser
from ceems.exporter.registry import load_factories
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def test_example_web_config_is_valid_and_its_password_works() -> None:
    path = DEPLOY / "exporter" / "web-config.yml"
    config = parse_web_config(path.read_text(), path.parent)
    assert config.tls is not None and config.tls.cert_file == path.parent / "ceems.crt"
    header = "Basic " + base64.b64encode(b"prometheus:change-me").decode()
    assert BasicAuth(config.basic_auth_users).check(header)


def test_systemd_unit_flags_parse() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read(DEPLOY / "systemd" / "ceems_exporter.service")
    argv = shlex.split(unit["Service"]["ExecStart"].replace("\\\n", " "))
    assert argv[0].endswith("ceems_exporter")
    options = build_parser(load_factories()).parse_args(argv[1:])
    assert options.collector_ipmi_dcmi is True
    assert options.web_config_file == "/etc/ceems/web-config.yml"


def test_api_server_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from ceems.api.config import ApiServerConfig
    from ceems.common.config import load_config

    monkeypatch.setenv("GRAFANA_PASSWORD", "secret")
    config = load_config(
        DEPLOY / "api-server" / "config.yml", ApiServerConfig, expand_env_vars=True
    )
    assert config.clusters[0].updaters == ["tsdb"]
    assert config.ceems_api_server.admin.grafana.web().basic_auth is not None


def test_cacct_example_config_is_valid() -> None:
    from ceems.cli.cacct import CacctConfig
    from ceems.common.config import load_config

    config = load_config(DEPLOY / "cacct" / "cacct.yml", CacctConfig)
    assert config.cluster_id == "hpc" and config.tsdb is not None


def test_lb_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from ceems.common.config import load_config
    from ceems.lb.config import LbConfig, Strategy

    monkeypatch.setenv("PROMETHEUS_PASSWORD", "secret")
    config = load_config(DEPLOY / "ceems-lb" / "config.yml", LbConfig, expand_env_vars=True)
    assert config.ceems_lb.strategy is Strategy.LEAST_CONNECTION
    hpc = config.ceems_lb.backends[0]
    assert len(hpc.tsdb) == 2 and hpc.tsdb[0].web.basic_auth is not None
    assert hpc.tsdb[0].web.basic_auth.password == "secret"
    assert config.ceems_api_server.data is not None
