"""A Redfish session on the BMC through DMTF's python-redfish-library, reading chassis power.

Imported only when the redfish collector is built, as it loads `redfish` and `requests`.
The library is used with these workarounds, each checked against redfish 3.4.2:
- it verifies TLS certificates only when given a CA file, so one is always passed unless
  `insecure_skip_verify` is set;
- it retries a failed request ten times with a one-second pause, so retries are off: the
  sampler retries at the next interval instead;
- it does not log in again when a session expires, so a 401 triggers one re-login here;
- its debug log prints the X-Auth-Token header, so its logger is kept at WARNING.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import certifi
from redfish.rest.v1 import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
    AuthMethod,
    HttpClient,
    InvalidCredentialsError,
    JsonDecodingError,
    RetriesExhaustedError,
    ServerDownOrUnreachableError,
    SessionCreationError,
)

from ceems.exporter.collectors.redfish import (
    PowerStats,
    RedfishConfig,
    chassis_label,
    parse_power,
)

log = logging.getLogger(__name__)

REDFISH_URL_HEADER = "X-Redfish-Url"  # read by CEEMS' redfish_proxy to pick the BMC
ROOT = "/redfish/v1/"
# After refused credentials, wait this long before the next login, doubling up to the cap:
# BMCs lock accounts out after a few failed logins.
LOGIN_BACKOFF_S = 30.0
LOGIN_BACKOFF_MAX_S = 600.0


class RedfishError(Exception):
    """A Redfish request failed: unreachable, timed out, refused or answered garbage."""


def _ca_bundle(config: RedfishConfig) -> str | None:
    """The CA file to verify the BMC with, or None to skip verification."""
    if config.insecure_skip_verify:
        return None
    if config.ca_file is not None:
        return str(config.ca_file)
    # The system store first, as Go's crypto/tls does for CEEMS; requests' bundle otherwise.
    return ssl.get_default_verify_paths().cafile or certifi.where()


def _link(doc: Any, key: str) -> str | None:
    """The `@odata.id` of a navigation property, or None when absent."""
    value = doc.get(key) if isinstance(doc, dict) else None
    target = value.get("@odata.id") if isinstance(value, dict) else None
    return target if isinstance(target, str) and target else None


class RedfishPowerSource:
    """Reads every chassis' Power resource through one logged-in client, kept across calls.

    Chassis are discovered at the first call and again after any failure, when the client is
    also logged out and rebuilt, as CEEMS does. Called from the sampler thread only; `close`
    may come from another thread, hence the lock.
    """

    def __init__(self, config: RedfishConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._client: Any = None
        self._chassis: list[tuple[str, str]] | None = None  # (chassis label, Power path)
        self._login_refused = 0
        self._next_login_at = 0.0
        self._closed = False
        logging.getLogger("redfish").setLevel(logging.WARNING)

    def __call__(self) -> dict[str, PowerStats]:
        """Power of every chassis that has a Power resource, summed per chassis label."""
        with self._lock:
            if self._closed:  # a sampler fetch racing the exporter's shutdown
                raise RedfishError("redfish source is closed")
            try:
                if self._client is None:
                    self._client = self._connect()
                if self._chassis is None:
                    self._chassis = self._discover()
                readings: dict[str, PowerStats] = {}
                for label, path in self._chassis:
                    power = parse_power(self._get(path), path)
                    readings[label] = readings.get(label, PowerStats()) + power
                return readings
            except Exception:
                self._reset()
                raise

    def close(self) -> None:
        """Log out, waiting at most two timeouts for a fetch in progress to end."""
        if not self._lock.acquire(timeout=2 * self._config.timeout_s):
            log.warning("redfish session left open: a request is still running")
            return
        try:
            self._closed = True
            self._reset()
        finally:
            self._lock.release()

    def _connect(self) -> Any:
        if self._clock() < self._next_login_at:
            raise RedfishError(
                f"login refused earlier; next attempt in {self._next_login_at - self._clock():.0f}s"
            )
        config = self._config
        try:
            client = HttpClient(
                base_url=config.endpoint,
                username=config.username,
                password=config.password,
                cafile=_ca_bundle(config),
                timeout=config.timeout_s,
                max_retry=0,
                check_connectivity=False,
            )
            # Default headers of the library's requests.Session reach every request it makes,
            # including its own service-root and logout calls that take no headers argument.
            client._session.headers[REDFISH_URL_HEADER] = config.bmc_url
            client.get_root_object()
            auth = AuthMethod.SESSION if config.use_session_token else AuthMethod.BASIC
            client.login(auth=auth)
        except InvalidCredentialsError as err:
            backoff = min(LOGIN_BACKOFF_S * 2**self._login_refused, LOGIN_BACKOFF_MAX_S)
            self._login_refused += 1
            self._next_login_at = self._clock() + backoff
            raise RedfishError(
                f"{config.endpoint}: credentials refused for user {config.username!r}"
            ) from err
        except (RetriesExhaustedError, ServerDownOrUnreachableError) as err:
            raise RedfishError(f"{config.endpoint}: {_cause(err)}") from err
        except (JsonDecodingError, SessionCreationError) as err:
            raise RedfishError(f"{config.endpoint}: {str(err).splitlines()[0]}") from err
        self._login_refused = 0
        log.info(
            "redfish login",
            extra={"endpoint": config.endpoint, "session": config.use_session_token},
        )
        return client

    def _get(self, path: str) -> dict[str, Any]:
        response = self._request(path)
        if response.status == 401 and self._config.use_session_token:
            # The BMC dropped our session (timeout, reset, another client's purge): log in again.
            log.info("redfish session expired", extra={"endpoint": self._config.endpoint})
            self._client.set_session_key(None)
            self._client.set_session_location(None)
            try:
                self._client.login(auth=AuthMethod.SESSION)
            except InvalidCredentialsError as err:
                raise RedfishError(f"{self._config.endpoint}: credentials refused") from err
            response = self._request(path)
        if response.status != 200:
            raise RedfishError(f"GET {path}: HTTP {response.status}")
        try:
            doc = response.dict
        except JsonDecodingError as err:
            raise RedfishError(f"GET {path}: response is not JSON") from err
        if not isinstance(doc, dict):
            raise RedfishError(f"GET {path}: response is not a JSON object")
        return doc

    def _request(self, path: str) -> Any:
        try:
            return self._client.get(path)
        except (RetriesExhaustedError, JsonDecodingError) as err:
            raise RedfishError(f"GET {path}: {_cause(err)}") from err

    def _discover(self) -> list[tuple[str, str]]:
        root = self._client.root
        collection: str | None = _link(root, "Chassis") or f"{ROOT}Chassis"
        members: list[Any] = []
        while collection:  # collections may be paged with Members@odata.nextLink
            page = self._get(collection)
            members.extend(page.get("Members") or [])
            next_link = page.get("Members@odata.nextLink")
            collection = next_link if isinstance(next_link, str) else None
        chassis: list[tuple[str, str]] = []
        for member in members:
            path = member.get("@odata.id") if isinstance(member, dict) else None
            if not isinstance(path, str):
                raise RedfishError(f"chassis collection member without @odata.id: {member!r}")
            doc = self._get(path)
            chassis_id = doc.get("Id")
            if not isinstance(chassis_id, str):
                raise RedfishError(f"GET {path}: chassis without an Id")
            power = _link(doc, "Power")
            if power is None:  # enclosures, backplanes: nothing to read, as CEEMS skips them
                log.debug("chassis without power", extra={"chassis": chassis_id})
                continue
            chassis.append((chassis_label(chassis_id), power))
        log.info("redfish chassis found", extra={"chassis": ",".join(c for c, _ in chassis)})
        return chassis

    def _reset(self) -> None:
        client, self._client, self._chassis = self._client, None, None
        if client is None:
            return
        try:
            client.logout()
        except Exception as err:  # the session expires on the BMC by itself
            log.warning(
                "redfish logout failed",
                extra={"endpoint": self._config.endpoint, "err": _cause(err)},
            )


def _cause(err: BaseException) -> str:
    """The library's RetriesExhaustedError says nothing; its cause says what went wrong."""
    inner = err.__cause__ or err
    return f"{type(inner).__name__}: {inner}"
