"""Command-line flags every CEEMS server spells the same way (config file, web config, logs)."""

from __future__ import annotations

import argparse
import os

from ceems.common.logging import LEVELS


def add_config_flags(parser: argparse.ArgumentParser, env: str, what: str = "") -> None:
    """`--config.file` (default from the environment variable `env`) and its env expansion."""
    parser.add_argument(
        "--config.file", dest="config_file", default=os.environ.get(env, ""), metavar="FILE",
        help=f"YAML config file{what}. Env: {env}.",
    )  # fmt: skip
    parser.add_argument(
        "--config.file.expand-env-vars", dest="expand_env_vars", action="store_true",
        help="Replace ${VAR} in the config file with environment variables.",
    )  # fmt: skip


def add_web_config_flag(parser: argparse.ArgumentParser) -> None:
    """`--web.config.file`: the exporter-toolkit TLS and basic-auth file."""
    parser.add_argument(
        "--web.config.file", dest="web_config_file", default="", metavar="FILE",
        help="Exporter-toolkit web config: TLS certificate and key, basic-auth users.",
    )  # fmt: skip


def add_log_flags(container: argparse._ActionsContainer) -> None:
    """`--log.level` and `--log.format`."""
    container.add_argument("--log.level", dest="log_level", choices=LEVELS, default="info")
    container.add_argument(
        "--log.format", dest="log_format", choices=("logfmt", "json"), default="logfmt"
    )
