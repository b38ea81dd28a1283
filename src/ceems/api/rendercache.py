"""Rendered unit JSON kept between requests, keyed by the stored row it was rendered from.

Most of a `/units` answer is finished units that never change again, and the same lists are
asked for over and over (dashboards refresh, members of a project open the same list).
Rendering, not the query, is most of such a request: decoding a row's maps and writing
them in CEEMS' format costs several times the SQL. Each rendered unit is kept under the
row exactly as the store returned it and the way it was rendered (fields, time zone): a
row that changed in any column is another key, so a stale text is never served; texts no
request asks for any more age out, oldest first.

Whole answers are kept too, with the rows they were made from: when a list comes back from
the store exactly as before (a dashboard refreshing), its body, gzip'd or not, is served as
it was, without looking up each unit, joining the texts or compressing them again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from datetime import tzinfo
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from ceems.api.envelope import GZIP_MINIMUM_BYTES, gzip_body, success_body
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
# (plan number, number of rows, first row, last row): where an answer is looked for; the
# whole list of rows is compared before it is served.
_AnswerKey = tuple[int, int, Any, Any]


class _Answer:
    """A `/units` body and the rows it was made from (the gzip'd body once asked for)."""

    __slots__ = ("body", "gzipped", "rows")

    def __init__(self, rows: Sequence[Any], body: bytes) -> None:
        self.rows = rows
        self.body = body
        self.gzipped: bytes | None = None


class UnitTexts:
    """Rendered units, at most `capacity`, oldest out first, shared by the request threads.

    A text served from the older half is moved back to the young end, so that units in use
    stay: nearly least-recently-used, without moving an entry on every hit (each move looks
    the key up again, comparing the whole row: half the cost of a cached answer).

    `capacity` 0 renders every unit afresh. A list longer than `capacity` is rendered
    without the cache, so that one large admin listing does not push out every user's units.
    Whole answers are kept for at most `capacity // 2` units in all, least recently used out
    first.
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
        self._answers: OrderedDict[_AnswerKey, _Answer] = OrderedDict()
        self._answer_units = 0  # rows of the kept answers
        self._lock = threading.Lock()
        self._answer_hits = Counter(
            "ceems_api_server_units_cache_answer_hits_total",
            "/units answers served whole: the same rows as a kept answer's.",
            registry=registry,
        )
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

    def answer(
        self,
        found: UnitRows,
        fields: Sequence[str],
        zone: tzinfo | None,
        now_ms: int,
        gzip: bool,
    ) -> tuple[bytes, bool]:
        """The `/units` body of these rows, envelope included, gzip'd when `gzip` and the
        body is long enough to be worth it; returns the body and whether it is gzip'd."""
        rows = found.rows
        key: _AnswerKey | None = None
        entry: _Answer | None = None
        if self._answerable(found, fields):
            with self._lock:
                key = (self._plan_id(frozenset(fields), zone), len(rows), rows[0], rows[-1])
                entry = self._answers.get(key)
                if entry is not None:
                    self._answers.move_to_end(key)
            # The store's rows as they are now against the kept ones, every column of every
            # row (in C: a tenth of looking each unit up).
            if entry is not None and entry.rows != rows:
                entry = None
        if entry is None:
            entry = _Answer(rows, success_body(self.render(found, fields, zone, now_ms)))
            if key is not None:
                with self._lock:
                    self._keep_answer(key, entry)
        else:
            self._answer_hits.inc()
            self._hits.inc(len(rows))
        if not gzip or len(entry.body) < GZIP_MINIMUM_BYTES:
            return entry.body, False
        if entry.gzipped is None:
            # Two threads may both compress a new answer: the same bytes, either kept.
            entry.gzipped = gzip_body(entry.body)
        return entry.gzipped, True

    def _answerable(self, found: UnitRows, fields: Sequence[str]) -> bool:
        rows = found.rows
        if not rows or len(rows) > self.capacity // 2 or type(rows[0]) is not tuple:
            # Empty lists cost nothing to make; SQLAlchemy Rows would keep their result's
            # metadata alive, and lists past the budget would push out every other answer.
            return False
        if "elapsed" in fields:
            # A running unit's `elapsed` moves with the clock.
            moving = found.names.index("ended_at_ts")
            return all(row[moving] for row in rows)
        return True

    def _keep_answer(self, key: _AnswerKey, entry: _Answer) -> None:
        answers = self._answers
        replaced = answers.pop(key, None)
        if replaced is not None:
            self._answer_units -= len(replaced.rows)
        answers[key] = entry
        self._answer_units += len(entry.rows)
        while self._answer_units > self.capacity // 2:
            _, oldest = answers.popitem(last=False)
            self._answer_units -= len(oldest.rows)

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
