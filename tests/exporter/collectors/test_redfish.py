"""The redfish collector: config file, Power parsing, and a real client against a fake BMC."""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from ceems.exporter.collector import CollectorError, NoDataError, NodeContext
from ceems.exporter.collectors.redfish import (
    FACTORY,
    PowerStats,
    RedfishCollector,
    RedfishConfig,
    RedfishConfigError,
    RedfishPowerError,
    chassis_label,
    expand_env,
    load_redfish_config,
    parse_power,
    parse_redfish_config,
)
from ceems.sim.redfish import FakeChassis, FakeRedfishServer, PowerControlReading, PowerWindow
from tests.certs import self_signed
from tests.conftest import FIXTURES

REDFISH = FIXTURES / "redfish"
USER, PASSWORD = "monitor", "s3cret-Pa55"


# --- Power resources -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("power_dell_two_controls.json", PowerStats(339.5, 235, 542, 321.5)),
        ("power_hpe_ilo.json", PowerStats(331, 296, 377, 318)),
        ("power_null_readings.json", PowerStats(142, 0, 0, 0)),
    ],
)
def test_power_is_summed_over_power_controls(fixture: str, expected: PowerStats) -> None:
    assert parse_power(json.loads((REDFISH / fixture).read_text())) == expected


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (
            {"PowerControl": [{"PowerConsumedWatts": "{{power_consumption}}"}]},
            r"PowerControl\[0\]\.PowerConsumedWatts: expected a number",
        ),
        ({"PowerControl": [{"PowerConsumedWatts": True}]}, "expected a number"),
        ({"PowerControl": [{"PowerMetrics": [1]}]}, r"PowerControl\[0\]\.PowerMetrics"),
        ({"PowerControl": {"PowerConsumedWatts": 1}}, "PowerControl: expected a list"),
    ],
)
def test_bad_power_values_are_refused(doc: dict[str, Any], match: str) -> None:
    with pytest.raises(RedfishPowerError, match=match):
        parse_power(doc)


def test_string_watts_fixture_is_refused() -> None:
    with pytest.raises(RedfishPowerError, match="PowerConsumedWatts"):
        parse_power(json.loads((REDFISH / "power_string_watts.json").read_text()))


@pytest.mark.parametrize(
    ("chassis_id", "label"),
    [("System.Embedded.1", "System_Embedded_1"), ("Chassis-1", "Chassis_1"), ("1", "1")],
)
def test_chassis_label_is_sanitised_like_ceems(chassis_id: str, label: str) -> None:
    assert chassis_label(chassis_id) == label


# --- Config file -----------------------------------------------------------------------------


def test_every_key_of_the_sample_config() -> None:
    config = parse_redfish_config((REDFISH / "config.yml").read_text(), "node7", {}, REDFISH)
    assert config == RedfishConfig(
        protocol="https",
        hostname="node7-bmc",
        port=8443,
        username=USER,
        password=PASSWORD,
        external_url="http://redfish-proxy.mgmt:5000",
        use_session_token=False,
        timeout_s=2.5,
        insecure_skip_verify=True,
        ca_file=REDFISH / "bmc-ca.pem",
    )
    assert config.bmc_url == "https://node7-bmc:8443"
    assert config.endpoint == "http://redfish-proxy.mgmt:5000"


def test_defaults_follow_ceems() -> None:
    text = "redfish_web_config: {protocol: https, hostname: bmc1, username: u, password: p}"
    config = parse_redfish_config(text, "n", {}, Path())
    assert (config.port, config.timeout_s, config.use_session_token) == (443, 5.0, True)
    assert not config.insecure_skip_verify
    assert config.endpoint == "https://bmc1:443"


def test_current_ceems_section_name_is_accepted() -> None:
    text = "redfish_collector: {protocol: http, hostname: bmc1, port: 80, username: u, password: p}"
    assert parse_redfish_config(text, "n", {}, Path()).bmc_url == "http://bmc1:80"


