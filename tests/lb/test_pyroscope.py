"""The Pyroscope frontend end to end: real `ceems_lb` in front of a fake Pyroscope over HTTP.

Pyroscope cannot be installed here, so a small server on loopback answers the Connect calls
Grafana makes (`/querier.v1.QuerierService/...`, unary POSTs in `application/proto` or
`application/json`) and `/ready`. It decodes requests with the real protobuf runtime and
the `querier.v1` / `types.v1` message shapes of Pyroscope's API (built here at run time), so
what it records is what Pyroscope would read, repeated-field and JSON semantics included,
and it answers from a small set of profiles, filtered by the request's selectors.

A non-admin may only make the three read calls, each selector pinned to units they may see
by `service_name`; everything refused is answered by the LB and never reaches the fake.
Also unit tests of `protowire.string_fields`, the wire reader behind those checks.
"""

from __future__ import annotations

import gzip
import http.server
import json
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
from google.protobuf import (  # type: ignore[import-untyped, unused-ignore]
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
)
from google.protobuf.message import DecodeError  # type: ignore[import-untyped, unused-ignore]

from ceems.lb.protowire import WireError, string_fields
from tests.conftest import free_port
from tests.lb.stack import T0, LbProcess, lb_config

# ---------------------------------------------------------------- Pyroscope's messages

_F = descriptor_pb2.FieldDescriptorProto
STRING, INT64, BYTES, MESSAGE = _F.TYPE_STRING, _F.TYPE_INT64, _F.TYPE_BYTES, _F.TYPE_MESSAGE
REPEATED = True
# (field name, number, type, repeated, message type): api/types/v1/types.proto and
# api/querier/v1/querier.proto of grafana/pyroscope, the fields these tests use.
FieldSpec = tuple[str, int, int, bool, str]
TYPES_V1: dict[str, list[FieldSpec]] = {
    "LabelPair": [("name", 1, STRING, False, ""), ("value", 2, STRING, False, "")],
    "Labels": [("labels", 1, MESSAGE, REPEATED, ".types.v1.LabelPair")],
    "ProfileType": [
        ("ID", 1, STRING, False, ""), ("name", 2, STRING, False, ""),
        ("sample_type", 4, STRING, False, ""), ("sample_unit", 5, STRING, False, ""),
        ("period_type", 6, STRING, False, ""), ("period_unit", 7, STRING, False, ""),
    ],
    "LabelValuesRequest": [
        ("name", 1, STRING, False, ""), ("matchers", 2, STRING, REPEATED, ""),
        ("start", 3, INT64, False, ""), ("end", 4, INT64, False, ""),
    ],
    "LabelValuesResponse": [("names", 1, STRING, REPEATED, "")],
    "LabelNamesRequest": [
        ("matchers", 1, STRING, REPEATED, ""),
        ("start", 2, INT64, False, ""), ("end", 3, INT64, False, ""),
    ],
    "LabelNamesResponse": [("names", 1, STRING, REPEATED, "")],
}  # fmt: skip
QUERIER_V1: dict[str, list[FieldSpec]] = {
    "ProfileTypesRequest": [("start", 1, INT64, False, ""), ("end", 2, INT64, False, "")],
    "ProfileTypesResponse": [("profile_types", 1, MESSAGE, REPEATED, ".types.v1.ProfileType")],
    "SeriesRequest": [
        ("matchers", 1, STRING, REPEATED, ""), ("label_names", 2, STRING, REPEATED, ""),
        ("start", 3, INT64, False, ""), ("end", 4, INT64, False, ""),
    ],
    "SeriesResponse": [("labels_set", 2, MESSAGE, REPEATED, ".types.v1.Labels")],
    "SelectMergeStacktracesRequest": [
        ("profile_typeID", 1, STRING, False, ""), ("label_selector", 2, STRING, False, ""),
        ("start", 3, INT64, False, ""), ("end", 4, INT64, False, ""),
        ("max_nodes", 5, INT64, False, ""),
    ],
    "Level": [("values", 1, INT64, REPEATED, "")],
    "FlameGraph": [
        ("names", 1, STRING, REPEATED, ""), ("levels", 2, MESSAGE, REPEATED, ".querier.v1.Level"),
        ("total", 3, INT64, False, ""), ("max_self", 4, INT64, False, ""),
    ],
    "SelectMergeStacktracesResponse": [
        ("flamegraph", 1, MESSAGE, False, ".querier.v1.FlameGraph"), ("tree", 2, BYTES, False, ""),
    ],
}  # fmt: skip


def _file(package: str, messages: dict[str, list[FieldSpec]], deps: list[str]) -> Any:
    proto = descriptor_pb2.FileDescriptorProto(
        name=package.replace(".", "/") + ".proto", package=package, syntax="proto3",
        dependency=deps,
    )  # fmt: skip
    for name, fields in messages.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, repeated, type_name in fields:
            added = message.field.add(
                name=field_name, number=number, type=kind,
                label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
            )  # fmt: skip
            if type_name:
                added.type_name = type_name
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file("types.v1", TYPES_V1, []))
_POOL.Add(_file("querier.v1", QUERIER_V1, ["types/v1.proto"]))


