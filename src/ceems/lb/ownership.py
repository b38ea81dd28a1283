"""Who may see which units: the API server's store read directly, or its `/units/verify`.

Answers are cached for `cache_ttl`: a dashboard sends the same uuids with every panel and
refresh, and a unit's owner never changes. A store or API server that cannot answer makes
the request fail with 503; it never lets a query through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable
from typing import Protocol

import httpx
import sqlalchemy as sa

from ceems.api.store.engine import read_only_engine
from ceems.api.store.errors import StoreError
from ceems.api.store.queries import is_admin, verify_ownership
from ceems.lb.config import ApiServerSection

# uuids per /units/verify request: keeps the request line well under servers' 16 KiB limits.
VERIFY_BATCH = 200
CACHE_LIMIT = 200_000


class OwnershipUnavailableError(Exception):
    """The store or the API server could not answer; the request is refused with 503."""


class Ownership(Protocol):
    """The source of truth on admins and unit ownership."""

    async def is_admin(self, user: str) -> bool:
        """Whether `user` is an admin (sees every unit, may use every endpoint)."""
        ...

    async def owns(self, user: str, cluster_id: str, uuids: frozenset[str]) -> bool:
        """Whether `user` may see every one of `uuids` in `cluster_id` (unknown uuids: no)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class StoreOwnership:
    """Reads the API server's store read-only (SQLite or PostgreSQL): the fast path."""

    def __init__(self, engine: sa.Engine, config_admins: Collection[str] = ()) -> None:
        self.engine = engine
        self.config_admins = frozenset(config_admins)

    def _is_admin(self, user: str) -> bool:
        with self.engine.connect() as conn:
            return is_admin(conn, user)

    def _owns(self, user: str, cluster_id: str, uuids: frozenset[str]) -> bool:
        with self.engine.connect() as conn:
            return verify_ownership(conn, user, uuids, [cluster_id])

    async def is_admin(self, user: str) -> bool:
        if user in self.config_admins:
            return True
        try:
            return await asyncio.to_thread(self._is_admin, user)
        except sa.exc.SQLAlchemyError as err:
            raise OwnershipUnavailableError(f"store: {type(err).__name__}") from err

    async def owns(self, user: str, cluster_id: str, uuids: frozenset[str]) -> bool:
        try:
            return await asyncio.to_thread(self._owns, user, cluster_id, uuids)
        except sa.exc.SQLAlchemyError as err:
            raise OwnershipUnavailableError(f"store: {type(err).__name__}") from err

    async def close(self) -> None:
        self.engine.dispose()


class ApiOwnership:
    """Asks the API server: `/units/verify` for units, `/clusters/admin` for admins."""

    def __init__(self, client: httpx.AsyncClient, user_header: str, prefix: str = "") -> None:
        self.client = client
        self.user_header = user_header
        self.prefix = prefix.rstrip("/")

    async def _get(self, path: str, user: str, params: httpx.QueryParams) -> bool:
        try:
            response = await self.client.get(
                f"{self.prefix}/api/v1{path}", params=params, headers={self.user_header: user}
            )
        except httpx.HTTPError as err:
            raise OwnershipUnavailableError(f"API server: {type(err).__name__}") from err
        if response.status_code == 200:
            return True
        if response.status_code in (401, 403):
            return False
        raise OwnershipUnavailableError(f"API server answered {response.status_code}")

    async def is_admin(self, user: str) -> bool:
        return await self._get("/clusters/admin", user, httpx.QueryParams())

    async def owns(self, user: str, cluster_id: str, uuids: frozenset[str]) -> bool:
        ordered = sorted(uuids)
        for start in range(0, len(ordered), VERIFY_BATCH):
            batch = ordered[start : start + VERIFY_BATCH]
            params = httpx.QueryParams([("cluster_id", cluster_id), *(("uuid", u) for u in batch)])
            if not await self._get("/units/verify", user, params):
                return False
        return bool(ordered)

    async def close(self) -> None:
        await self.client.aclose()


class CachedOwnership:
    """Remembers admin answers and granted units for `ttl_s` seconds.

    Grants are kept per unit, and per request's whole set of units: a dashboard panel asks
    for the same set with every refresh, and one lookup replaces one per unit. A set's
    grant expires with the earliest of its units' grants, so it never outlives what the
    source last confirmed by more than `ttl_s`, and it is keyed by user and cluster.
    """

    def __init__(self, inner: Ownership, ttl_s: float) -> None:
        self.inner = inner
        self.ttl_s = ttl_s
        self._admins: dict[str, tuple[bool, float]] = {}
        self._granted: dict[tuple[str, str, str], float] = {}
        self._granted_sets: dict[tuple[str, str, frozenset[str]], float] = {}
        self._set_units = 0

    def _fresh(self, expiry: float) -> bool:
        return expiry > time.monotonic()

    async def is_admin(self, user: str) -> bool:
        cached = self._admins.get(user)
        if cached is not None and self._fresh(cached[1]):
            return cached[0]
        answer = await self.inner.is_admin(user)
        if len(self._admins) > CACHE_LIMIT:
            self._admins.clear()
        self._admins[user] = (answer, time.monotonic() + self.ttl_s)
        return answer

    async def owns(self, user: str, cluster_id: str, uuids: frozenset[str]) -> bool:
        if not uuids:
            return False  # as the sources: nothing named, nothing granted
        whole = (user, cluster_id, uuids)
        if self._fresh(self._granted_sets.get(whole, 0.0)):
            return True
        now = time.monotonic()
        expiries = [self._granted.get((user, cluster_id, u), 0.0) for u in uuids]
        unknown = frozenset(u for u, e in zip(uuids, expiries, strict=True) if e <= now)
        if unknown:
            # Refusals are not cached: a unit may reach the store a moment after it starts.
            if not await self.inner.owns(user, cluster_id, unknown):
                return False
            self._remember(user, cluster_id, unknown)
            expiries = [self._granted.get((user, cluster_id, u), 0.0) for u in uuids]
        if whole not in self._granted_sets:
            # bounded by units held, like the per-unit grants: sets may be large
            self._set_units += len(uuids)
            if self._set_units > CACHE_LIMIT:
                self._granted_sets.clear()
                self._set_units = len(uuids)
        self._granted_sets[whole] = min(expiries)
        return True

    def _remember(self, user: str, cluster_id: str, uuids: Iterable[str]) -> None:
        if len(self._granted) > CACHE_LIMIT:
            self._granted.clear()
            self._granted_sets.clear()
            self._set_units = 0
        expiry = time.monotonic() + self.ttl_s
        for uuid in uuids:
            self._granted[(user, cluster_id, uuid)] = expiry

    async def close(self) -> None:
        await self.inner.close()


def build_ownership(section: ApiServerSection, ttl_s: float) -> Ownership:
    """The store when `data` is configured (fast, no network), else the API server's URL."""
    if section.data is not None:
        try:
            engine = read_only_engine(section.data)
        except StoreError as err:
            raise OwnershipUnavailableError(str(err)) from err
        inner: Ownership = StoreOwnership(engine, section.admin.users)
    else:
        assert section.web is not None
        web = section.web
        client = httpx.AsyncClient(**web.client_kwargs())
        inner = ApiOwnership(client, web.user_header_names[0])
    return CachedOwnership(inner, ttl_s) if ttl_s > 0 else inner
