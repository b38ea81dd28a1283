"""What every route needs: the read-only engine, the config, a clock, and parameter parsing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta, tzinfo
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from fastapi import Query

from ceems.api.config import ApiServerConfig
from ceems.api.envelope import INVALID_FIELDS, MAX_QUERY_WINDOW, ApiError, ErrorType
from ceems.api.rendercache import UnitTexts
from ceems.api.store.queries import TimeWindow

# CEEMS' window when `from` and/or `to` are missing (pkg/api/http/server.go).
DEFAULT_WINDOW = timedelta(hours=24)

_TRUE = frozenset(("", "1", "true", "yes", "on"))  # `?running` alone means true, as in CEEMS
_FALSE = frozenset(("0", "false", "no", "off"))

# Query parameters shared by the routes, documented once. Lists repeat: `?uuid=a&uuid=b`.
ClusterIds = Annotated[list[str] | None, Query(description="Cluster ID (repeatable)")]
Uuids = Annotated[list[str] | None, Query(description="Unit UUID (repeatable)")]
Projects = Annotated[list[str] | None, Query(description="Project (repeatable)")]
Users = Annotated[list[str] | None, Query(description="User name (repeatable)")]
Fields = Annotated[
    list[str] | None,
    Query(description="Fields to return (repeatable); unknown ones are dropped, as in CEEMS"),
]
From = Annotated[
    int | None, Query(alias="from", description="Window start, Unix seconds (default: to - 24h)")
]
To = Annotated[int | None, Query(description="Window end, Unix seconds (default: now)")]
Running = Annotated[
    str | None, Query(description="Also units that have not ended (`?running` alone is true)")
]
Timezone = Annotated[
    str | None, Query(description="IANA time zone of the time strings (default: data.time_zone)")
]
Experimental = Annotated[
    str | None, Query(description="Sum the daily usage table instead of the units")
]


def parse_bool(name: str, raw: str | None) -> bool:
    """A flag parameter: absent is false, present without value is true."""
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ApiError(
        ErrorType.BAD_DATA, f"query parameter {name!r}: invalid boolean {raw!r} (true or false)"
    )


def parse_fields(raw: Sequence[str] | None, valid: Sequence[str]) -> tuple[str, ...]:
    """Selected fields in `valid`; none asked is all. CEEMS drops unknown names and
    refuses the request only when none is left."""
    if not raw:
        return tuple(valid)
    fields = tuple(f.strip() for f in raw if f.strip() in valid)
    if not fields:
        raise ApiError(ErrorType.BAD_DATA, INVALID_FIELDS)
    return fields


def parse_zone(name: str) -> tzinfo | None:
    """An IANA zone; `Local` is the host's zone (None)."""
    if name == "Local":
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ApiError(
            ErrorType.BAD_DATA, f"query parameter 'timezone': unknown time zone {name!r}"
        ) from err


@dataclass(frozen=True, slots=True)
class ServerContext:
    """The read-only engine, the config, a clock (seconds, injectable for tests), and the
    rendered units kept between requests."""

    engine: sa.Engine
    config: ApiServerConfig
    clock: Callable[[], float]
    unit_texts: UnitTexts = field(default_factory=UnitTexts)

    def now_ms(self) -> int:
        """Current time, epoch milliseconds."""
        return int(self.clock() * 1000)

    def zone(self, requested: str | None) -> tzinfo | None:
        """The zone time strings are written in: the requested one or `data.time_zone`."""
        return parse_zone(requested or self.config.ceems_api_server.data.time_zone)

    def window(self, from_s: int | None, to_s: int | None) -> TimeWindow:
        """CEEMS' window: defaults of 24h around what is given; at most `web.max_query`."""
        day = int(DEFAULT_WINDOW.total_seconds())
        if from_s is None:
            to_s = int(self.clock()) if to_s is None else to_s
            from_s = to_s - day
        elif to_s is None:
            to_s = from_s + day
        if from_s > to_s:
            raise ApiError(
                ErrorType.BAD_DATA,
                f"query parameter 'from' ({from_s}) is after 'to' ({to_s})",
            )
        max_query = self.config.ceems_api_server.web.max_query
        if max_query > timedelta(0) and timedelta(seconds=to_s - from_s) > max_query:
            raise ApiError(ErrorType.BAD_DATA, f"{MAX_QUERY_WINDOW} (at most {max_query})")
        # `to` is a whole second: CEEMS compares second-resolution strings, so it is inclusive.
        return TimeWindow(from_ms=from_s * 1000, to_ms=to_s * 1000 + 999)
