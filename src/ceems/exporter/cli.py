"""`ceems_exporter`: the per-node Prometheus exporter of compute-unit and node metrics."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily

from ceems import __version__
from ceems.common.flags import add_log_flags
from ceems.common.logging import setup_logging
from ceems.common.webconfig import BasicAuth, WebConfig, WebConfigError, load_web_config
from ceems.exporter.collector import (
    ClosableCollector,
    Collector,
    CollectorError,
    CollectorFactory,
    NodeContext,
)
from ceems.exporter.registry import load_factories
from ceems.exporter.scrape import ScrapeGuard
from ceems.exporter.server import ExporterServer, ServeOptions, landing_page

log = logging.getLogger(__name__)


def build_parser(factories: dict[str, CollectorFactory]) -> argparse.ArgumentParser:
    """All flags: CEEMS' names, one enable/disable pair and an option group per collector."""
    parser = argparse.ArgumentParser(
        prog="ceems_exporter",
        description="Prometheus exporter of per-node and per-compute-unit usage, power and "
        "emissions metrics.",
    )
    parser.add_argument("--version", action="version", version=f"ceems_exporter {__version__}")
    web = parser.add_argument_group("web")
    web.add_argument(
        "--web.listen-address",
        dest="listen_addresses",
        action="append",
        metavar="ADDR",
        help="Address to listen on, HOST:PORT; repeat for several. Default: :9010.",
    )
    web.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        help="Path under which metrics are exposed. Default: %(default)s.",
    )
    web.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=os.environ.get("CEEMS_EXPORTER_WEB_CONFIG_FILE", ""),
        metavar="FILE",
        help="Exporter-toolkit web config (TLS, basic auth). Env: CEEMS_EXPORTER_WEB_CONFIG_FILE.",
    )
    web.add_argument(
        "--web.disable-exporter-metrics",
        dest="disable_exporter_metrics",
        action="store_true",
        help="Exclude the exporter's own process_* and python_* metrics.",
    )
    web.add_argument(
        "--web.max-requests",
        dest="max_requests",
        type=int,
        default=40,
        help="Maximum number of parallel scrapes; 0 disables the limit. Default: %(default)s.",
    )
    add_log_flags(parser.add_argument_group("logging"))
    paths = parser.add_argument_group("paths")
    paths.add_argument("--path.procfs", dest="procfs", default="/proc", help="procfs mountpoint.")
    paths.add_argument("--path.sysfs", dest="sysfs", default="/sys", help="sysfs mountpoint.")
    paths.add_argument(
        "--path.cgroupfs", dest="cgroupfs", default="/sys/fs/cgroup", help="cgroupfs mountpoint."
    )
    collectors = parser.add_argument_group("collectors")
    collectors.add_argument(
        "--collector.disable-defaults",
        dest="disable_defaults",
        action="store_true",
        help="Enable only the collectors named with --collector.<name>.",
    )
    collectors.add_argument(
        "--collector.empty-hostname-label",
        dest="empty_hostname_label",
        action="store_true",
        help="Set the hostname label of every metric to the empty string.",
    )
    collectors.add_argument(
        "--collector.hostname",
        dest="hostname",
        default="",
        help="Value of the hostname label. Default: this machine's host name.",
    )
    for name, factory in factories.items():
        default = "enabled" if factory.enabled_by_default else "disabled"
        collectors.add_argument(
            f"--collector.{name}",
            dest=f"collector_{name}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"{factory.description} ({default} by default)",
        )
    for name, factory in factories.items():
        factory.add_flags(parser.add_argument_group(f"collector {name}"))
    return parser


def enabled_collectors(
    factories: dict[str, CollectorFactory], options: argparse.Namespace
) -> list[str]:
    """Names of the collectors to run, from defaults and the enable/disable flags."""
    enabled = []
    for name, factory in factories.items():
        flag: bool | None = getattr(options, f"collector_{name}")
        default = factory.enabled_by_default and not options.disable_defaults
        if flag if flag is not None else default:
            enabled.append(name)
    return enabled