def test_environment_overrides_credentials() -> None:
    text = "redfish_web_config: {protocol: http, hostname: bmc1, username: u, password: p}"
    env = {"REDFISH_WEB_USERNAME": "env-user", "REDFISH_WEB_PASSWORD": "env-pass"}
    config = parse_redfish_config(text, "n", env, Path())
    assert (config.username, config.password) == ("env-user", "env-pass")


VALID = {"protocol": "http", "hostname": "bmc1", "username": "u", "password": "p"}


def web(**keys: Any) -> str:
    """A config file text with `keys` replacing or (value None) removing valid ones."""
    import yaml

    merged = {k: v for k, v in {**VALID, **keys}.items() if v is not None}
    return yaml.safe_dump({"redfish_web_config": merged})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "redfish_web_config: required section is missing"),
        ("redfish: {}", "unknown top-level keys redfish"),
        ("redfish_web_config: [1, 2]", "redfish_web_config: expected a mapping, got list"),
        (web(hostname=None), "redfish_web_config.hostname: required"),
        (web(hostname="https://bmc1/"), "redfish_web_config.hostname: required, a host name"),
        (web(hostname="bmc1:443"), "redfish_web_config.hostname: required, a host name"),
        (web(protocol=None), "redfish_web_config.protocol: expected http or https, got ''"),
        (web(protocol="ftp"), "redfish_web_config.protocol: expected http or https, got 'ftp'"),
        (web(username=None), r"redfish_web_config.username: required \(or set REDFISH_WEB_USER"),
        (web(password=None), "redfish_web_config.password: required"),
        (web(port="443"), "redfish_web_config.port: expected an integer, got '443'"),
        (web(port=True), "redfish_web_config.port: expected an integer, got True"),
        (web(port=70000), "redfish_web_config.port: expected 1 to 65535, got 70000"),
        (web(timeout=-1), "redfish_web_config.timeout: milliseconds, 0 or more"),
        (web(timeout=2.5), "redfish_web_config.timeout: expected an integer, got 2.5"),
        (web(use_session_token="yes"), "use_session_token: expected true or false, got 'yes'"),
        (web(insecure_skip_verify=1), "insecure_skip_verify: expected true or false"),
        (web(hostname=1234), "redfish_web_config.hostname: expected a string, got 1234"),
        (web(external_url="proxy:5000"), "redfish_web_config.external_url: expected an http"),
        (web(host="bmc1"), "redfish_web_config: unknown keys host; valid keys are"),
        (web(tls_config={"ca": "x"}), "redfish_web_config.tls_config: unknown keys ca"),
        (web(tls_config=[]), "redfish_web_config.tls_config: expected a mapping"),
        ("redfish_web_config: {protocol: http\n", "not valid YAML"),
    ],
)
def test_config_errors_name_the_key(text: str, match: str) -> None:
    with pytest.raises(RedfishConfigError, match=match):
        parse_redfish_config(text, "n", {}, Path())


def test_both_section_names_are_refused() -> None:
    text = f"{web()}redfish_collector: {{protocol: http}}\n"
    with pytest.raises(RedfishConfigError, match="not both"):
        parse_redfish_config(text, "n", {}, Path())


def test_password_is_not_in_the_config_repr() -> None:
    config = parse_redfish_config(web(password="hunter2"), "n", {}, Path())
    assert "hunter2" not in repr(config)


def test_ipv6_bmc_address_is_bracketed() -> None:
    assert parse_redfish_config(web(hostname="fd00::5"), "n", {}, Path()).bmc_url == (
        "http://[fd00::5]:80"
    )


def test_password_value_never_appears_in_errors() -> None:
    with pytest.raises(RedfishConfigError) as caught:
        parse_redfish_config(web(password=["hunter2"]), "n", {}, Path())
    assert "password: expected a string" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_env_expansion() -> None:
    env = {"BMC_USER": "alice", "BMC_PASS": "pw"}
    assert expand_env("u: ${BMC_USER}, p: $BMC_PASS, cost: $$5", env) == "u: alice, p: pw, cost: $5"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "redfish.yml"
    path.write_text(textwrap.dedent(text))
    return path


