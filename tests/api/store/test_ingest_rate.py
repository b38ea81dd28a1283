"""Ingest rate: a window of 10,000 units commits in seconds, new or updated, on both engines.

The figure of record comes from `python -m tests.api.store.ingest_rate` (100,000 units); this
test catches regressions of an order of magnitude, such as a lookup that stops using its index.
"""

from __future__ import annotations

from ceems.api.config import DataConfig
from tests.api.store.ingest_rate import measure

UNITS = 10_000
# Units per second a slow CI machine still does; the development VM (2 cores) does about
# 3-4 times this on SQLite and 2-3 times on PostgreSQL.
FLOOR = {"sqlite": 3_000, "postgresql": 2_000}


def test_ten_thousand_units_commit_in_seconds(data: DataConfig) -> None:
    engine = "postgresql" if data.url else "sqlite"
    new, updated = measure(data, UNITS, commits=2)
    print(f"{engine}: {new:,.0f} new units/s, {updated:,.0f} updated units/s")
    assert new > FLOOR[engine]
    assert updated > FLOOR[engine]
