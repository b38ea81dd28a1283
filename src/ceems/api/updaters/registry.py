"""Building the configured updaters from the `ceems.updaters` entry-point group."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib.metadata import entry_points

from ceems.api.config import UpdaterConfig
from ceems.api.updaters.protocol import Updater
from ceems.common.config import ConfigError

log = logging.getLogger(__name__)

GROUP = "ceems.updaters"


class UnknownUpdaterError(ConfigError):
    """A config names an updater no installed package provides."""


def build_updaters(configs: Sequence[UpdaterConfig]) -> dict[str, Updater]:
    """One updater per config entry, by id; an unknown name fails before any is built."""
    available = {ep.name: ep for ep in entry_points(group=GROUP)}
    ids = [config.id for config in configs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"updaters: duplicate id(s) {', '.join(duplicates)}")
    for config in configs:
        if config.updater not in available:
            raise UnknownUpdaterError(
                f"updater {config.id!r}: unknown updater {config.updater!r}"
                f" (installed: {', '.join(sorted(available)) or 'none'})"
            )
    updaters: dict[str, Updater] = {}
    for config in configs:
        factory = available[config.updater].load()
        updaters[config.id] = factory(config)
        log.info("updater ready", extra={"updater": config.id, "kind": config.updater})
    return updaters
