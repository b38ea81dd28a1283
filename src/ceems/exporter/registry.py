"""The collector registry: factories from the `ceems.collectors` entry-point group."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from ceems.exporter.collector import CollectorError, CollectorFactory

log = logging.getLogger(__name__)

GROUP = "ceems.collectors"


def load_factories() -> dict[str, CollectorFactory]:
    """Every installed collector factory by name; ours are declared like a site's own.

    A plugin that fails to import is logged and skipped so one broken package cannot take
    the exporter down; a factory whose `name` differs from its entry point is refused.
    """
    factories: dict[str, CollectorFactory] = {}
    for ep in entry_points(group=GROUP):
        try:
            factory = ep.load()
        except Exception as err:  # a third-party plugin may be broken in any way
            log.error(
                "cannot load collector plugin",
                extra={"collector": ep.name, "target": ep.value, "err": str(err)},
            )
            continue
        if getattr(factory, "name", None) != ep.name:
            raise CollectorError(
                f"entry point {ep.name!r} ({ep.value}) names its collector "
                f"{getattr(factory, 'name', None)!r}; they must match"
            )
        if ep.name in factories:
            raise CollectorError(f"collector {ep.name!r} is registered twice ({ep.value})")
        factories[ep.name] = factory
    return dict(sorted(factories.items()))
