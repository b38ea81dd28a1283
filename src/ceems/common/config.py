"""Loading YAML config files: `${ENV}` expansion and pydantic errors that name the key path."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class ConfigError(ValueError):
    """A config file is unreadable or invalid; the message names the file, key and reason."""


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """Replace `${VAR}` and `$VAR` with the environment's values; `$$` is a literal `$`.

    An unset variable is an error: a silently empty password or URL is worse than a refusal.
    """
    env = os.environ if env is None else env
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2)
        if name not in env:
            missing.append(name)
            return ""
        return env[name]

    expanded = _ENV_REF.sub(substitute, text)
    if missing:
        raise ConfigError(f"environment variable(s) not set: {', '.join(sorted(set(missing)))}")
    return expanded


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: `clusters.0.manager: field required`."""
    lines = []
    for problem in err.errors():
        path = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{path}: {message}")
    return "; ".join(lines)


def expand_env_values(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """`expand_env` applied to every string of parsed YAML (keys left as written).

    Expanding after parsing rather than in the text means comments are never expanded and
    a value from the environment can never change the file's structure.
    """
    if isinstance(value, str):
        return expand_env(value, env)
    if isinstance(value, dict):
        return {k: expand_env_values(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env_values(v, env) for v in value]
    return value


def parse_config(
    text: str, model: type[M], source: str = "config", expand_env_vars: bool = False
) -> M:
    """Validate YAML `text` against `model`; ConfigError names the source and the key paths."""
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {err}") from err
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    if expand_env_vars:
        try:
            raw = expand_env_values(raw)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from err
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {format_validation_error(err)}") from err


def load_config(path: Path, model: type[M], expand_env_vars: bool = False) -> M:
    """Read, optionally env-expand (string values only), and validate a config file."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    return parse_config(text, model, str(path), expand_env_vars)