def test_unset_env_var_is_an_error_naming_it_and_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "redfish_web_config: {password: '${BMC_PASS}'}")
    with pytest.raises(RedfishConfigError, match=rf"{path}: environment variable BMC_PASS is"):
        load_redfish_config(path, "n", True, {})


def test_references_stay_literal_without_expansion(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "redfish_web_config: {protocol: http, hostname: bmc1, username: u, password: '${X}'}",
    )
    assert load_redfish_config(path, "n", False, {}).password == "${X}"
    assert load_redfish_config(path, "n", True, {"X": "from-env"}).password == "from-env"


def test_missing_ca_file_is_a_load_error(tmp_path: Path) -> None:
    path = write_config(tmp_path, web(tls_config={"ca_file": "nope.pem"}))
    with pytest.raises(RedfishConfigError, match=r"tls_config.ca_file: no such file .*nope.pem"):
        load_redfish_config(path, "n", False, {})


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(RedfishConfigError, match="cannot read"):
        load_redfish_config(tmp_path / "missing.yml", "n", False, {})


# --- Flags -----------------------------------------------------------------------------------


def parse_flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    FACTORY.add_flags(parser.add_argument_group("redfish"))
    return parser.parse_args(argv)


def test_flag_defaults() -> None:
    options = parse_flags()
    assert options.redfish_interval == 10.0
    assert options.redfish_config_expand_env_vars is False
    assert options.redfish_config_file == ""


def test_missing_config_flag_is_a_build_error() -> None:
    with pytest.raises(CollectorError, match=r"--collector\.redfish\.config\.file is required"):
        FACTORY.build(NodeContext(hostname="n1"), parse_flags())


def test_old_and_new_flag_naming_different_files_is_an_error() -> None:
    options = parse_flags(
        "--collector.redfish.config.file=a.yml", "--collector.redfish.web-config=b.yml"
    )
    with pytest.raises(CollectorError, match="name different files"):
        FACTORY.build(NodeContext(hostname="n1"), options)


# --- Against the fake BMC --------------------------------------------------------------------


@pytest.fixture
def client_lib() -> None:
    pytest.importorskip("redfish")


@pytest.fixture
def no_credential_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDFISH_WEB_USERNAME", raising=False)
    monkeypatch.delenv("REDFISH_WEB_PASSWORD", raising=False)


def two_chassis() -> list[FakeChassis]:
    return [
        FakeChassis(
            "System.Embedded.1",
            lambda: [PowerControlReading(412, 230, 655, 398), PowerControlReading(37, 21, 64, 33)],
        ),
        FakeChassis(
            "Blade-7",
            lambda: [
                PowerControlReading(1180, 640, 1710, 1225),
                PowerControlReading(95, None, None, None),
            ],
        ),
        FakeChassis("Enclosure.Internal.0-1"),  # a backplane: no Power resource
    ]


@pytest.fixture
def bmc(client_lib: None, no_credential_env: None) -> Iterator[FakeRedfishServer]:
    server = FakeRedfishServer(two_chassis(), username=USER, password=PASSWORD).start()
    yield server
    server.stop()


def config_text(server: FakeRedfishServer, **keys: Any) -> str:
    import yaml

    scheme, _, rest = server.url.partition("://")
    base = {
        "protocol": scheme,
        "hostname": "127.0.0.1",
        "port": int(rest.rsplit(":", 1)[1]),
        "username": USER,
        "password": PASSWORD,
        "timeout": 1000,
    }
    return yaml.safe_dump({"redfish_web_config": {**base, **keys}})


def source_for(server: FakeRedfishServer, **keys: Any) -> Any:
    from ceems.exporter.collectors.redfish_client import RedfishPowerSource

    return RedfishPowerSource(parse_redfish_config(config_text(server, **keys), "n", {}, Path()))


