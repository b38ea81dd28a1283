"""A fake BMC Redfish service: service root, sessions, chassis and their Power resources.

Shaped like a Dell iDRAC or HPE iLO answers (DMTF schemas, `@odata.id` links, Redfish error
bodies), so the real client code path runs against it. Runs on 127.0.0.1 in a thread, over
HTTPS when given an SSLContext. Faults for tests: `drop_sessions`, `delay`, `override`.

    node_bmc = FakeRedfishServer([FakeChassis("System.Embedded.1", PowerWindow(node_watts))])
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
import secrets
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

ROOT = "/redfish/v1"
SESSIONS = f"{ROOT}/SessionService/Sessions"
# Readable without credentials (Redfish spec, "Requests without authentication").
PUBLIC = {"/redfish", ROOT, f"{ROOT}/odata", f"{ROOT}/$metadata"}


@dataclass(frozen=True, slots=True)
class PowerControlReading:
    """One PowerControl entry in watts; None is serialised as JSON null, as BMCs do."""

    consumed_w: float | None
    min_w: float | None = None
    max_w: float | None = None
    avg_w: float | None = None


@dataclass(frozen=True, slots=True)
class FakeChassis:
    """A chassis; `readings` gives its PowerControl entries, None means no Power resource."""

    chassis_id: str
    readings: Callable[[], Sequence[PowerControlReading]] | None = None
    chassis_type: str = "RackMount"


class PowerWindow:
    """One PowerControl entry fed by a power callable, with min/max/average since start."""

    def __init__(self, watts: Callable[[], float]) -> None:
        self._watts = watts
        self._lock = threading.Lock()
        self._seen: list[float] = []

    def __call__(self) -> Sequence[PowerControlReading]:
        """Read the callable and report it with the interval's statistics, rounded like a BMC."""
        watts = round(self._watts())
        with self._lock:
            self._seen = [*self._seen[-999:], watts]
            seen = list(self._seen)
        return [PowerControlReading(watts, min(seen), max(seen), round(sum(seen) / len(seen)))]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the fake served: method, path and headers (lower-cased names)."""

    method: str
    path: str
    headers: dict[str, str]


def _error(message_id: str, message: str) -> dict[str, Any]:
    """A Redfish error body (DSP0266 "Error responses")."""
    return {
        "error": {
            "code": "Base.1.8.GeneralError",
            "message": "A general error has occurred. See ExtendedInfo for more information.",
            "@Message.ExtendedInfo": [
                {
                    "@odata.type": "#Message.v1_1_1.Message",
                    "MessageId": f"Base.1.8.{message_id}",
                    "Message": message,
                    "Severity": "Critical",
                    "MessageSeverity": "Critical",
                }
            ],
        }
    }


def _link(path: str) -> dict[str, str]:
    return {"@odata.id": path}


class FakeRedfishServer:
    """One BMC account (`username`/`password`), session or basic auth, per-chassis power."""

    def __init__(
        self,
        chassis: Sequence[FakeChassis],
        username: str = "root",
        password: str = "calvin",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.chassis = {c.chassis_id: c for c in chassis}
        self.username = username
        self.password = password
        self.tls = tls
        self.logins = 0
        self.failed_logins = 0
        self.logouts = 0
        self.requests: deque[RecordedRequest] = deque(maxlen=1000)
        self._sessions: dict[str, str] = {}  # token -> session id
        self._overrides: dict[str, tuple[int, bytes]] = {}
        self._delay: tuple[float, str] = (0.0, "/")
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:40123."""
        if self._httpd is None:
            raise RuntimeError("fake Redfish server not started")
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def start(self) -> FakeRedfishServer:
        """Listen on a free loopback port and serve in a daemon thread."""
        self._httpd = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # how soon stop() returns
            name="fake-redfish",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release delayed requests and close open connections."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        with self._lock:
            connections, self._connections = set(self._connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def drop_sessions(self) -> None:
        """Forget every session, as a BMC does on session timeout or reset."""
        with self._lock:
            self._sessions.clear()

    def active_sessions(self) -> int:
        """Sessions currently open."""
        with self._lock:
            return len(self._sessions)

    def delay(self, seconds: float, path_prefix: str = "/") -> None:
        """Hold every response to a path under `path_prefix` for `seconds` (a hung BMC)."""
        self._delay = (seconds, path_prefix)

    def override(self, path: str, status: int, body: bytes) -> None:
        """Answer GET `path` with this raw status and body once authenticated."""
        self._overrides[path] = (status, body)

    def _track(self, conn: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    def _authorised(self, headers: dict[str, str]) -> bool:
        token = headers.get("x-auth-token")
        if token is not None:
            with self._lock:
                return token in self._sessions
        kind, _, value = headers.get("authorization", "").partition(" ")
        if kind.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return self._credentials_ok(user, password)

    def _credentials_ok(self, user: Any, password: Any) -> bool:
        return (
            isinstance(user, str)
            and isinstance(password, str)
            and hmac.compare_digest(user.encode(), self.username.encode())
            and hmac.compare_digest(password.encode(), self.password.encode())
        )

    def _login(self, body: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
        try:
            request = json.loads(body or b"{}")
        except json.JSONDecodeError:
            return 400, {}, _error("MalformedJSON", "The request body submitted was malformed.")
        if not isinstance(request, dict) or not self._credentials_ok(
            request.get("UserName"), request.get("Password")
        ):
            with self._lock:
                self.failed_logins += 1
            return 401, {}, _error("InsufficientPrivilege", "Invalid user name or password.")
        token, session_id = secrets.token_hex(16), secrets.token_hex(8)
        with self._lock:
            self._sessions[token] = session_id
            self.logins += 1
        location = f"{SESSIONS}/{session_id}"
        return 201, {"X-Auth-Token": token, "Location": location}, self._session(session_id)

    def _logout(self, session_id: str) -> tuple[int, dict[str, Any] | None]:
        with self._lock:
            tokens = [t for t, s in self._sessions.items() if s == session_id]
            for token in tokens:
                del self._sessions[token]
            if tokens:
                self.logouts += 1
        if not tokens:
            return 404, _error("ResourceMissingAtURI", f"{SESSIONS}/{session_id} not found.")
        return 204, None

    def _session(self, session_id: str) -> dict[str, Any]:
        return {
            "@odata.id": f"{SESSIONS}/{session_id}",
            "@odata.type": "#Session.v1_3_0.Session",
            "Id": session_id,
            "Name": "User Session",
            "UserName": self.username,
        }

    def resource(self, path: str) -> dict[str, Any] | None:
        """The JSON body of a GET on `path`, or None when there is no such resource."""
        if path in ("/redfish", "/redfish/"):
            return {"v1": f"{ROOT}/"}
        if path == ROOT:
            return _service_root()
        if path == f"{ROOT}/SessionService":
            return _session_service()
        if path == SESSIONS:
            with self._lock:
                ids = sorted(set(self._sessions.values()))
            return _collection(SESSIONS, "#SessionCollection.SessionCollection", ids)
        if path.startswith(f"{SESSIONS}/"):
            with self._lock:
                known = path.rsplit("/", 1)[1] in self._sessions.values()
            return self._session(path.rsplit("/", 1)[1]) if known else None
        if path == f"{ROOT}/Chassis":
            return _collection(path, "#ChassisCollection.ChassisCollection", list(self.chassis))
        parts = path.removeprefix(f"{ROOT}/Chassis/").split("/")
        if not path.startswith(f"{ROOT}/Chassis/") or parts[0] not in self.chassis:
            return None
        chassis = self.chassis[parts[0]]
        if len(parts) == 1:
            return _chassis(chassis)
        if parts[1:] == ["Power"] and chassis.readings is not None:
            return _power(chassis.chassis_id, chassis.readings())
        return None


def _collection(path: str, odata_type: str, ids: Sequence[str]) -> dict[str, Any]:
    return {
        "@odata.id": path,
        "@odata.type": odata_type,
        "Name": odata_type.rsplit(".", 1)[1],
        "Members": [_link(f"{path}/{i}") for i in ids],
        "Members@odata.count": len(ids),
    }


def _service_root() -> dict[str, Any]:
    return {
        "@odata.id": ROOT,
        "@odata.type": "#ServiceRoot.v1_11_0.ServiceRoot",
        "Id": "RootService",
        "Name": "Root Service",
        "RedfishVersion": "1.15.0",
        "UUID": "3f6b8c2e-0d4a-4e55-9b1c-5a7e2d9f8c10",
        "Product": "Simulated BMC",
        "Vendor": "CEEMS simulator",
        "Chassis": _link(f"{ROOT}/Chassis"),
        "Systems": _link(f"{ROOT}/Systems"),
        "Managers": _link(f"{ROOT}/Managers"),
        "SessionService": _link(f"{ROOT}/SessionService"),
        "AccountService": _link(f"{ROOT}/AccountService"),
        "Links": {"Sessions": _link(SESSIONS)},
        "ProtocolFeaturesSupported": {"ExpandQuery": {"ExpandAll": False}, "SelectQuery": False},
    }


def _session_service() -> dict[str, Any]:
    return {
        "@odata.id": f"{ROOT}/SessionService",
        "@odata.type": "#SessionService.v1_1_8.SessionService",
        "Id": "SessionService",
        "Name": "Session Service",
        "ServiceEnabled": True,
        "SessionTimeout": 1800,
        "Sessions": _link(SESSIONS),
    }


def _chassis(chassis: FakeChassis) -> dict[str, Any]:
    path = f"{ROOT}/Chassis/{chassis.chassis_id}"
    doc: dict[str, Any] = {
        "@odata.id": path,
        "@odata.type": "#Chassis.v1_14_0.Chassis",
        "Id": chassis.chassis_id,
        "Name": f"Chassis {chassis.chassis_id}",
        "ChassisType": chassis.chassis_type,
        "Manufacturer": "CEEMS",
        "Model": "Simulated Node",
        "PowerState": "On",
        "Status": {"State": "Enabled", "Health": "OK", "HealthRollup": "OK"},
        "Links": {
            "ComputerSystems": [_link(f"{ROOT}/Systems/System.Embedded.1")],
            "ManagedBy": [_link(f"{ROOT}/Managers/BMC.Embedded.1")],
        },
    }
    if chassis.readings is not None:
        doc["Power"] = _link(f"{path}/Power")
        doc["Thermal"] = _link(f"{path}/Thermal")
    return doc


def _power(chassis_id: str, readings: Sequence[PowerControlReading]) -> dict[str, Any]:
    path = f"{ROOT}/Chassis/{chassis_id}/Power"
    controls = [
        {
            "@odata.id": f"{path}#/PowerControl/{i}",
            "MemberId": str(i),
            "Name": "System Power Control" if i == 0 else f"Power Control {i}",
            "PowerConsumedWatts": r.consumed_w,
            "PowerCapacityWatts": 1400,
            "PowerMetrics": {
                "IntervalInMin": 60,
                "MinConsumedWatts": r.min_w,
                "MaxConsumedWatts": r.max_w,
                "AverageConsumedWatts": r.avg_w,
            },
            "PowerLimit": {"LimitInWatts": None, "LimitException": "NoAction"},
            "RelatedItem": [_link(f"{ROOT}/Chassis/{chassis_id}")],
            "Status": {"State": "Enabled", "Health": "OK"},
        }
        for i, r in enumerate(readings)
    ]
    return {
        "@odata.id": path,
        "@odata.type": "#Power.v1_6_0.Power",
        "Id": "Power",
        "Name": "Power",
        "PowerControl": controls,
        "PowerControl@odata.count": len(controls),
        "PowerSupplies": [],
        "Voltages": [],
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        fake: FakeRedfishServer,
    ) -> None:
        super().__init__(address, handler)
        self.fake = fake

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        if self.fake.tls is not None:
            # Handshake in the connection's own thread, so a stuck client blocks no other.
            conn = self.fake.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        self.fake._track(conn, True)
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        self.fake._track(request, False)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (timeouts, refused certificates) are expected in tests.
        log.debug("fake redfish connection error", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as BMCs and the client's requests.Session use
    # Headers and body go out in two writes; with Nagle on, delayed ACKs add 40 ms to each.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake redfish request", extra={"request": format % args})

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _begin(self) -> tuple[FakeRedfishServer, str, dict[str, str], bytes]:
        fake = self.server.fake
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        path = path.rstrip("/") if path != "/" else path
        headers = self._headers()
        body = self.rfile.read(int(headers.get("content-length") or 0))
        fake.requests.append(RecordedRequest(self.command, path, headers))
        seconds, prefix = fake._delay
        if seconds > 0 and path.startswith(prefix):
            fake._stopping.wait(seconds)
        return fake, path, headers, body

    def _send(
        self, status: int, body: dict[str, Any] | bytes | None, extra: dict[str, str] | None = None
    ) -> None:
        data = (
            body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
        )
        self.send_response(status)
        if status != 204:
            self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("OData-Version", "4.0")
        self.send_header("Cache-Control", "no-cache")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="RedfishService"')
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if status != 204:
            self.wfile.write(data)

    def _unauthorised(self) -> None:
        self._send(401, _error("NoValidSession", "There is no valid session established."))

    def do_GET(self) -> None:
        fake, path, headers, _ = self._begin()
        if path not in PUBLIC and not fake._authorised(headers):
            return self._unauthorised()
        if path in fake._overrides:
            status, raw = fake._overrides[path]
            return self._send(status, raw)
        doc = fake.resource(path)
        if doc is None:
            return self._send(404, _error("ResourceMissingAtURI", f"{path} was not found."))
        self._send(200, doc)

    def do_POST(self) -> None:
        fake, path, _, body = self._begin()
        if path != SESSIONS:
            return self._send(405, _error("ActionNotSupported", f"POST is not allowed on {path}."))
        status, extra, doc = fake._login(body)
        self._send(status, doc, extra)

    def do_DELETE(self) -> None:
        fake, path, headers, _ = self._begin()
        if not fake._authorised(headers):
            return self._unauthorised()
        if not path.startswith(f"{SESSIONS}/"):
            return self._send(405, _error("ActionNotSupported", f"DELETE not allowed on {path}."))
        status, doc = fake._logout(path.rsplit("/", 1)[1])
        self._send(status, doc)
