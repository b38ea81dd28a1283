"""Chassis power from the BMC's Redfish API, as ceems_redfish_{current,min,max,avg}_watts.

The config file is CEEMS' (`redfish_web_config:` section). Requests go to the BMC, or to
`external_url` (CEEMS' redfish_proxy) with the BMC's URL in an `X-Redfish-Url` header. A BMC
answers in hundreds of milliseconds to seconds and sometimes hangs, so requests run in a
sampler thread with a timeout and the scrape serves the last good reading. The Redfish client
library lives in `redfish_client`, imported only when the collector is built.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import yaml
from prometheus_client.core import GaugeMetricFamily

from ceems.exporter.collector import CollectorError, NoDataError, NodeContext
from ceems.exporter.sampler import BackgroundSampler

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

# CEEMS v0.6's section name first; later CEEMS calls it `redfish_collector` and reads both.
SECTIONS = ("redfish_web_config", "redfish_collector")
HOSTNAME_PLACEHOLDER = "{hostname}"
DEFAULT_TIMEOUT_MS = 5000
USERNAME_ENV = "REDFISH_WEB_USERNAME"
PASSWORD_ENV = "REDFISH_WEB_PASSWORD"
_KEYS = {
    "protocol",
    "hostname",
    "port",
    "username",
    "password",
    "external_url",
    "insecure_skip_verify",
    "use_session_token",
    "timeout",
    "tls_config",
}
_TLS_KEYS = {"insecure_skip_verify", "ca_file"}
_ENV_REF = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_LABEL_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


class RedfishConfigError(CollectorError):
    """The Redfish config file is unreadable or invalid; the message names the key."""


class RedfishPowerError(ValueError):
    """A Power resource holds a value that is not a number of watts."""


@dataclass(frozen=True, slots=True)
class RedfishConfig:
    """Where the BMC's Redfish service is and how to log in; timeout in seconds."""

    protocol: str
    hostname: str
    port: int
    username: str
    password: str = field(repr=False)
    external_url: str = ""
    use_session_token: bool = True
    timeout_s: float = DEFAULT_TIMEOUT_MS / 1000
    insecure_skip_verify: bool = False
    ca_file: Path | None = None

    @property
    def bmc_url(self) -> str:
        """The BMC's own URL, also sent to a proxy in the X-Redfish-Url header."""
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{self.protocol}://{host}:{self.port}"

    @property
    def endpoint(self) -> str:
        """Where requests go: the proxy when one is configured, else the BMC."""
        return self.external_url or self.bmc_url


def expand_env(text: str, environ: Mapping[str, str]) -> str:
    """Replace `${NAME}` and `$NAME` with their values and `$$` with `$`; unset is an error."""

    def value(match: re.Match[str]) -> str:
        if match[1]:
            return "$"
        name = match[2] or match[3]
        if name not in environ:
            raise RedfishConfigError(f"environment variable {name} is referenced but not set")
        return environ[name]

    return _ENV_REF.sub(value, text)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise RedfishConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _str(raw: Mapping[str, Any], key: str, where: str, *, secret: bool = False) -> str:
    value = raw.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        shown = "" if secret else f", got {value!r}"
        raise RedfishConfigError(f"{where}.{key}: expected a string{shown}")
    return value


