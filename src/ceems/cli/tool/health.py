"""The `check` group: are the API server and the load balancer healthy, are web configs valid.

A server is healthy when `<url>/health` answers 200 within 10 s, as CEEMS' ceems_tool checks;
`<url>` may carry the server's route prefix. The web-config check lives in `webconfig`.
"""

from __future__ import annotations

import argparse
import sys

import httpx

from ceems.cli.tool import webconfig
from ceems.cli.tool.httpclient import add_http_flags, load_client_config, redacted
from ceems.common.config import ConfigError
from ceems.common.httpconfig import HttpClientConfig

HEALTH_PATH = "/health"
TIMEOUT_S = 10.0


class HealthCheckError(Exception):
    """The server is unreachable, too slow, or answered something else than 200."""


def check_health(config: HttpClientConfig) -> str:
    """The body of `<url>/health` when it answers 200; HealthCheckError says why not."""
    target = redacted(config.url) + HEALTH_PATH
    try:
        with config.client() as client:
            response = client.get(HEALTH_PATH)
    except httpx.TimeoutException as err:
        raise HealthCheckError(
            f"{target}: no answer within {config.timeout:g}s ({type(err).__name__})"
        ) from err
    except httpx.HTTPError as err:
        raise HealthCheckError(f"{target}: cannot reach: {err}") from err
    body = response.text.strip()
    if response.status_code != 200:
        raise HealthCheckError(f"{target}: answered {response.status_code}: {body[:200]}")
    return body


def _check(args: argparse.Namespace) -> int:
    try:
        config = load_client_config(args, timeout_s=TIMEOUT_S)
        body = check_health(config)
    except (ConfigError, OSError) as err:
        # OSError (SSLError too): a CA, key or password file named in the config is unusable.
        print(f"ceems_tool: error: {err}", file=sys.stderr)
        return 1
    except HealthCheckError as err:
        print(f"FAILED: {err}", file=sys.stderr)
        return 1
    print(f"SUCCESS: {body}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `api-healthy`, `lb-healthy` and `web-config` to the `check` group."""
    for name, service, default_url in (
        ("api-healthy", "CEEMS API server", "http://localhost:9020"),
        ("lb-healthy", "CEEMS load balancer", "http://localhost:9030"),
    ):
        parser = subparsers.add_parser(
            name,
            help=f"Check that the {service} answers {HEALTH_PATH} with 200.",
            description=f"Check that the {service} answers {HEALTH_PATH} with 200 within "
            f"{TIMEOUT_S:g} s; exit 1 otherwise.",
        )
        add_http_flags(parser, default_url, service)
        parser.set_defaults(func=_check)
    webconfig.register_check(subparsers)
