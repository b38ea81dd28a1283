"""Rendered unit JSON kept between requests, keyed by the stored row it was rendered from.

Most of a `/units` answer is finished units that never change again, and the same lists are
asked for over and over (dashboards refresh, members of a project open the same list).
Rendering, not the query, is most of such a request: decoding a row's maps and writing
them in CEEMS' format costs several times the SQL. Each rendered unit is kept under the
row exactly as the store returned it and the way it was rendered (fields, time zone): a
row that changed in any column is another key, so a stale text is never served; texts no
request asks for any more age out, oldest first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from datetime import tzinfo
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from ceems.api.render import unit_renderer
from ceems.api.store.queries import UnitRows, unit_dicts

# Units kept by default: 1.5 to 3 kB each (the row and its text; 1.4 kB measured for
# benchmarks/api_server.py's units), 30 to 60 MB in all.
DEFAULT_CAPACITY = 20_000
# Distinct (fields, zone) pairs remembered; past it they are forgotten and renumbered, and
# texts under forgotten numbers simply age out.
_PLANS_LIMIT = 1024
# (plan number, row): the row as fetched (a SQLAlchemy Row hashes and compares as its tuple).
_Key = tuple[int, Any]


class UnitTexts:
    """Rendered units, at most `capacity`, oldest out first, shared by the request threads.

    A text served from the older half is moved back to the young end, so that units in use
    stay: nearly least-recently-used, without moving an entry on every hit (each move looks
    the key up again, comparing the whole row: half the cost of a cached answer).

    `capacity` 0 renders every unit afresh. A list longer than `capacity` is rendered
    without the cache, so that one large admin listing does not push out every user's units.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, registry: CollectorRegistry | None = None):
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        # Each text with the insertion number it was kept or last moved back at.
        self._texts: OrderedDict[_Key, tuple[bytes, int]] = OrderedDict()
        self._kept = 0
        self._plans: dict[tuple[frozenset[str], Hashable], int] = {}
        self._next_plan = 0
        self._lock = threading.Lock()
        self._hits = Counter(
            "ceems_api_server_units_cache_hits_total",
            "Units of /units answers whose JSON was kept from an earlier answer.",
            registry=registry,
        )
        self._misses = Counter(
            "ceems_api_server_units_cache_misses_total",
            "Units of /units answers rendered afresh (new, changed, or running with `elapsed`).",
            registry=registry,
        )

    def __len__(self) -> int:
        return len(self._texts)

    def render(
        self, found: UnitRows, fields: Sequence[str], zone: tzinfo | None, now_ms: int
    ) -> list[bytes]:
        """Each row's JSON in CEEMS' format, UTF-8, in the rows' order."""
        render = unit_renderer(fields, zone, now_ms)
        rows = found.rows
        if not self.capacity or len(rows) > self.capacity:
            self._misses.inc(len(rows))
            return [render(unit).encode() for unit in unit_dicts(found)]
        # A running unit's `elapsed` moves with the clock: rendered afresh every time.
        moving = found.names.index("ended_at_ts") if "elapsed" in fields else -1
        texts: list[bytes | None] = [None] * len(rows)
        missing: list[int] = []
        with self._lock:
            plan = self._plan_id(frozenset(fields), zone)
            kept = self._texts
            old = self._kept - self.capacity // 2  # kept before it: in the older half
            for i, row in enumerate(rows):
                if moving >= 0 and not row[moving]:
                    missing.append(i)
                    continue
                key = (plan, row)
                entry = kept.get(key)
                if entry is None:
                    missing.append(i)
                    continue
                text, number = entry
                texts[i] = text
                if number < old:
                    kept.move_to_end(key)
                    kept[key] = (text, self._kept)
                    self._kept += 1
        if missing:
            fresh = unit_dicts(found._replace(rows=[rows[i] for i in missing]))
            rendered = [render(unit).encode() for unit in fresh]
            with self._lock:
                for i, text in zip(missing, rendered, strict=True):
                    texts[i] = text
                    row = rows[i]
                    if moving < 0 or row[moving]:
                        # A plain tuple: a Row would keep its result's metadata alive.
                        self._keep((plan, tuple(row)), text)
        self._hits.inc(len(rows) - len(missing))
        self._misses.inc(len(missing))
        return texts  # type: ignore[return-value]  # every slot is filled by now

    def _plan_id(self, fields: frozenset[str], zone: tzinfo | None) -> int:
        # Keys carry a small number rather than the field set, which would be hashed again
        # for every row. Numbers are never reused, so a forgotten plan's texts cannot be
        # served for another plan.
        plan = (fields, zone)
        number = self._plans.get(plan)
        if number is None:
            if len(self._plans) >= _PLANS_LIMIT:
                self._plans.clear()
            number = self._plans[plan] = self._next_plan
            self._next_plan += 1
        return number

    def _keep(self, key: _Key, text: bytes) -> None:
        kept = self._texts
        kept[key] = (text, self._kept)
        kept.move_to_end(key)  # a text another thread kept meanwhile is replaced in place
        self._kept += 1
        while len(kept) > self.capacity:
            kept.popitem(last=False)