def _bool(raw: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise RedfishConfigError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _int(raw: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise RedfishConfigError(f"{where}.{key}: expected an integer, got {value!r}")
    return value


def _host_ok(hostname: str) -> bool:
    """A colon is allowed only in an IPv6 address, which the URL then brackets."""
    if ":" not in hostname:
        return True
    try:
        ipaddress.IPv6Address(hostname)
    except ValueError:
        return False
    return True


def _section(top: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    unknown = sorted(set(top) - set(SECTIONS))
    if unknown:
        raise RedfishConfigError(
            f"unknown top-level keys {', '.join(unknown)}; expected {SECTIONS[0]}"
        )
    present = [name for name in SECTIONS if top.get(name) is not None]
    if not present:
        raise RedfishConfigError(f"{SECTIONS[0]}: required section is missing")
    if len(present) > 1:
        raise RedfishConfigError(f"give one of {' or '.join(SECTIONS)}, not both")
    return present[0], _mapping(top[present[0]], present[0])


def parse_redfish_config(
    text: str, node_hostname: str, environ: Mapping[str, str], base: Path
) -> RedfishConfig:
    """Validate the YAML text of a Redfish config file; relative paths start at `base`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RedfishConfigError(f"not valid YAML: {err}") from err
    where, web = _section(_mapping(raw if raw is not None else {}, "config file"))
    unknown = sorted(set(web) - _KEYS)
    if unknown:
        raise RedfishConfigError(
            f"{where}: unknown keys {', '.join(unknown)}; valid keys are {', '.join(sorted(_KEYS))}"
        )
    protocol = _str(web, "protocol", where)
    if protocol not in ("http", "https"):
        raise RedfishConfigError(f"{where}.protocol: expected http or https, got {protocol!r}")
    # CEEMS discovers an empty hostname through the IPMI LAN parameters; not done here.
    hostname = _str(web, "hostname", where).replace(HOSTNAME_PLACEHOLDER, node_hostname)
    if not hostname or any(c in hostname for c in "/?#@[] ") or not _host_ok(hostname):
        raise RedfishConfigError(f"{where}.hostname: required, a host name or IP address")
    port = _int(web, "port", where, 443 if protocol == "https" else 80)
    if not 0 < port < 65536:
        raise RedfishConfigError(f"{where}.port: expected 1 to 65535, got {port}")
    external_url = _str(web, "external_url", where).rstrip("/")
    if external_url and (
        urlsplit(external_url).scheme not in ("http", "https") or not urlsplit(external_url).netloc
    ):
        raise RedfishConfigError(f"{where}.external_url: expected an http(s) URL")
    # As CEEMS does: the environment wins over the file, so secrets can stay out of it.
    username = environ.get(USERNAME_ENV) or _str(web, "username", where)
    password = environ.get(PASSWORD_ENV) or _str(web, "password", where, secret=True)
    if not username or not password:
        key, env = ("username", USERNAME_ENV) if not username else ("password", PASSWORD_ENV)
        raise RedfishConfigError(f"{where}.{key}: required (or set {env})")
    timeout_ms = _int(web, "timeout", where, DEFAULT_TIMEOUT_MS)
    if timeout_ms < 0:
        raise RedfishConfigError(f"{where}.timeout: milliseconds, 0 or more, got {timeout_ms}")
    tls_raw = web.get("tls_config")
    tls = {} if tls_raw is None else _mapping(tls_raw, f"{where}.tls_config")
    unknown = sorted(set(tls) - _TLS_KEYS)
    if unknown:
        raise RedfishConfigError(f"{where}.tls_config: unknown keys {', '.join(unknown)}")
    ca_file = _str(tls, "ca_file", f"{where}.tls_config")
    return RedfishConfig(
        protocol=protocol,
        hostname=hostname,
        port=port,
        username=username,
        password=password,
        external_url=external_url,
        use_session_token=_bool(web, "use_session_token", where, True),
        # CEEMS treats 0 as "not set": the 5 s default.
        timeout_s=(timeout_ms or DEFAULT_TIMEOUT_MS) / 1000,
        insecure_skip_verify=_bool(web, "insecure_skip_verify", where, False)
        or _bool(tls, "insecure_skip_verify", f"{where}.tls_config", False),
        ca_file=base / ca_file if ca_file else None,
    )


def load_redfish_config(
    path: Path, node_hostname: str, expand_env_vars: bool, environ: Mapping[str, str]
) -> RedfishConfig:
    """Read, expand if asked, and validate a config file, naming the file in every error."""
    try:
        text = path.read_text()
    except OSError as err:
        raise RedfishConfigError(f"{path}: cannot read: {err.strerror}") from err
    try:
        if expand_env_vars:
            text = expand_env(text, environ)
        config = parse_redfish_config(text, node_hostname, environ, path.parent)
    except RedfishConfigError as err:
        raise RedfishConfigError(f"{path}: {err}") from err
    if config.ca_file is not None and not config.ca_file.is_file():
        raise RedfishConfigError(f"{path}: tls_config.ca_file: no such file {config.ca_file}")
    return config


@dataclass(frozen=True, slots=True)
class PowerStats:
    """A chassis' power in watts, each figure summed over its PowerControl entries."""

    current: float = 0.0
    minimum: float = 0.0
    maximum: float = 0.0
    average: float = 0.0

    def __add__(self, other: PowerStats) -> PowerStats:
        return PowerStats(
            self.current + other.current,
            self.minimum + other.minimum,
            self.maximum + other.maximum,
            self.average + other.average,
        )


def chassis_label(chassis_id: str) -> str:
    """The chassis label CEEMS uses: the Id with every character outside [a-zA-Z0-9_] as `_`."""
    return _LABEL_UNSAFE.sub("_", chassis_id)


def _watts(value: Any, where: str) -> float:
    if value is None:  # Redfish allows null for a reading the BMC does not have
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RedfishPowerError(f"{where}: expected a number of watts, got {value!r}")
    return float(value)


def parse_power(doc: Mapping[str, Any], where: str = "Power") -> PowerStats:
    """Sum PowerConsumedWatts and PowerMetrics' Min/Max/Average over PowerControl, as CEEMS."""
    controls = doc.get("PowerControl") or []
    if not isinstance(controls, list):
        raise RedfishPowerError(f"{where}.PowerControl: expected a list")
    total = PowerStats()
    for index, control in enumerate(controls):
        at = f"{where}.PowerControl[{index}]"
        if not isinstance(control, dict):
            raise RedfishPowerError(f"{at}: expected an object")
        metrics = control.get("PowerMetrics") or {}
        if not isinstance(metrics, dict):
            raise RedfishPowerError(f"{at}.PowerMetrics: expected an object")
        total += PowerStats(
            _watts(control.get("PowerConsumedWatts"), f"{at}.PowerConsumedWatts"),
            _watts(metrics.get("MinConsumedWatts"), f"{at}.PowerMetrics.MinConsumedWatts"),
            _watts(metrics.get("MaxConsumedWatts"), f"{at}.PowerMetrics.MaxConsumedWatts"),
            _watts(metrics.get("AverageConsumedWatts"), f"{at}.PowerMetrics.AverageConsumedWatts"),
        )
    return total


class PowerSource(Protocol):
    """Fetches every chassis' power, keyed by chassis label; owns a BMC session."""

    def __call__(self) -> dict[str, PowerStats]:
        """One reading of every chassis that has a Power resource."""
        ...

    def close(self) -> None:
        """End the BMC session."""
        ...


@dataclass(frozen=True, slots=True, eq=False)  # registered in a registry: hashed by identity
class RedfishCollector:
    """Emits ceems_redfish_{current,min,max,avg}_watts per chassis from the last good reading."""

    hostname: str
    sampler: BackgroundSampler[dict[str, PowerStats]]
    source: PowerSource

    def samplers(self) -> Sequence[BackgroundSampler[Any]]:
        """The BMC sampler."""
        return [self.sampler]

    def close(self) -> None:
        """Stop sampling and log out of the BMC."""
        self.sampler.stop()
        self.source.close()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Serve the cached reading; raises NoDataError when it is missing, stale or empty."""
        readings = self.sampler.latest().value
        if not readings:
            raise NoDataError("redfish: no chassis has a Power resource")
        fields: tuple[tuple[str, str, Callable[[PowerStats], float]], ...] = (
            ("avg", "Average", lambda p: p.average),
            ("current", "Current", lambda p: p.current),
            ("max", "Maximum", lambda p: p.maximum),
            ("min", "Minimum", lambda p: p.minimum),
        )
        for name, what, get in fields:
            family = GaugeMetricFamily(
                f"ceems_redfish_{name}_watts",
                f"{what} Power consumption in watts",
                labels=["hostname", "chassis"],
            )
            for chassis, stats in sorted(readings.items()):
                # CEEMS skips zero: the BMC reports 0 when it has no such measurement.
                if get(stats) > 0:
                    family.add_metric([self.hostname, chassis], get(stats))
            yield family


def _config_path(options: argparse.Namespace) -> Path:
    current, old = options.redfish_config_file, options.redfish_web_config
    if current and old and current != old:
        raise CollectorError(
            "--collector.redfish.config.file and its old name --collector.redfish.web-config "
            "name different files; give one"
        )
    if old and not current:
        log.warning("deprecated flag", extra={"flag": "--collector.redfish.web-config"})
    if not (current or old):
        raise CollectorError("--collector.redfish.config.file is required by the redfish collector")
    return Path(current or old)


@dataclass(frozen=True, slots=True)
class RedfishCollectorFactory:
    """Builds the redfish collector."""

    name: str = "redfish"
    enabled_by_default: bool = False
    description: str = "Chassis power from the BMC's Redfish API."

    def add_flags(self, group: argparse._ArgumentGroup) -> None:
        """Config file, its env expansion and the sampling interval."""
        group.add_argument(
            "--collector.redfish.config.file",
            dest="redfish_config_file",
            default=os.environ.get("CEEMS_EXPORTER_REDFISH_COLL_CONFIG_FILE", ""),
            metavar="FILE",
            help="Redfish config file (redfish_web_config: protocol, hostname, port, username, "
            "password, ...). Env: CEEMS_EXPORTER_REDFISH_COLL_CONFIG_FILE.",
        )
        group.add_argument(  # CEEMS v0.6's name; later CEEMS hides it but still reads it
            "--collector.redfish.web-config",
            dest="redfish_web_config",
            default=os.environ.get("CEEMS_EXPORTER_REDFISH_COLL_WEB_CONFIG_FILE", ""),
            help=argparse.SUPPRESS,
        )
        group.add_argument(
            "--collector.redfish.config.file.expand-env-vars",
            dest="redfish_config_expand_env_vars",
            action="store_true",
            help="Expand ${VAR} and $VAR in the config file; an unset variable is an error. "
            "Write $$ for a literal $.",
        )
        group.add_argument(
            "--collector.redfish.interval",
            dest="redfish_interval",
            type=float,
            default=10.0,
            metavar="SECONDS",
            help="Seconds between Redfish readings; a reading older than three intervals (plus "
            "two request timeouts) is not served. Default: %(default)s.",
        )

    def build(self, node: NodeContext, options: argparse.Namespace) -> RedfishCollector:
        """Read the config file and start sampling the BMC; the first login happens there."""
        if options.redfish_interval <= 0:
            raise CollectorError("--collector.redfish.interval must be positive")
        config = load_redfish_config(
            _config_path(options),
            node.hostname or socket.gethostname(),
            options.redfish_config_expand_env_vars,
            os.environ,
        )
        try:  # the client library and requests load only when the collector is enabled
            from ceems.exporter.collectors.redfish_client import RedfishPowerSource
        except ImportError as err:
            raise CollectorError(
                f"the redfish collector needs the 'redfish' package (pip install redfish): {err}"
            ) from err
        source = RedfishPowerSource(config)
        sampler = BackgroundSampler(
            "redfish",
            source,
            options.redfish_interval,
            # A fetch against a hung BMC takes one request timeout, then one more to log out.
            max_age_s=3 * options.redfish_interval + 2 * config.timeout_s,
        )
        sampler.start()
        return RedfishCollector(node.hostname, sampler, source)


FACTORY = RedfishCollectorFactory()