def message_class(full_name: str) -> Any:
    """The generated class of one message (e.g. `querier.v1.FlameGraph`)."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))


SMST_REQUEST = message_class("querier.v1.SelectMergeStacktracesRequest")
SMST_RESPONSE = message_class("querier.v1.SelectMergeStacktracesResponse")
SERVICE = "/querier.v1.QuerierService/"
SMST = SERVICE + "SelectMergeStacktraces"
LABEL_NAMES = SERVICE + "LabelNames"
LABEL_VALUES = SERVICE + "LabelValues"
# Request and response types of the calls the fake answers.
CALLS = {
    "SelectMergeStacktraces": (SMST_REQUEST, SMST_RESPONSE),
    "LabelNames": (
        message_class("types.v1.LabelNamesRequest"),
        message_class("types.v1.LabelNamesResponse"),
    ),
    "LabelValues": (
        message_class("types.v1.LabelValuesRequest"),
        message_class("types.v1.LabelValuesResponse"),
    ),
    "ProfileTypes": (
        message_class("querier.v1.ProfileTypesRequest"),
        message_class("querier.v1.ProfileTypesResponse"),
    ),
    "Series": (
        message_class("querier.v1.SeriesRequest"),
        message_class("querier.v1.SeriesResponse"),
    ),
}
PROTO, JSON = "application/proto", "application/json"
PROFILE = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
START_MS, END_MS = T0 * 1000, (T0 + 600) * 1000

# ---------------------------------------------------------------- hand-made protobuf


def varint(value: int) -> bytes:
    """`value` as a base-128 varint (negative int64 as its two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire: int) -> bytes:
    """A field key."""
    return varint(number << 3 | wire)


def text_field(number: int, value: str | bytes) -> bytes:
    """A length-delimited field."""
    raw = value.encode() if isinstance(value, str) else value
    return tag(number, 2) + varint(len(raw)) + raw


def int_field(number: int, value: int) -> bytes:
    """An int64 field."""
    return tag(number, 0) + varint(value)


def smst_proto(*selectors: str, profile: str = PROFILE) -> bytes:
    """SelectMergeStacktracesRequest: 1 profile_typeID, 2 label_selector (each given one),
    3 start, 4 end (ms), 5 max_nodes; encoded by hand."""
    body = text_field(1, profile)
    body += b"".join(text_field(2, s) for s in selectors)
    return body + int_field(3, START_MS) + int_field(4, END_MS) + int_field(5, 16384)


def smst_json(selector: str, key: str = "labelSelector") -> bytes:
    """The same request as Connect's JSON (protojson: camelCase keys, int64 as strings)."""
    return json.dumps(
        {"profileTypeID": PROFILE, key: selector, "start": str(START_MS), "end": str(END_MS),
         "maxNodes": "16384"}
    ).encode()  # fmt: skip


def label_names_proto(*matchers: str) -> bytes:
    """LabelNamesRequest: 1 matchers (repeated), 2 start, 3 end."""
    body = b"".join(text_field(1, m) for m in matchers)
    return body + int_field(2, START_MS) + int_field(3, END_MS)


def label_values_proto(name: str, *matchers: str) -> bytes:
    """LabelValuesRequest: 1 name, 2 matchers (repeated), 3 start, 4 end."""
    body = text_field(1, name) + b"".join(text_field(2, m) for m in matchers)
    return body + int_field(3, START_MS) + int_field(4, END_MS)


# ---------------------------------------------------------------- the fake Pyroscope

# The profiles each cluster's fake holds: one series per unit (service_name is the uuid).
PROFILES = {
    "slurm-0": [
        {"service_name": "a-1", "ceems_id": "slurm-0", "hostname": "node-1"},
        {"service_name": "a-2", "ceems_id": "slurm-0", "hostname": "node-1"},
        {"service_name": "b-1", "ceems_id": "slurm-0", "hostname": "node-2"},
    ],
    "slurm-1": [
        {"service_name": "a-9", "ceems_id": "slurm-1", "hostname": "node-7"},
        {"service_name": "b-9", "ceems_id": "slurm-1", "hostname": "node-8"},
    ],
}


class ConnectError(Exception):
    """Answered as a Connect error: 400 with `{"code": "invalid_argument", ...}`."""


def _matches(labels: dict[str, str], matcher: Any) -> bool:
    value = labels.get(matcher.name, "")
    op = matcher.op
    if op == promql_parser.MatchOp.Equal:
        return bool(value == matcher.value)
    if op == promql_parser.MatchOp.NotEqual:
        return bool(value != matcher.value)
    found = re.fullmatch(matcher.value, value) is not None
    return found if op == promql_parser.MatchOp.Re else not found


def select(cluster: str, selectors: list[str]) -> list[dict[str, str]]:
    """The profiles any of `selectors` selects (no selector, or `{}`: all of them)."""
    wanted = [s for s in selectors if s.strip() not in ("", "{}")]
    if not wanted:
        return PROFILES[cluster]
    chosen = []
    for labels in PROFILES[cluster]:
        for selector in wanted:
            try:
                expr: Any = promql_parser.parse(selector)
            except ValueError as err:
                raise ConnectError(f"parse error: {err}") from None
            groups = expr.matchers.or_matchers or [expr.matchers.matchers]
            if any(all(_matches(labels, m) for m in group) for group in groups):
                chosen.append(labels)
                break
    return chosen


def flamegraph(profiles: list[dict[str, str]]) -> dict[str, Any]:
    """A flame graph: `total` at the root, one `main (<uuid>)` frame of 100 per profile."""
    names = ["total", *(f"main ({p['service_name']})" for p in profiles)]
    level1: list[int] = []
    for i in range(len(profiles)):
        level1 += [0, 100, 100, i + 1]  # offset, total, self, name index
    return {
        "names": names,
        "levels": [{"values": [0, 100 * len(profiles), 0, 0]}, {"values": level1}],
        "total": 100 * len(profiles),
        "max_self": 100,
    }


@dataclass
class Seen:
    """A request that reached the fake, and what Pyroscope would have decoded from it."""

    method: str
    path: str
    content_type: str
    body: bytes
    headers: dict[str, str]
    decoded: dict[str, Any] = field(default_factory=dict)