def build(server: FakeRedfishServer, tmp_path: Path, *flags: str, **keys: Any) -> RedfishCollector:
    path = write_config(tmp_path, config_text(server, **keys))
    options = parse_flags(f"--collector.redfish.config.file={path}", *flags)
    # A long interval: tests drive sampling with sample_now().
    options.redfish_interval = 60.0
    return FACTORY.build(NodeContext(hostname="n1"), options)


def sample(collector: RedfishCollector, name: str, chassis: str) -> float | None:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry.get_sample_value(name, {"hostname": "n1", "chassis": chassis})


def no_data_message(collector: RedfishCollector) -> str:
    try:
        list(collector.collect())
    except NoDataError as err:
        return str(err)
    return ""


def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_values_and_labels_per_chassis(bmc: FakeRedfishServer, tmp_path: Path) -> None:
    collector = build(bmc, tmp_path)
    try:
        wait_for(lambda: collector.sampler.age_s() is not None)
        registry = CollectorRegistry()
        registry.register(collector)
        got = {
            (s.name, s.labels["chassis"]): s.value
            for family in registry.collect()
            for s in family.samples
        }
        assert got == {
            ("ceems_redfish_current_watts", "System_Embedded_1"): 449,
            ("ceems_redfish_min_watts", "System_Embedded_1"): 251,
            ("ceems_redfish_max_watts", "System_Embedded_1"): 719,
            ("ceems_redfish_avg_watts", "System_Embedded_1"): 431,
            ("ceems_redfish_current_watts", "Blade_7"): 1275,
            ("ceems_redfish_min_watts", "Blade_7"): 640,
            ("ceems_redfish_max_watts", "Blade_7"): 1710,
            ("ceems_redfish_avg_watts", "Blade_7"): 1225,
        }
    finally:
        collector.close()


