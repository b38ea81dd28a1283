"""Emission providers by name, from the `ceems.emission_providers` entry points."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from ceems.emissions.provider import EmissionProvider, ProviderConfig, ProviderError

GROUP = "ceems.emission_providers"


def available_providers() -> list[str]:
    """Names of the installed providers, sorted."""
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def build_providers(names: Sequence[str], config: ProviderConfig) -> list[EmissionProvider]:
    """One provider per name, in order; an unknown or repeated name fails before any is built."""
    available = {ep.name: ep for ep in entry_points(group=GROUP)}
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ProviderError(
            f"unknown emission provider {', '.join(map(repr, unknown))}"
            f" (installed: {', '.join(sorted(available)) or 'none'})"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ProviderError(f"emission provider {', '.join(map(repr, repeated))} given twice")
    providers: list[EmissionProvider] = []
    for name in names:
        entry_point = available[name]
        try:
            factory: Callable[[ProviderConfig], EmissionProvider] = entry_point.load()
        except (ImportError, AttributeError) as err:
            raise ProviderError(
                f"emission provider {name!r} cannot be loaded from {entry_point.value}: {err}"
            ) from err
        provider = factory(config)
        # The entry-point name becomes the `provider` label; a class claiming another would
        # publish its factors under a name no configuration selected.
        if provider.name != name:
            raise ProviderError(
                f"emission provider {name!r} ({entry_point.value}) calls itself {provider.name!r}"
            )
        providers.append(provider)
    return providers
