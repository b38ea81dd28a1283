"""The emission-provider extension point: a Protocol, its configuration and its values."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

_COUNTRY_CODE = re.compile(r"[A-Z]{2}")


class ProviderError(Exception):
    """A provider cannot be built from its configuration or cannot deliver factors now."""


@dataclass(frozen=True, slots=True)
class EmissionFactor:
    """Carbon intensity of the electricity of one country or grid zone."""

    country_code: str  # ISO 3166-1 alpha-2 ("FR"); a zone or region key for emaps and wt
    country: str  # human name ("France")
    value_g_per_kwh: float


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """What every provider is built from; online providers query only `country_code`."""

    country_code: str = ""  # the node's country, ISO 3166-1 alpha-2, upper case; "" if unknown
    base_url: str | None = None  # overrides the provider's API base URL (tests aim it locally)
    timeout_s: float = 10.0
    env: Mapping[str, str] = field(default_factory=dict)  # tokens and credentials (os.environ)

    def __post_init__(self) -> None:
        if self.country_code and not _COUNTRY_CODE.fullmatch(self.country_code):
            raise ProviderError(
                f"country code {self.country_code!r} is not an upper-case"
                " ISO 3166-1 alpha-2 code such as 'FR'"
            )
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ProviderError(
                f"timeout must be a positive number of seconds, got {self.timeout_s}"
            )


@runtime_checkable
class EmissionProvider(Protocol):
    """Built by a `ceems.emission_providers` entry point as `Cls(config)`, without network I/O."""

    name: str  # the entry-point name, label `provider`
    display_name: str  # label `provider_name`, as CEEMS registers it
    refresh_interval_s: float  # how often factors change; 0 for static tables

    def factors(self) -> dict[str, EmissionFactor]:
        """Current factors keyed by country code; raises ProviderError on any failure."""
        ...
