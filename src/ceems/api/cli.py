"""`ceems_api_server`: stores compute units of every cluster and serves them over a REST API."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp

from ceems import __version__
from ceems.api.admins import GrafanaTeams
from ceems.api.app import create_app
from ceems.api.config import ApiServerConfig
from ceems.api.managers.protocol import ManagerError
from ceems.api.managers.registry import build_managers
from ceems.api.rendercache import DEFAULT_CAPACITY, UnitTexts
from ceems.api.store.engine import create_store_engine, read_only_engine
from ceems.api.store.errors import StoreError
from ceems.api.store.migrate import migrate
from ceems.api.store.writes import StoreWriter
from ceems.api.updaters.registry import build_updaters
from ceems.api.writer import WriterLoop
from ceems.common.asgiguard import Guard
from ceems.common.config import ConfigError, load_config
from ceems.common.durations import parse_duration
from ceems.common.flags import add_config_flags, add_log_flags, add_web_config_flag
from ceems.common.logging import setup_logging
from ceems.common.webconfig import (
    BasicAuth,
    WebConfig,
    WebConfigError,
    load_web_config,
    uvicorn_options,
)
from ceems.exporter.server import parse_listen_address

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """CEEMS' flags for the API server."""
    parser = argparse.ArgumentParser(
        prog="ceems_api_server",
        description="Store compute units of every cluster and serve them over a REST API.",
    )
    parser.add_argument("--version", action="version", version=f"ceems_api_server {__version__}")
    add_config_flags(parser, "CEEMS_API_SERVER_CONFIG_FILE")
    parser.add_argument(
        "--web.listen-address", dest="listen_address", default=":9020", metavar="ADDR",
        help="HOST:PORT to listen on. Default: %(default)s.",
    )  # fmt: skip
    add_web_config_flag(parser)
    parser.add_argument(
        "--web.route-prefix", dest="route_prefix", default="",
        help="Prefix of every path, when served behind a reverse proxy under a sub-path.",
    )  # fmt: skip
    parser.add_argument(
        "--web.max-requests", dest="max_requests", type=int, default=0,
        help="Requests served at once; more get 503. 0: no limit. Default: %(default)s.",
    )  # fmt: skip
    parser.add_argument(
        "--web.cors.origin", dest="cors_origin", default="",
        help="Allowed CORS origin (regex), overriding ceems_api_server.web.cors_origin.",
    )  # fmt: skip
    parser.add_argument(
        "--web.units-cache-size", dest="unit_texts", type=_non_negative, default=DEFAULT_CAPACITY,
        metavar="N",
        help="Rendered units of /units answers kept for the next requests (1.5 to 3 kB "
        "each); 0 renders every answer afresh. Default: %(default)s.",
    )  # fmt: skip
    parser.add_argument(
        "--query.max-period", dest="max_period", default="",
        help="Longest query window (e.g. 1y), overriding ceems_api_server.web.max_query.",
    )  # fmt: skip
    add_log_flags(parser)
    return parser


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def apply_flags(config: ApiServerConfig, options: argparse.Namespace) -> ApiServerConfig:
    """Flags that override the config file."""
    web = config.ceems_api_server.web
    updates: dict[str, Any] = {}
    if options.cors_origin:
        updates["cors_origin"] = options.cors_origin
    if options.max_period:
        try:
            updates["max_query"] = parse_duration(options.max_period)
        except ValueError as err:
            raise ConfigError(f"--query.max-period: {err}") from err
    if not updates:
        return config
    server = config.ceems_api_server.model_copy(update={"web": web.model_copy(update=updates)})
    return config.model_copy(update={"ceems_api_server": server})


@dataclass
class ApiServer:
    """Everything the process runs: the writer loop thread and the HTTP app."""

    config: ApiServerConfig
    loop: WriterLoop
    writer: StoreWriter
    app: ASGIApp
    stop: threading.Event

    def start_writer(self) -> threading.Thread:
        """Run update cycles in a background thread until `stop` is set."""
        thread = threading.Thread(target=self.loop.serve, args=(self.stop,), name="writer")
        thread.start()
        return thread


def build_server(config: ApiServerConfig, options: argparse.Namespace, web: WebConfig) -> ApiServer:
    """Open and migrate the store, build managers, updaters, the writer loop and the app."""
    data = config.ceems_api_server.data
    # Managers and updaters first: a config naming one that is not installed must fail
    # before the store is created or migrated.
    managers = build_managers(config.clusters)
    updaters = build_updaters(config.updaters)
    engine = create_store_engine(data)
    migrate(engine)
    writer = StoreWriter(engine)
    writer.sync_admins("config", config.ceems_api_server.admin.users)
    grafana = config.ceems_api_server.admin.grafana
    teams = GrafanaTeams(grafana) if grafana.url and grafana.teams_ids else None
    loop = WriterLoop(
        config=config,
        store=writer,
        managers=managers,
        updaters=updaters,
        admin_source=teams.members if teams is not None else None,
    )
    registry = loop.metrics.registry
    unit_texts = UnitTexts(options.unit_texts, registry)
    app = create_app(
        config, read_only_engine(data), route_prefix=options.route_prefix, unit_texts=unit_texts
    )
    prefix = options.route_prefix.rstrip("/")

    @app.get(f"{prefix}/metrics", include_in_schema=False)
    def metrics() -> Response:
        """The writer loop's own metrics (update windows, failures, lag)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    slots = threading.BoundedSemaphore(options.max_requests) if options.max_requests > 0 else None
    guarded = Guard(app, BasicAuth(web.basic_auth_users), slots)
    return ApiServer(config, loop, writer, guarded, threading.Event())


def freeze_startup_objects() -> None:
    """Keep what startup built (modules, config, app: ~90k objects) out of collections.

    A /units response of 500 units allocates enough for a full collection every 20-30
    requests, and walking the startup objects took each one ~55 ms of CPU on a 2-core
    machine: /units' p99 was twice its p50. Frozen objects are never collected, so what
    startup left as garbage is collected first.
    """
    gc.collect()
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """Load the config, start the writer loop, serve the API until SIGINT/SIGTERM."""
    options = build_parser().parse_args(argv)
    setup_logging(options.log_level, options.log_format)
    # one line per TSDB query at info would drown the writer loop's own lines
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    if not options.config_file:
        print("ceems_api_server: --config.file is required", file=sys.stderr)
        return 1
    try:
        config = apply_flags(
            load_config(Path(options.config_file), ApiServerConfig, options.expand_env_vars),
            options,
        )
        web = (
            load_web_config(Path(options.web_config_file))
            if options.web_config_file
            else WebConfig()
        )
        host, port = parse_listen_address(options.listen_address)
        server = build_server(config, options, web)
    except (ConfigError, WebConfigError, StoreError, ManagerError, ValueError) as err:
        print(f"ceems_api_server: {err}", file=sys.stderr)
        return 1
    freeze_startup_objects()
    writer_thread = server.start_writer()
    uv_config = uvicorn.Config(
        server.app,
        host=host or "0.0.0.0",
        port=port,
        log_config=None,
        access_log=False,
        **uvicorn_options(web),
    )
    log.info("listening", extra={"address": options.listen_address, "tls": web.tls is not None})
    try:
        uvicorn.Server(uv_config).run()
    finally:
        server.stop.set()
        writer_thread.join()
        server.writer.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