def _lower(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


class _PyroscopeHandler(http.server.BaseHTTPRequestHandler):
    server: FakePyroscope
    protocol_version = "HTTP/1.1"

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"code": code, "message": message}).encode()
        self._reply(status, JSON, body)

    def do_GET(self) -> None:
        """`/ready` for health checks; anything else is recorded and not found."""
        if self.path == "/ready":
            self._reply(200, "text/plain", b"ready\n")
            return
        self.server.record(Seen("GET", self.path, "", b"", _lower(self.headers.items())))
        self._reply(404, "text/plain", b"404 page not found\n")

    def do_POST(self) -> None:
        """A Connect unary call, or an ingestion push."""
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        content_type = self.headers.get("content-type", "")
        seen = Seen("POST", self.path, content_type, body, _lower(self.headers.items()))
        self.server.record(seen)
        if not self.path.startswith(SERVICE):
            self._reply(200, "text/plain", b"")  # /ingest, /push.v1.PusherService/Push...
            return
        method = self.path.removeprefix(SERVICE)
        if method not in CALLS:
            self._error(404, "unimplemented", f"querier.v1.QuerierService.{method} is not here")
            return
        request_type, response_type = CALLS[method]
        media = content_type.split(";", 1)[0].strip().lower()
        request = request_type()
        try:
            if media == PROTO:
                request.ParseFromString(body)
            elif media == JSON:
                json_format.Parse(body.decode(), request, ignore_unknown_fields=True)
            else:
                self._error(415, "unknown", f"invalid content-type: {content_type!r}")
                return
            seen.decoded = json_format.MessageToDict(request, preserving_proto_field_name=True)
            response = self._answer(method, request, response_type())
        except (DecodeError, json_format.ParseError, UnicodeDecodeError, ConnectError) as err:
            self._error(400, "invalid_argument", str(err))
            return
        if media == PROTO:
            self._reply(200, PROTO, response.SerializeToString())
        else:
            self._reply(200, JSON, json_format.MessageToJson(response, indent=0).encode())

    def _answer(self, method: str, request: Any, response: Any) -> Any:
        cluster = self.server.cluster
        if method == "SelectMergeStacktraces":
            profiles = select(cluster, [request.label_selector])
            json_format.ParseDict({"flamegraph": flamegraph(profiles)}, response)
        elif method == "LabelNames":
            profiles = select(cluster, list(request.matchers))
            response.names.extend(sorted({k for p in profiles for k in p} | {"__name__"}))
        elif method == "LabelValues":
            profiles = select(cluster, list(request.matchers))
            response.names.extend(sorted({p[request.name] for p in profiles if request.name in p}))
        elif method == "ProfileTypes":
            json_format.ParseDict(
                {"profile_types": [{"ID": PROFILE, "name": "process_cpu", "sample_type": "cpu",
                                    "sample_unit": "nanoseconds", "period_type": "cpu",
                                    "period_unit": "nanoseconds"}]},
                response,
            )  # fmt: skip
        elif method == "Series":
            for profile in select(cluster, list(request.matchers)):
                labels = response.labels_set.add()
                for name, value in sorted(profile.items()):
                    labels.labels.add(name=name, value=value)
        return response

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class FakePyroscope(http.server.ThreadingHTTPServer):
    """A Pyroscope for one cluster on a loopback port; records every request but `/ready`."""

    daemon_threads = True

    def __init__(self, cluster: str) -> None:
        super().__init__(("127.0.0.1", 0), _PyroscopeHandler)
        self.cluster = cluster
        self.lock = threading.Lock()
        self._seen: list[Seen] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """Where the LB sends requests."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, seen: Seen) -> None:
        """Remember one request."""
        with self.lock:
            self._seen.append(seen)

    def seen(self) -> list[Seen]:
        """Requests so far."""
        with self.lock:
            return list(self._seen)

    def clear(self) -> None:
        """Forget them."""
        with self.lock:
            self._seen.clear()

    def stop(self) -> None:
        """Stop serving."""
        self.shutdown()
        self.server_close()


# ---------------------------------------------------------------- the stack


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakePyroscope]]:
    """One fake Pyroscope per cluster."""
    servers = {cluster: FakePyroscope(cluster) for cluster in PROFILES}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def pyro_lb(
    store: Path, fakes: dict[str, FakePyroscope], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LbProcess]:
    """`ceems_lb` with a TSDB listener (its TSDB is a dead port) and a Pyroscope listener."""
    dead_tsdb = f"http://127.0.0.1:{free_port()}"
    config = lb_config(
        store, {"slurm-0": [dead_tsdb]}, pyroscope={c: [f.url] for c, f in fakes.items()}
    )
    process = LbProcess(config, tmp_path_factory.mktemp("lb-pyroscope"), listeners=2)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(pyro_lb: LbProcess) -> Iterator[httpx.Client]:
    """A client of the Pyroscope listener (the second one)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{pyro_lb.ports[1]}", timeout=10) as c:
        yield c


@pytest.fixture(autouse=True)
def _forget(request: pytest.FixtureRequest) -> None:
    """Each test starts with fakes that have seen nothing."""
    if "fakes" in request.fixturenames:
        for server in request.getfixturevalue("fakes").values():
            server.clear()


