"""`ceems_lb`: access-controlled load balancer in front of TSDBs and Pyroscope servers."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from ceems import __version__
from ceems.common.asgiguard import Guard
from ceems.common.config import ConfigError, load_config
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
from ceems.lb.app import LbApp
from ceems.lb.backends import Pools
from ceems.lb.config import DEFAULT_LISTEN, DEFAULT_PYROSCOPE_LISTEN, LbConfig
from ceems.lb.ownership import OwnershipUnavailableError, build_ownership

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """CEEMS' flags for the load balancer."""
    parser = argparse.ArgumentParser(
        prog="ceems_lb",
        description="Access-controlled load balancer in front of TSDBs and Pyroscope servers.",
    )
    parser.add_argument("--version", action="version", version=f"ceems_lb {__version__}")
    add_config_flags(parser, "CEEMS_LB_CONFIG_FILE", " (may be the API server's)")
    parser.add_argument(
        "--web.listen-address", dest="listen_addresses", action="append", metavar="ADDR",
        help=f"HOST:PORT; give it twice when both TSDB and Pyroscope servers are configured "
        f"(TSDB first). Default: {DEFAULT_LISTEN} and {DEFAULT_PYROSCOPE_LISTEN}.",
    )  # fmt: skip
    add_web_config_flag(parser)
    add_log_flags(parser)
    return parser


def frontends_of(config: LbConfig) -> list[str]:
    """The frontends to serve, in the order listen addresses are given to them."""
    kinds = []
    if config.has_tsdb():
        kinds.append("tsdb")
    if config.has_pyroscope():
        kinds.append("pyroscope")
    return kinds


def listen_plan(kinds: list[str], addresses: list[str] | None) -> list[tuple[str, str]]:
    """(frontend, address) pairs; one address per frontend, defaults by kind."""
    if addresses is None:
        defaults = {"tsdb": DEFAULT_LISTEN, "pyroscope": DEFAULT_PYROSCOPE_LISTEN}
        return [(kind, defaults[kind]) for kind in kinds]
    if len(addresses) != len(kinds):
        raise ConfigError(
            f"--web.listen-address given {len(addresses)} time(s) for {len(kinds)} frontend(s) "
            f"({', '.join(kinds)}): give one address per frontend, TSDB first"
        )
    return list(zip(kinds, addresses, strict=True))


def bind(address: str) -> socket.socket:
    """A listening TCP socket on `address` (`:9030` means every interface)."""
    host, port = parse_listen_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted connections of a
    # socket whose protocol says TCP, and without it delayed ACKs add 40 ms to each answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host or "0.0.0.0", port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {address}: {err.strerror}") from err
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def build_app(config: LbConfig) -> LbApp:
    """Ownership source and backend pools for `config` (no listener yet)."""
    section = config.ceems_lb
    ownership = build_ownership(config.ceems_api_server, section.cache_ttl.total_seconds())
    pools = {
        kind: Pools.build(
            kind,
            {b.id: getattr(b, kind) for b in section.backends},
            section.strategy,
            section.health_check_interval,
        )
        for kind in frontends_of(config)
    }
    return LbApp(config, ownership, pools)


def asgi_app(app: LbApp, web: WebConfig) -> ASGIApp:
    """What uvicorn serves: `app` behind basic auth when the web config has users.

    Without users the guard would only pass every request on (the LB sets no concurrency
    cap): one coroutine less per request.
    """
    auth = BasicAuth(web.basic_auth_users)
    return Guard(app, auth, None) if auth else app


def main(argv: Sequence[str] | None = None) -> int:
    """Load the config, bind the listeners, serve until SIGINT/SIGTERM."""
    options = build_parser().parse_args(argv)
    setup_logging(options.log_level, options.log_format)
    # one line per proxied request at info would drown everything else
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    if not options.config_file:
        print("ceems_lb: --config.file is required", file=sys.stderr)
        return 1
    sockets: list[socket.socket] = []
    try:
        config = load_config(Path(options.config_file), LbConfig, options.expand_env_vars)
        web = (
            load_web_config(Path(options.web_config_file))
            if options.web_config_file
            else WebConfig()
        )
        plan = listen_plan(frontends_of(config), options.listen_addresses)
        app = build_app(config)
        for kind, address in plan:
            sock = bind(address)
            sockets.append(sock)
            app.frontends[sock.getsockname()[1]] = kind
            log.info("listening", extra={"frontend": kind, "address": address})
    except (ConfigError, WebConfigError, OwnershipUnavailableError, ValueError) as err:
        for sock in sockets:
            sock.close()
        print(f"ceems_lb: {err}", file=sys.stderr)
        return 1
    uv_config = uvicorn.Config(
        asgi_app(app, web),
        log_config=None,
        access_log=False,
        lifespan="on",
        # identity comes from the user header; client addresses are never used
        proxy_headers=False,
        server_header=False,
        **uvicorn_options(web),
    )
    uvicorn.Server(uv_config).run(sockets=sockets)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