def build_info_family() -> GaugeMetricFamily:
    """`ceems_exporter_build_info`, as every Prometheus exporter has."""
    family = GaugeMetricFamily(
        "ceems_exporter_build_info",
        "A metric with a constant '1' value labeled by version and pythonversion from which "
        "ceems_exporter was built.",
        labels=["version", "pythonversion", "goos", "goarch"],
    )
    family.add_metric([__version__, platform.python_version(), sys.platform, platform.machine()], 1)
    return family


@dataclass(frozen=True, slots=True)
class _BuildInfo:
    def collect(self) -> list[GaugeMetricFamily]:
        return [build_info_family()]


@dataclass
class Exporter:
    """The built exporter: collectors, registry and servers, ready to start."""

    collectors: dict[str, Collector]
    registry: CollectorRegistry
    server: ExporterServer

    def close(self) -> None:
        """Stop serving and stop every collector's background work."""
        self.server.shutdown()
        for name, collector in self.collectors.items():
            if isinstance(collector, ClosableCollector):
                try:
                    collector.close()
                except Exception:  # shutdown goes on for the others
                    log.exception("collector close failed", extra={"collector": name})


def build_exporter(options: argparse.Namespace, factories: dict[str, CollectorFactory]) -> Exporter:
    """Build collectors, registry and servers from parsed flags; raises on bad configuration."""
    hostname = "" if options.empty_hostname_label else (options.hostname or socket.gethostname())
    node = NodeContext(Path(options.procfs), Path(options.sysfs), Path(options.cgroupfs), hostname)
    web = load_web_config(Path(options.web_config_file)) if options.web_config_file else WebConfig()
    if web.tls is not None and web.tls.ignored_keys:
        log.warning("tls settings not applied", extra={"keys": ",".join(web.tls.ignored_keys)})
    if options.max_requests < 0:
        raise CollectorError("--web.max-requests must be 0 (no limit) or positive")
    if not options.telemetry_path.startswith("/") or options.telemetry_path in ("/", "/health"):
        raise CollectorError(
            f"--web.telemetry-path {options.telemetry_path!r} must be a path "
            "other than / and /health"
        )
    collectors: dict[str, Collector] = {}
    try:
        for name in enabled_collectors(factories, options):
            collectors[name] = factories[name].build(node, options)
            log.info("collector enabled", extra={"collector": name})
    except Exception:
        for collector in collectors.values():
            if isinstance(collector, ClosableCollector):
                collector.close()
        raise
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeGuard(collectors))
    registry.register(_BuildInfo())
    if not options.disable_exporter_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    serve = ServeOptions(
        registry=registry,
        telemetry_path=options.telemetry_path,
        web=web,
        auth=BasicAuth(web.basic_auth_users),
        scrape_slots=threading.BoundedSemaphore(options.max_requests)
        if options.max_requests
        else None,
        landing_html=landing_page(options.telemetry_path, __version__),
    )
    server = ExporterServer(options.listen_addresses or [":9010"], serve)
    return Exporter(collectors, registry, server)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, build the exporter, serve until SIGINT or SIGTERM."""
    setup_logging()  # plugin loading may log before the flags are known
    factories = load_factories()
    options = build_parser(factories).parse_args(argv)
    setup_logging(options.log_level, options.log_format)
    try:
        exporter = build_exporter(options, factories)
    except (CollectorError, WebConfigError, ValueError, OSError) as err:
        print(f"ceems_exporter: {err}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    exporter.server.start()
    scheme = (
        "https" if exporter.server.servers and exporter.server.servers[0].ssl_context else "http"
    )
    for address, port in zip(
        options.listen_addresses or [":9010"], exporter.server.ports, strict=True
    ):
        log.info("listening", extra={"address": address, "port": port, "scheme": scheme})
    stop.wait()
    log.info("shutting down")
    exporter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