def call(
    client: httpx.Client,
    path: str,
    body: bytes,
    *,
    user: str | None = "alice",
    content_type: str | None = PROTO,
    cluster: str | None = "slurm-0",
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request to the Pyroscope frontend, as Grafana's data source sends it."""
    sent = {"connect-protocol-version": "1", **(headers or {})}
    if user is not None:
        sent["X-Grafana-User"] = user
    if content_type is not None:
        sent["content-type"] = content_type
    if cluster is not None:
        sent["X-Ceems-Cluster-Id"] = cluster
    return client.request(method, path, content=body or None, headers=sent)


def refused(response: httpx.Response, status: int, error_type: str, text: str = "") -> str:
    """Assert an LB error envelope; returns its message."""
    assert response.status_code == status, response.text
    envelope = response.json()
    assert envelope["status"] == "error"
    assert envelope["data"] is None
    assert envelope["errorType"] == error_type
    assert text in envelope["error"]
    return str(envelope["error"])


def nothing_reached(fakes: dict[str, FakePyroscope]) -> None:
    """No request reached any Pyroscope."""
    assert [s for f in fakes.values() for s in f.seen()] == []


def flame_names(response: httpx.Response) -> list[str]:
    """The frame names of a SelectMergeStacktraces answer, in either encoding."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith(PROTO):
        answer = SMST_RESPONSE()
        answer.ParseFromString(response.content)
        return list(answer.flamegraph.names)
    return list(response.json()["flamegraph"]["names"])


NO_UNIT = "user do not have permissions to view unit metrics"
NO_RESOURCE = "user do not have permissions to this resource"
OWN = '{service_name="a-1"}'
BOBS = '{service_name="b-1"}'

# ---------------------------------------------------------------- the fake itself


def test_hand_encoding_is_what_protobuf_encodes() -> None:
    made = SMST_REQUEST(
        profile_typeID=PROFILE, label_selector=OWN, start=START_MS, end=END_MS, max_nodes=16384
    )
    assert smst_proto(OWN) == made.SerializeToString()
    lv = CALLS["LabelValues"][0](name="hostname", matchers=[OWN, BOBS], start=START_MS, end=END_MS)
    assert label_values_proto("hostname", OWN, BOBS) == lv.SerializeToString()
    ln = CALLS["LabelNames"][0](matchers=[OWN], start=START_MS, end=END_MS)
    assert label_names_proto(OWN) == ln.SerializeToString()
    negative = SMST_REQUEST(start=-1)
    assert int_field(3, -1) == negative.SerializeToString()


def test_json_keys_are_protojson_names() -> None:
    parsed = json_format.Parse(smst_json(OWN).decode(), SMST_REQUEST())
    assert (parsed.profile_typeID, parsed.label_selector, parsed.start) == (PROFILE, OWN, START_MS)
    snake = json_format.Parse(smst_json(OWN, key="label_selector").decode(), SMST_REQUEST())
    assert snake.label_selector == OWN


def test_duplicated_field_is_read_last_by_protobuf() -> None:
    # Why the LB must authorise every occurrence: a decoder keeps the last one.
    parsed = SMST_REQUEST()
    parsed.ParseFromString(smst_proto(OWN, BOBS))
    assert parsed.label_selector == BOBS


def test_fake_answers_from_its_profiles(fakes: dict[str, FakePyroscope]) -> None:
    with httpx.Client(base_url=fakes["slurm-0"].url) as direct:
        assert direct.get("/ready").status_code == 200
        everything = direct.post(SMST, content=smst_json("{}"), headers={"content-type": JSON})
        assert flame_names(everything) == ["total", "main (a-1)", "main (a-2)", "main (b-1)"]
        one = direct.post(SMST, content=smst_proto(OWN), headers={"content-type": PROTO})
        assert flame_names(one) == ["total", "main (a-1)"]
    assert [s.decoded["label_selector"] for s in fakes["slurm-0"].seen()] == ["{}", OWN]


# ---------------------------------------------------------------- allowed


def test_own_unit_protobuf(client: httpx.Client, fakes: dict[str, FakePyroscope]) -> None:
    response = call(client, SMST, smst_proto(OWN))
    assert response.headers["content-type"] == PROTO
    assert flame_names(response) == ["total", "main (a-1)"]
    (seen,) = fakes["slurm-0"].seen()
    assert seen.path == SMST
    assert seen.body == smst_proto(OWN)  # forwarded byte for byte
    assert seen.decoded["label_selector"] == OWN
    assert seen.decoded["profile_typeID"] == PROFILE
    assert seen.headers["x-grafana-user"] == "alice"
    assert "x-ceems-cluster-id" not in seen.headers
    assert fakes["slurm-1"].seen() == []


@pytest.mark.parametrize("key", ["labelSelector", "label_selector"])
@pytest.mark.parametrize(
    "content_type", [JSON, "application/json; charset=utf-8", "Application/JSON"]
)
def test_own_unit_json(
    client: httpx.Client, fakes: dict[str, FakePyroscope], key: str, content_type: str
) -> None:
    response = call(client, SMST, smst_json(OWN, key), content_type=content_type)
    assert flame_names(response) == ["total", "main (a-1)"]
    (seen,) = fakes["slurm-0"].seen()
    assert seen.decoded["label_selector"] == OWN


@pytest.mark.parametrize(
    "selector",
    [
        '{service_name=~"a-1|a-2"}',
        '{service_name="a-1", hostname="node-1"}',
        '{service_name="a-1", hostname!="node-2"}',
        '{service_name="a-2" or service_name="a-1"}',
        '{service_name="a-1", service_name=~"a-1|b-1"}',
    ],
)
def test_own_units_any_selector_shape(
    client: httpx.Client, fakes: dict[str, FakePyroscope], selector: str
) -> None:
    names = flame_names(call(client, SMST, smst_proto(selector)))
    assert "main (b-1)" not in names and len(names) > 1
    assert [s.decoded["label_selector"] for s in fakes["slurm-0"].seen()] == [selector]


def test_project_member_sees_the_project_units(
    client: httpx.Client, fakes: dict[str, FakePyroscope]
) -> None:
    assert flame_names(call(client, SMST, smst_proto(OWN), user="carol")) == ["total", "main (a-1)"]
    refused(call(client, SMST, smst_proto(BOBS), user="carol"), 403, "forbidden", NO_UNIT)
    assert len(fakes["slurm-0"].seen()) == 1


def test_same_selector_twice_is_fine(client: httpx.Client, fakes: dict[str, FakePyroscope]) -> None:
    assert flame_names(call(client, SMST, smst_proto(OWN, OWN))) == ["total", "main (a-1)"]
    assert len(fakes["slurm-0"].seen()) == 1


# ---------------------------------------------------------------- refused


@pytest.mark.parametrize("encode", [smst_proto, smst_json], ids=["proto", "json"])
@pytest.mark.parametrize(
    "selector",
    [BOBS, '{service_name=~"a-1|b-1"}', '{service_name="a-1" or service_name="b-1"}',
     '{service_name="a-9"}', '{service_name="nope"}'],
)  # fmt: skip
def test_units_of_others_are_refused(
    client: httpx.Client, fakes: dict[str, FakePyroscope], encode: Any, selector: str
) -> None:
    content_type = PROTO if encode is smst_proto else JSON
    response = call(client, SMST, encode(selector), content_type=content_type)
    refused(response, 403, "forbidden", NO_UNIT)
    nothing_reached(fakes)


# Refused as not PromQL at all (400): a selector that matches series without any label.
EMPTY_MATCHING = [
    "{}",
    '{service_name!="b-1"}',
    '{service_name!~"b-.*"}',
    '{service_name=~"a-1|.*"}',
    '{service_name=""}',
]
# Refused as reading units of others (403): not pinned to literal service names.
UNPINNED = [
    "",
    "   ",
    '{job="x"}',
    '{hostname="node-1"}',
    '{service_name=~"a-.*"}',
    '{service_name=~".+"}',
    '{service_name=~"a-1|a-.+"}',
    '{service_name="a-1" or job="x"}',
    '{__name__="process_cpu"}',
    '{service_name!="b-1", hostname="node-1"}',
]


@pytest.mark.parametrize(
    ("selector", "status", "text"),
    [*((s, 400, "invalid query") for s in EMPTY_MATCHING), *((s, 403, NO_UNIT) for s in UNPINNED)],
)
def test_unpinned_selectors_are_refused(
    client: httpx.Client, fakes: dict[str, FakePyroscope], selector: str, status: int, text: str
) -> None:
    error_type = "bad_data" if status == 400 else "forbidden"
    for body, content_type in ((smst_proto(selector), PROTO), (smst_json(selector), JSON)):
        response = call(client, SMST, body, content_type=content_type)
        refused(response, status, error_type, text)
    nothing_reached(fakes)


def test_missing_selector_is_refused(client: httpx.Client, fakes: dict[str, FakePyroscope]) -> None:
    refused(call(client, SMST, smst_proto()), 403, "forbidden", "label selector pinned")
    no_key = json.dumps({"profileTypeID": PROFILE, "start": str(START_MS)}).encode()
    refused(call(client, SMST, no_key, content_type=JSON), 403, "forbidden")
    null = json.dumps({"profileTypeID": PROFILE, "labelSelector": None}).encode()
    refused(call(client, SMST, null, content_type=JSON), 403, "forbidden")
    refused(call(client, SMST, b""), 403, "forbidden")
    nothing_reached(fakes)


@pytest.mark.parametrize(
    "selectors", [(OWN, BOBS), (BOBS, OWN), (OWN, '{job="x"}'), (OWN, OWN, '{hostname="x"}')]
)
def test_duplicated_selector_field_is_refused(
    client: httpx.Client, fakes: dict[str, FakePyroscope], selectors: tuple[str, ...]
) -> None:
    refused(call(client, SMST, smst_proto(*selectors)), 403, "forbidden", NO_UNIT)
    refused(call(client, SMST, smst_proto(OWN, "{}")), 400, "bad_data", "invalid query")
    nothing_reached(fakes)


def test_selector_field_after_other_fields_is_seen(
    client: httpx.Client, fakes: dict[str, FakePyroscope]
) -> None:
    # Field order is free in protobuf: bob's selector after the int64 fields still counts.
    body = smst_proto(OWN) + text_field(2, BOBS)
    refused(call(client, SMST, body), 403, "forbidden", NO_UNIT)
    # ...and an own selector only after unknown and fixed-width fields still passes.
    tail = (
        tag(9, 1) + b"\x00" * 8 + tag(10, 5) + b"\x00" * 4 + int_field(11, 7) + text_field(2, OWN)
    )
    assert flame_names(call(client, SMST, tail)) == ["total", "main (a-1)"]
    assert len(fakes["slurm-0"].seen()) == 1


_OWN_KEY = '"labelSelector": ' + json.dumps('{service_name="a-1"}')
_BOBS_KEY = '"labelSelector": ' + json.dumps('{service_name="b-1"}')


@pytest.mark.parametrize(
    "body",
    [
        "{" + _OWN_KEY + ", " + _BOBS_KEY + "}",
        "{" + _BOBS_KEY + ", " + _OWN_KEY + "}",
        "{" + _OWN_KEY + ", " + _OWN_KEY + "}",
        '{"profileTypeID": "x", "start": "1", "start": "2", ' + _OWN_KEY + "}",
        "{" + _OWN_KEY + ', "x": {"k": 1, "k": 2}}',
    ],
)
def test_json_duplicate_keys_are_refused(
    client: httpx.Client, fakes: dict[str, FakePyroscope], body: str
) -> None:
    refused(call(client, SMST, body.encode(), content_type=JSON), 400, "bad_data", "twice")
    nothing_reached(fakes)


def test_json_both_key_spellings_are_all_authorised(
    client: httpx.Client, fakes: dict[str, FakePyroscope]
) -> None:
    body = json.dumps({"labelSelector": OWN, "label_selector": BOBS}).encode()
    refused(call(client, SMST, body, content_type=JSON), 403, "forbidden", NO_UNIT)
    body = json.dumps({"label_selector": BOBS, "labelSelector": OWN}).encode()
    refused(call(client, SMST, body, content_type=JSON), 403, "forbidden", NO_UNIT)
    nothing_reached(fakes)


@pytest.mark.parametrize(
    "body",
    [
        b"\x12",  # key, no length
        b"\x12\x05a-1",  # length past the end
        b"\x12\x80",  # truncated length varint
        b"\x0b\x12\x03abc",  # wire type 3 (start group)
        b"\x0f",  # wire type 7
        b"\x02\x01x",  # field number 0
        b"\x12\x02\xc3\x28",  # label selector not UTF-8
        b"\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # 11-byte varint
        b"\x09\x00\x00",  # truncated fixed64
        b"\x1f\x8b\x08\x00",  # a gzip header
        b"garbage that is not protobuf",
    ],
)
def test_malformed_protobuf_is_refused(
    client: httpx.Client, fakes: dict[str, FakePyroscope], body: bytes
) -> None:
    refused(call(client, SMST, body), 400, "bad_data", "not a protobuf message")
    nothing_reached(fakes)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"",
        b"[]",
        b'"{service_name=\\"a-1\\"}"',
        b"null",
        b'{"labelSelector": 5}',
        b'{"labelSelector": {"service_name": "a-1"}}',
        b'{"labelSelector": ["{service_name=\\"a-1\\"}", 5]}',
        b'{"labelSelector": "{service_name=\\"a-1\\"}"} trailing',
        b"\xff\xfe{}",
        b'{"labelSelector": "{service_name="}',
        b'{"labelSelector": "{service_name=\\"a-1\\", x=\\"\\ud800\\"}"}',
    ],
)
def test_malformed_json_is_refused(
    client: httpx.Client, fakes: dict[str, FakePyroscope], body: bytes
) -> None:
    refused(call(client, SMST, body, content_type=JSON), 400, "bad_data")
    nothing_reached(fakes)


@pytest.mark.parametrize(
    "content_type",
    [None, "", "text/plain", "application/grpc-web+proto", "application/connect+json",
     "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)  # fmt: skip
def test_unsupported_content_type_is_refused(
    client: httpx.Client, fakes: dict[str, FakePyroscope], content_type: str | None
) -> None:
    response = call(client, SMST, smst_proto(OWN), content_type=content_type)
    refused(response, 400, "bad_data", "body must be application/proto or application/json")
    nothing_reached(fakes)


def test_compressed_body_is_refused(client: httpx.Client, fakes: dict[str, FakePyroscope]) -> None:
    # Connect allows gzip request bodies; the LB cannot read one, so it does not pass it.
    packed = gzip.compress(smst_proto(BOBS))
    response = call(client, SMST, packed, headers={"content-encoding": "gzip"})
    refused(response, 400, "bad_data")
    packed = gzip.compress(smst_json(BOBS))
    response = call(client, SMST, packed, content_type=JSON, headers={"content-encoding": "gzip"})
    refused(response, 400, "bad_data")
    nothing_reached(fakes)


WRITE_OR_OTHER = [
    ("POST", SERVICE + "ProfileTypes", b""),
    ("POST", SERVICE + "Series", text_field(1, OWN)),
    ("POST", SERVICE + "SelectMergeSpanProfile", text_field(2, OWN)),
    ("POST", SERVICE + "Diff", b""),
    ("POST", SERVICE + "GetProfileStats", b""),
    ("POST", "/ingest?name=app.cpu&from=1&until=2", b"main;work 100\n"),
    ("POST", "/push.v1.PusherService/Push", b""),
    ("POST", SMST + "/", smst_proto(OWN)),
    ("POST", SMST.lower(), smst_proto(OWN)),
    ("POST", "/querier.v1.QuerierService//SelectMergeStacktraces", smst_proto(OWN)),
    ("GET", SMST + "?encoding=proto&message=EgA", b""),
    ("GET", "/pyroscope/render?query=process_cpu%7B%7D&from=now-1h", b""),
    ("GET", "/api/v1/query?query=up", b""),
]


@pytest.mark.parametrize("name", ["SelectSeries", "SelectMergeProfile"])
def test_metric_panel_calls_are_pinned_like_flame_graphs(
    client: httpx.Client, fakes: dict[str, FakePyroscope], name: str
) -> None:
    # Grafana's "metrics" panels: label_selector is field 2, as in SelectMergeStacktraces.
    response = call(client, SERVICE + name, text_field(2, BOBS))
    refused(response, 403, "forbidden")
    nothing_reached(fakes)
    response = call(client, SERVICE + name, text_field(2, OWN))
    assert "errorType" not in response.text
    (seen,) = fakes["slurm-0"].seen()
    assert seen.path == SERVICE + name


@pytest.mark.parametrize(("method", "path", "body"), WRITE_OR_OTHER)
def test_other_calls_are_refused_for_users(
    client: httpx.Client, fakes: dict[str, FakePyroscope], method: str, path: str, body: bytes
) -> None:
    response = call(client, path, body, method=method)
    refused(response, 403, "forbidden", NO_RESOURCE)
    nothing_reached(fakes)


@pytest.mark.parametrize(("method", "path", "body"), WRITE_OR_OTHER)
def test_other_calls_are_forwarded_for_admins(
    client: httpx.Client, fakes: dict[str, FakePyroscope], method: str, path: str, body: bytes
) -> None:
    response = call(client, path, body, method=method, user="root")
    assert "errorType" not in response.text  # the fake's answer, not the LB's
    (seen,) = fakes["slurm-0"].seen()
    assert (seen.method, seen.path, seen.body) == (method, path, body)


def test_profile_types_for_admins(client: httpx.Client, fakes: dict[str, FakePyroscope]) -> None:
    response = call(client, SERVICE + "ProfileTypes", b"{}", user="root", content_type=JSON)
    assert response.status_code == 200
    assert response.json()["profileTypes"][0]["ID"] == PROFILE


def test_admins_read_unpinned(client: httpx.Client, fakes: dict[str, FakePyroscope]) -> None:
    names = flame_names(call(client, SMST, smst_proto("{}"), user="root"))
    assert names == ["total", "main (a-1)", "main (a-2)", "main (b-1)"]
    assert len(fakes["slurm-0"].seen()) == 1


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"labelSelector": "{service_name=\\"a-1\\", x=\\"\\ud800\\"}"}', JSON),
        (b"{", JSON),
        (b"\x12\x05a-1", PROTO),
        (smst_proto(OWN), "text/plain"),
    ],
)
def test_admin_bodies_are_left_to_pyroscope(
    client: httpx.Client, fakes: dict[str, FakePyroscope], body: bytes, content_type: str
) -> None:
    # The LB reads an admin's body only for a ceems_id matcher: what it cannot read, or
    # would refuse for a user, is Pyroscope's to judge, never an LB crash.
    response = call(client, SMST, body, user="root", content_type=content_type)
    assert response.status_code in (400, 415)
    assert "code" in response.json()  # a Connect error: the fake's answer, not the LB's
    (seen,) = fakes["slurm-0"].seen()
    assert seen.body == body


def test_no_user_is_refused(client: httpx.Client, fakes: dict[str, FakePyroscope]) -> None:
    refused(call(client, SMST, smst_proto(OWN), user=None), 401, "unauthorized")
    refused(call(client, SMST, smst_proto(OWN), user=""), 401, "unauthorized")
    nothing_reached(fakes)


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        (LABEL_NAMES, label_names_proto(), 403),
        (LABEL_NAMES, b"", 403),
        (LABEL_NAMES, label_names_proto("{}"), 400),
        (LABEL_NAMES, label_names_proto('{hostname="node-1"}'), 403),
        (LABEL_NAMES, label_names_proto(OWN, '{job="x"}'), 403),
        (LABEL_NAMES, label_names_proto(BOBS), 403),
        (LABEL_VALUES, label_values_proto("service_name"), 403),
        (LABEL_VALUES, label_values_proto("service_name", "{}"), 400),
        (LABEL_VALUES, label_values_proto("service_name", '{service_name=~".+"}'), 403),
        (LABEL_VALUES, label_values_proto("hostname", OWN, BOBS), 403),
        # LabelValues' `name` is field 1, not a matcher: an own selector there pins nothing.
        (LABEL_VALUES, text_field(1, OWN) + int_field(3, START_MS), 403),
    ],
)
def test_labels_need_pinned_matchers(
    client: httpx.Client, fakes: dict[str, FakePyroscope], path: str, body: bytes, status: int
) -> None:
    refused(call(client, path, body), status, "forbidden" if status == 403 else "bad_data")
    nothing_reached(fakes)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (JSON, json.dumps({"start": str(START_MS)}).encode()),
        (JSON, json.dumps({"matchers": []}).encode()),
        (JSON, json.dumps({"matchers": ['{job="x"}']}).encode()),
        (JSON, json.dumps({"matchers": [OWN, BOBS]}).encode()),
    ],
)
def test_label_names_json_need_pinned_matchers(
    client: httpx.Client, fakes: dict[str, FakePyroscope], content_type: str, body: bytes
) -> None:
    assert call(client, LABEL_NAMES, body, content_type=content_type).status_code == 403
    nothing_reached(fakes)


def test_label_names_with_pinned_matchers(
    client: httpx.Client, fakes: dict[str, FakePyroscope]
) -> None:
    response = call(client, LABEL_NAMES, label_names_proto(OWN, '{service_name="a-2"}'))
    assert response.status_code == 200
    names = message_class("types.v1.LabelNamesResponse")()
    names.ParseFromString(response.content)
    assert list(names.names) == ["__name__", "ceems_id", "hostname", "service_name"]
    body = json.dumps({"matchers": [OWN], "start": str(START_MS), "end": str(END_MS)}).encode()
    response = call(client, LABEL_NAMES, body, content_type=JSON)
    assert response.json()["names"] == ["__name__", "ceems_id", "hostname", "service_name"]
    seen = fakes["slurm-0"].seen()
    assert [s.decoded["matchers"] for s in seen] == [[OWN, '{service_name="a-2"}'], [OWN]]


def test_label_values_with_pinned_matchers(
    client: httpx.Client, fakes: dict[str, FakePyroscope]
) -> None:
    body = json.dumps({"name": "service_name", "matchers": ['{service_name=~"a-1|a-2"}']})
    response = call(client, LABEL_VALUES, body.encode(), content_type=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["names"] == ["a-1", "a-2"]
    response = call(client, LABEL_VALUES, label_values_proto("hostname", OWN))
    values = message_class("types.v1.LabelValuesResponse")()
    values.ParseFromString(response.content)
    assert list(values.names) == ["node-1"]
    assert [s.decoded["name"] for s in fakes["slurm-0"].seen()] == ["service_name", "hostname"]


# ---------------------------------------------------------------- clusters


def test_cluster_from_ceems_id_matcher(
    client: httpx.Client, fakes: dict[str, FakePyroscope]
) -> None:
    selector = '{service_name="a-9", ceems_id="slurm-1"}'
    # The matcher wins over the header, and there is no need for a header at all.
    for cluster in ("slurm-0", None):
        response = call(client, SMST, smst_proto(selector), cluster=cluster)
        assert flame_names(response) == ["total", "main (a-9)"]
    assert fakes["slurm-0"].seen() == []
    assert [s.decoded["label_selector"] for s in fakes["slurm-1"].seen()] == [selector] * 2


def test_cluster_from_header(client: httpx.Client, fakes: dict[str, FakePyroscope]) -> None:
    assert flame_names(call(client, SMST, smst_proto('{service_name="a-9"}'), cluster="slurm-1"))
    assert len(fakes["slurm-1"].seen()) == 1
    assert fakes["slurm-0"].seen() == []


def test_units_are_owned_per_cluster(client: httpx.Client, fakes: dict[str, FakePyroscope]) -> None:
    # a-1 is alice's on slurm-0 only; a-9 on slurm-1 only.
    for selector in ('{service_name="a-1", ceems_id="slurm-1"}', '{service_name="a-9"}'):
        refused(call(client, SMST, smst_proto(selector)), 403, "forbidden", NO_UNIT)
    nothing_reached(fakes)


@pytest.mark.parametrize(
    ("selector", "cluster", "text"),
    [
        ('{service_name="a-1", ceems_id=~"slurm-0|slurm-1"}', "slurm-0", "several clusters"),
        ('{service_name="a-1", ceems_id="slurm-9"}', "slurm-0", "invalid cluster ID"),
        (OWN, None, "invalid cluster ID"),
        (OWN, "slurm-9", "invalid cluster ID"),
    ],
)
def test_bad_clusters_are_refused(
    client: httpx.Client,
    fakes: dict[str, FakePyroscope],
    selector: str,
    cluster: str | None,
    text: str,
) -> None:
    refused(call(client, SMST, smst_proto(selector), cluster=cluster), 400, "bad_data", text)
    nothing_reached(fakes)


def test_two_selectors_naming_two_clusters_are_refused(
    client: httpx.Client, fakes: dict[str, FakePyroscope]
) -> None:
    body = label_names_proto(
        '{service_name="a-1", ceems_id="slurm-0"}', '{service_name="a-9", ceems_id="slurm-1"}'
    )
    refused(call(client, LABEL_NAMES, body), 400, "bad_data", "several clusters")
    nothing_reached(fakes)


def test_tsdb_listener_is_not_pyroscope(
    pyro_lb: LbProcess, fakes: dict[str, FakePyroscope]
) -> None:
    # The first listener is the TSDB frontend: a Pyroscope call there is not a read path.
    with httpx.Client(base_url=pyro_lb.url, timeout=10) as tsdb:
        refused(call(tsdb, SMST, smst_proto(OWN)), 403, "forbidden", NO_RESOURCE)
    nothing_reached(fakes)


# ---------------------------------------------------------------- protowire


def test_string_fields_reads_length_delimited_fields() -> None:
    body = text_field(1, "p") + text_field(2, "x") + text_field(2, "y") + text_field(8, "")
    assert string_fields(body) == {1: ["p"], 2: ["x", "y"], 8: [""]}
    assert string_fields(b"") == {}


def test_string_fields_skips_numbers() -> None:
    body = (
        int_field(3, START_MS) + int_field(4, -1) + text_field(2, OWN)
        + tag(6, 1) + b"\xff" * 8 + tag(7, 5) + b"\xff" * 4 + int_field(5, 0)
    )  # fmt: skip
    assert string_fields(body) == {2: [OWN]}


def test_string_fields_reads_real_messages() -> None:
    made = SMST_REQUEST(
        profile_typeID=PROFILE, label_selector=OWN, start=START_MS, end=-5, max_nodes=1 << 62
    )
    assert string_fields(made.SerializeToString()) == {1: [PROFILE], 2: [OWN]}


def test_string_fields_multibyte_keys_and_lengths() -> None:
    long = "x" * 300  # a two-byte length
    assert string_fields(text_field(2, long)) == {2: [long]}
    assert string_fields(text_field(16, "a") + text_field(2**29 - 1, "b")) == {
        16: ["a"], 2**29 - 1: ["b"],
    }  # fmt: skip
    # A non-minimal key (0x92 0x00 is field 2, length-delimited): protobuf reads it too.
    odd = b"\x92\x00\x03abc"
    assert string_fields(odd) == {2: ["abc"]}
    parsed = SMST_REQUEST()
    parsed.ParseFromString(odd)
    assert parsed.label_selector == "abc"


def test_string_fields_unicode() -> None:
    assert string_fields(text_field(2, '{service_name="é✓🔥"}')) == {2: ['{service_name="é✓🔥"}']}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x80", "truncated varint"),
        (b"\x08", "truncated varint"),
        (b"\x08\x80\x80", "truncated varint"),
        (b"\x12", "truncated varint"),
        (b"\x12\x03ab", "runs past the end"),
        (b"\x12\xff\xff\xff\xff\x0f", "runs past the end"),
        (b"\x09\x01\x02\x03", "truncated message"),
        (b"\x0d\x01\x02", "truncated message"),
        (text_field(2, "ok") + b"\x0d\x01", "truncated message"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\xff" * 11, "longer than 10 bytes"),
        (b"\x0b", "unsupported wire type 3"),
        (b"\x0c", "unsupported wire type 4"),
        (b"\x0e", "unsupported wire type 6"),
        (b"\x0f", "unsupported wire type 7"),
        (b"\x13\x01", "unsupported wire type 3 (field 2)"),
        (b"\x00", "field number 0"),
        (b"\x02\x01x", "field number 0"),
        (b"\x80\x00\x01", "field number 0"),
        (b"\x12\x01\xff", "field 2 is not UTF-8"),
        (b"\x12\x02\xc3\x28", "field 2 is not UTF-8"),
        (b"\x0a\x03\xed\xa0\x80", "field 1 is not UTF-8"),  # an encoded surrogate
        (b"\x12\x01\xc3", "field 2 is not UTF-8"),  # cut inside a character
    ],
)
def test_string_fields_refuses_malformed(data: bytes, error: str) -> None:
    with pytest.raises(WireError, match=re.escape(error)):
        string_fields(data)


def test_ten_byte_varints_are_read() -> None:
    # The longest valid varint, as protobuf writes a negative int64.
    assert len(int_field(3, -1)) == 11
    assert string_fields(int_field(3, -1) + text_field(2, "x")) == {2: ["x"]}


def test_string_fields_decodes_only_wanted_fields() -> None:
    # a nested message (stack_trace_selector, field 7) is bytes, not text: only 2 is read
    nested = bytes([0x3A, 2, 0x80, 0xFF])
    body = text_field(2, OWN) + nested
    with pytest.raises(WireError):
        string_fields(body)
    assert string_fields(body, {2}) == {2: [OWN]}