def test_exposition_help_and_labels(bmc: FakeRedfishServer, tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    collector = build(bmc, tmp_path)
    try:
        collector.sampler.sample_now()
        registry = CollectorRegistry()
        registry.register(collector)
        text = generate_latest(registry).decode()
        assert "# HELP ceems_redfish_current_watts Current Power consumption in watts\n" in text
        assert "# HELP ceems_redfish_min_watts Minimum Power consumption in watts\n" in text
        assert "# TYPE ceems_redfish_avg_watts gauge\n" in text
        assert 'ceems_redfish_max_watts{chassis="Blade_7",hostname="n1"} 1710.0\n' in text
    finally:
        collector.close()


def test_zero_readings_are_not_exported(
    client_lib: None, no_credential_env: None, tmp_path: Path
) -> None:
    # A BMC reports 0 for a statistic it does not keep; CEEMS drops such values.
    server = FakeRedfishServer(
        [FakeChassis("1", lambda: [PowerControlReading(250, 0, 0, 0)])], USER, PASSWORD
    ).start()
    collector = build(server, tmp_path)
    try:
        collector.sampler.sample_now()
        assert sample(collector, "ceems_redfish_current_watts", "1") == 250
        assert sample(collector, "ceems_redfish_min_watts", "1") is None
    finally:
        collector.close()
        server.stop()


def test_one_session_is_reused(bmc: FakeRedfishServer) -> None:
    source = source_for(bmc)
    for _ in range(3):
        assert source()["System_Embedded_1"].current == 449
    assert bmc.logins == 1
    power = [r for r in bmc.requests if r.path.endswith("/Power")]
    assert len(power) == 6
    assert all("x-auth-token" in r.headers and "authorization" not in r.headers for r in power)
    source.close()


def test_chassis_are_discovered_once(bmc: FakeRedfishServer) -> None:
    source = source_for(bmc)
    source()
    source()
    assert [r.path for r in bmc.requests].count("/redfish/v1/Chassis") == 1
    source.close()


def test_logs_in_again_when_the_bmc_drops_the_session(bmc: FakeRedfishServer) -> None:
    source = source_for(bmc)
    source()
    bmc.drop_sessions()
    assert source()["Blade_7"].current == 1275
    assert bmc.logins == 2
    source.close()


def test_close_logs_out(bmc: FakeRedfishServer) -> None:
    source = source_for(bmc)
    source()
    assert bmc.active_sessions() == 1
    source.close()
    assert (bmc.logouts, bmc.active_sessions()) == (1, 0)


def test_no_login_after_close(bmc: FakeRedfishServer) -> None:
    from ceems.exporter.collectors.redfish_client import RedfishError

    source = source_for(bmc)
    source.close()
    with pytest.raises(RedfishError, match="closed"):
        source()
    assert bmc.logins == 0


def test_simulated_node_power_feeds_the_bmc(client_lib: None, no_credential_env: None) -> None:
    watts = iter([300.4, 520.0, 410.0])
    server = FakeRedfishServer(
        [FakeChassis("System.Embedded.1", PowerWindow(lambda: next(watts)))], USER, PASSWORD
    ).start()
    try:
        source = source_for(server)
        readings = [source()["System_Embedded_1"] for _ in range(3)]
        assert readings[-1] == PowerStats(current=410, minimum=300, maximum=520, average=410)
        assert readings[0].current == 300
        source.close()
    finally:
        server.stop()


def test_basic_auth_sends_credentials_and_opens_no_session(bmc: FakeRedfishServer) -> None:
    source = source_for(bmc, use_session_token=False)
    assert source()["System_Embedded_1"].average == 431
    assert bmc.logins == 0
    assert bmc.requests[-1].headers["authorization"].startswith("Basic ")
    source.close()


def test_wrong_password_is_reported_not_raised(bmc: FakeRedfishServer, tmp_path: Path) -> None:
    from ceems.exporter.collectors.redfish_client import RedfishError

    collector = build(bmc, tmp_path, password="wrong")
    try:
        wait_for(lambda: "credentials refused" in no_data_message(collector))
        with pytest.raises(NoDataError, match="credentials refused for user 'monitor'"):
            list(collector.collect())
        # Backs off instead of hammering the BMC, which could lock the account.
        with pytest.raises(RedfishError, match="login refused earlier"):
            collector.source()
        assert bmc.failed_logins == 1
    finally:
        collector.close()


def test_hung_bmc_times_out(bmc: FakeRedfishServer) -> None:
    from ceems.exporter.collectors.redfish_client import RedfishError

    source = source_for(bmc, timeout=300)
    bmc.delay(5, "/redfish/v1/Chassis")
    started = time.monotonic()
    with pytest.raises(RedfishError, match=r"(?i)timed out"):
        source()
    assert time.monotonic() - started < 2.5
    source.close()


def test_collector_serves_last_good_value_while_bmc_hangs(
    bmc: FakeRedfishServer, tmp_path: Path
) -> None:
    collector = build(bmc, tmp_path, timeout=200)
    try:
        wait_for(lambda: collector.sampler.age_s() is not None)
        bmc.delay(5, "/redfish/v1/Chassis")
        collector.sampler.sample_now()  # fails after the timeout
        assert sample(collector, "ceems_redfish_current_watts", "Blade_7") == 1275
    finally:
        collector.close()


def test_garbage_json_is_an_error(bmc: FakeRedfishServer) -> None:
    from ceems.exporter.collectors.redfish_client import RedfishError

    source = source_for(bmc)
    bmc.override("/redfish/v1/Chassis/Blade-7/Power", 200, b'{"PowerControl": [')
    with pytest.raises(RedfishError, match="Blade-7/Power: response is not JSON"):
        source()
    source.close()


def test_http_error_rediscovers_chassis_next_time(bmc: FakeRedfishServer) -> None:
    from ceems.exporter.collectors.redfish_client import RedfishError

    source = source_for(bmc)
    source()
    bmc.override("/redfish/v1/Chassis/Blade-7/Power", 500, b"{}")
    with pytest.raises(RedfishError, match="HTTP 500"):
        source()
    del bmc._overrides["/redfish/v1/Chassis/Blade-7/Power"]
    assert source()["Blade_7"].current == 1275
    assert [r.path for r in bmc.requests].count("/redfish/v1/Chassis") == 2
    assert bmc.logouts == 1  # the failed client logged out before a new login
    source.close()


def test_chassis_without_power_is_skipped(bmc: FakeRedfishServer) -> None:
    source = source_for(bmc)
    assert set(source()) == {"System_Embedded_1", "Blade_7"}
    source.close()


def test_no_chassis_with_power_is_no_data(
    client_lib: None, no_credential_env: None, tmp_path: Path
) -> None:
    server = FakeRedfishServer([FakeChassis("Enclosure.1")], USER, PASSWORD).start()
    collector = build(server, tmp_path)
    try:
        collector.sampler.sample_now()
        with pytest.raises(NoDataError, match="no chassis has a Power resource"):
            list(collector.collect())
    finally:
        collector.close()
        server.stop()


def test_old_flag_name_still_works(bmc: FakeRedfishServer, tmp_path: Path) -> None:
    path = write_config(tmp_path, config_text(bmc))
    options = parse_flags(f"--collector.redfish.web-config={path}")
    options.redfish_interval = 60.0
    collector = FACTORY.build(NodeContext(hostname="n1"), options)
    try:
        collector.sampler.sample_now()
        assert sample(collector, "ceems_redfish_avg_watts", "System_Embedded_1") == 431
    finally:
        collector.close()


def test_expand_env_vars_flag_reads_credentials_from_env(
    bmc: FakeRedfishServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BMC_SECRET", PASSWORD)
    collector = build(
        bmc, tmp_path, "--collector.redfish.config.file.expand-env-vars", password="${BMC_SECRET}"
    )
    try:
        collector.sampler.sample_now()
        assert sample(collector, "ceems_redfish_min_watts", "Blade_7") == 640
    finally:
        collector.close()


def test_proxy_gets_the_bmc_url_header(bmc: FakeRedfishServer) -> None:
    source = source_for(bmc, hostname="node7-bmc", port=443, protocol="https", external_url=bmc.url)
    source()
    assert {r.headers.get("x-redfish-url") for r in bmc.requests} == {"https://node7-bmc:443"}
    source.close()


# --- TLS -------------------------------------------------------------------------------------


@pytest.fixture
def tls_bmc(
    client_lib: None, no_credential_env: None, tmp_path: Path
) -> Iterator[tuple[FakeRedfishServer, Path]]:
    cert_file, key_file = self_signed(tmp_path, "fake-bmc")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = FakeRedfishServer(two_chassis(), USER, PASSWORD, tls=context).start()
    yield server, cert_file
    server.stop()


def test_self_signed_bmc_is_refused_by_default(tls_bmc: tuple[FakeRedfishServer, Path]) -> None:
    from ceems.exporter.collectors.redfish_client import RedfishError

    server, _ = tls_bmc
    source = source_for(server)
    with pytest.raises(RedfishError, match="CERTIFICATE_VERIFY_FAILED"):
        source()
    assert server.logins == 0


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")
def test_insecure_skip_verify_accepts_self_signed(tls_bmc: tuple[FakeRedfishServer, Path]) -> None:
    server, _ = tls_bmc
    source = source_for(server, insecure_skip_verify=True)
    assert source()["Blade_7"].maximum == 1710
    source.close()


def test_tls_config_ca_file_verifies_self_signed(
    tls_bmc: tuple[FakeRedfishServer, Path],
) -> None:
    server, cert_file = tls_bmc
    source = source_for(server, tls_config={"ca_file": str(cert_file)})
    assert source()["System_Embedded_1"].current == 449
    source.close()


# --- Import weight ---------------------------------------------------------------------------


def test_importing_the_collector_loads_no_http_client() -> None:
    code = (
        "import sys, ceems.exporter.collectors.redfish\n"
        "print(sorted(m for m in ('redfish', 'requests', 'urllib3') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
