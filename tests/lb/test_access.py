"""Access control end to end: real `ceems_lb` over HTTP in front of Prometheus and VictoriaMetrics.

Allowed requests must answer with exactly the asked units' data, from the right backend;
refused ones must be answered by the LB itself with CEEMS' status, errorType and text, and
must never reach a backend. The adversarial PromQL table of test_authz is replayed through
HTTP with alice's own uuid in the benign parts, and the counting proxies prove that none of
it was forwarded.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.lb.stack import (
    AT,
    NODE_METRIC,
    SECRET_METRIC,
    T0,
    UNIT_METRIC,
    CountingProxy,
    LbProcess,
    cpu_rate,
)
from tests.lb.test_authz import BAD_SELECTORS, CONSTRUCTS

# CEEMS' texts, verbatim: Grafana users and CEEMS' own clients see them.
NO_UNIT = "user do not have permissions to view unit metrics"
NO_RESOURCE = "user do not have permissions to this resource"
NO_USER = (
    "no user header found. Make sure to set send_user_header = true in [dataproxy] section of "
    "Grafana configuration file."
)
INVALID_CLUSTER = (
    "invalid cluster ID. Set cluster ID using X-Ceems-Cluster-Id header in Prometheus datasource."
)
FORM = "application/x-www-form-urlencoded"
# The whole ten minutes of series: VictoriaMetrics' series endpoints default to the last day.
SPAN = (("start", str(T0)), ("end", str(T0 + 600)))
PROM, VM = "slurm-0", "slurm-1"

Pairs = tuple[tuple[str, str], ...]


def sel(*uuids: str, metric: str = UNIT_METRIC) -> str:
    """`metric` pinned to `uuids` (one: `=`, several: a `=~` alternation)."""
    if len(uuids) == 1:
        return f'{metric}{{uuid="{uuids[0]}"}}'
    return f'{metric}{{uuid=~"{"|".join(uuids)}"}}'


def rate(selector: str) -> str:
    """Five-minute rate of a counter selector."""
    return f"rate({selector}[5m])"


def instant(query: str) -> Pairs:
    """Parameters of an instant query at AT."""
    return (("query", query), ("time", str(AT)))


def ranged(query: str) -> Pairs:
    """Parameters of a range query: five points, a minute apart, from AT (five minutes in)."""
    return (("query", query), ("start", str(AT)), ("end", str(AT + 240)), ("step", "60"))


def matching(*selectors: str) -> Pairs:
    """`match[]` parameters over the whole span of the series."""
    return (*(("match[]", s) for s in selectors), *SPAN)


@dataclass(frozen=True)
class Ask:
    """One request: who asks, of which cluster (header), where, with which parameters."""

    user: str
    cluster: str
    path: str
    params: Pairs = ()
    form: Pairs | None = None  # a form body: sent as POST
    method: str | None = None  # default: POST with a body, GET without
    content: bytes | None = None  # a raw body instead of a form
    content_type: str | None = None

    def send(self, client: httpx.Client) -> httpx.Response:
        """Send it through the LB."""
        headers = {"X-Grafana-User": self.user, "X-Ceems-Cluster-Id": self.cluster}
        content = self.content
        if self.form is not None:
            headers["Content-Type"] = FORM
            content = urlencode(self.form).encode()
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        method = self.method or ("POST" if content is not None else "GET")
        return client.request(
            method, self.path, params=self.params, content=content, headers=headers
        )

    def as_form(self) -> Ask:
        """The same request as a POST with its parameters in a form body."""
        return Ask(self.user, self.cluster, self.path, form=self.params)


def digest(data: Any) -> Any:
    """A comparable summary of an answer's `data`.

    Vectors: {uuid: value}; matrices: {uuid: values}; scalars: the value; series: sorted
    (name, uuid) pairs; label names and values: sorted. `""` stands for a missing uuid.
    """
    if isinstance(data, dict) and data.get("resultType") in ("vector", "matrix"):
        keys = [s["metric"].get("uuid", "") for s in data["result"]]
        assert len(set(keys)) == len(keys), f"several series per uuid: {data['result']}"
        if data["resultType"] == "vector":
            values = [round(float(s["value"][1]), 6) for s in data["result"]]
            return dict(zip(keys, values, strict=True))
        points = [tuple(round(float(v), 6) for _, v in s["values"]) for s in data["result"]]
        return dict(zip(keys, points, strict=True))
    if isinstance(data, dict) and data.get("resultType") == "scalar":
        return round(float(data["result"][1]), 6)
    if isinstance(data, list) and all(isinstance(item, dict) for item in data):
        return sorted((s.get("__name__", ""), s.get("uuid", "")) for s in data)
    if isinstance(data, list):
        return sorted(data)
    raise AssertionError(f"unexpected data: {data!r}")


def rates(*uuids: str) -> dict[str, float]:
    """What `rate()` of the units' CPU counters answers."""
    return {u: cpu_rate(u) for u in uuids}


def counters(*uuids: str) -> dict[str, float]:
    """The units' CPU counters at AT."""
    return {u: cpu_rate(u) * (AT - T0) for u in uuids}


def series(*uuids: str) -> list[tuple[str, str]]:
    """The units' CPU counter series, as `digest` writes them."""
    return sorted((UNIT_METRIC, u) for u in uuids)


UNIT_LABELS = sorted(["__name__", "hostname", "instance", "uuid"])

# (id, request, digest of its data, cluster whose backend must answer)
ALLOWED: list[tuple[str, Ask, Any, str]] = [
    ("alice-rate-prom", Ask("alice", PROM, "/api/v1/query", instant(rate(sel("a-1")))),
     rates("a-1"), PROM),
    ("alice-rate-both-prom", Ask("alice", PROM, "/api/v1/query",
                                 instant(f"sum by (uuid) ({rate(sel('a-1', 'a-2'))})")),
     rates("a-1", "a-2"), PROM),
    ("alice-raw-prom", Ask("alice", PROM, "/api/v1/query", instant(sel("a-2"))),
     counters("a-2"), PROM),
    ("alice-rate-vm", Ask("alice", VM, "/api/v1/query", instant(rate(sel("a-9")))),
     rates("a-9"), VM),
    ("alice-raw-vm", Ask("alice", VM, "/api/v1/query", instant(sel("a-9"))), counters("a-9"), VM),
    ("alice-range-prom", Ask("alice", PROM, "/api/v1/query_range", ranged(rate(sel("a-1")))),
     {"a-1": (cpu_rate("a-1"),) * 5}, PROM),
    ("alice-range-vm", Ask("alice", VM, "/api/v1/query_range", ranged(rate(sel("a-9")))),
     {"a-9": (cpu_rate("a-9"),) * 5}, VM),
    ("alice-series-prom", Ask("alice", PROM, "/api/v1/series", matching(sel("a-1", "a-2"))),
     series("a-1", "a-2"), PROM),
    ("alice-series-two-match-prom",
     Ask("alice", PROM, "/api/v1/series", matching(sel("a-1"), '{uuid="a-2"}')),
     series("a-1", "a-2"), PROM),
    ("alice-series-vm", Ask("alice", VM, "/api/v1/series", matching(sel("a-9"))),
     series("a-9"), VM),
    ("alice-labels-prom", Ask("alice", PROM, "/api/v1/labels", matching(sel("a-1"))),
     UNIT_LABELS, PROM),
    ("alice-labels-vm", Ask("alice", VM, "/api/v1/labels", matching(sel("a-9"))),
     UNIT_LABELS, VM),
    ("alice-uuids-prom", Ask("alice", PROM, "/api/v1/label/uuid/values",
                             matching(sel("a-1", "a-2"))), ["a-1", "a-2"], PROM),
    ("alice-uuids-vm", Ask("alice", VM, "/api/v1/label/uuid/values", matching(sel("a-9"))),
     ["a-9"], VM),
    ("alice-names-prom", Ask("alice", PROM, "/api/v1/label/__name__/values",
                             matching(sel("a-1"))), [UNIT_METRIC], PROM),
    ("carol-project-prom", Ask("carol", PROM, "/api/v1/query", instant(rate(sel("a-1", "a-2")))),
     rates("a-1", "a-2"), PROM),
    ("carol-project-vm", Ask("carol", VM, "/api/v1/query", instant(rate(sel("a-9")))),
     rates("a-9"), VM),
    ("carol-series-prom", Ask("carol", PROM, "/api/v1/series", matching(sel("a-2"))),
     series("a-2"), PROM),
    ("bob-rate-prom", Ask("bob", PROM, "/api/v1/query", instant(rate(sel("b-1")))),
     rates("b-1"), PROM),
    ("bob-rate-vm", Ask("bob", VM, "/api/v1/query", instant(rate(sel("b-9")))), rates("b-9"), VM),
    ("node-metric-prom", Ask("alice", PROM, "/api/v1/query", instant(NODE_METRIC)),
     {"": 300.0}, PROM),
    ("node-metric-vm", Ask("bob", VM, "/api/v1/query", instant(f"max({NODE_METRIC})")),
     {"": 300.0}, VM),
    ("unit-per-node-power", Ask("alice", PROM, "/api/v1/query", instant(
        f"{rate(sel('a-1'))} / on (instance) group_left () {NODE_METRIC}")),
     {"a-1": round(cpu_rate("a-1") / 300.0, 6)}, PROM),
    ("one-plus-one", Ask("alice", PROM, "/api/v1/query", instant("1+1")), 2.0, PROM),
    ("root-unpinned-prom", Ask("root", PROM, "/api/v1/query",
                               instant(f"sum by (uuid) ({rate(UNIT_METRIC)})")),
     rates("a-1", "a-2", "b-1"), PROM),
    ("root-unpinned-vm", Ask("root", VM, "/api/v1/query",
                             instant(f"sum by (uuid) ({rate(UNIT_METRIC)})")),
     rates("a-9", "b-9"), VM),
    ("root-secret-prom", Ask("root", PROM, "/api/v1/query", instant(SECRET_METRIC)),
     {"": 1.0}, PROM),
    ("root-other-users-unit", Ask("root", PROM, "/api/v1/query", instant(sel("b-1"))),
     counters("b-1"), PROM),
    ("root-negative-matcher", Ask("root", PROM, "/api/v1/query",
                                  instant(f'{UNIT_METRIC}{{uuid!="a-1"}}')),
     counters("a-2", "b-1"), PROM),
    ("root-uuids-unpinned-prom", Ask("root", PROM, "/api/v1/label/uuid/values", SPAN),
     ["a-1", "a-2", "b-1"], PROM),
    ("root-uuids-unpinned-vm", Ask("root", VM, "/api/v1/label/uuid/values", SPAN),
     ["a-9", "b-9"], VM),
    ("root-series-all-prom", Ask("root", PROM, "/api/v1/series",
                                 matching(f'{{__name__=~"{UNIT_METRIC}"}}')),
     series("a-1", "a-2", "b-1"), PROM),
]  # fmt: skip

# Every allowed request also as a POST form, for the query endpoints.
ALLOWED += [
    (f"{name}-post", ask.as_form(), expected, cluster)
    for name, ask, expected, cluster in ALLOWED
    if ask.path.startswith("/api/v1/query") or ask.path == "/api/v1/series"
]


@pytest.fixture(scope="module")
def client(lb: LbProcess) -> Iterator[httpx.Client]:
    """One connection pool for the module's requests to the LB."""
    with httpx.Client(base_url=lb.url, timeout=30) as http:
        yield http


@pytest.fixture
def proxies(prom_proxy: CountingProxy, vm_proxy: CountingProxy) -> dict[str, CountingProxy]:
    """The counting proxy in front of each cluster's backend."""
    return {PROM: prom_proxy, VM: vm_proxy}


def counts(proxies: dict[str, CountingProxy]) -> dict[str, int]:
    """Requests each backend has received so far."""
    return {cluster: proxy.count() for cluster, proxy in proxies.items()}


def forwarded(
    proxies: dict[str, CountingProxy], before: dict[str, int]
) -> dict[str, list[tuple[str, str, list[tuple[str, str]], dict[str, str]]]]:
    """What reached each backend since `before`."""
    result = {}
    for cluster, proxy in proxies.items():
        with proxy.lock:
            result[cluster] = list(proxy.seen[before[cluster] :])
    return result


@pytest.mark.parametrize(("ask", "expected", "backend"), [c[1:] for c in ALLOWED],
                         ids=[c[0] for c in ALLOWED])  # fmt: skip
def test_allowed_requests_answer_with_the_asked_units(
    client: httpx.Client,
    proxies: dict[str, CountingProxy],
    ask: Ask,
    expected: Any,
    backend: str,
) -> None:
    before = counts(proxies)
    response = ask.send(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    assert digest(body["data"]) == expected
    reached = forwarded(proxies, before)
    assert {c: len(r) for c, r in reached.items()} == {c: int(c == backend) for c in proxies}
    method, path, params, headers = reached[backend][0]
    assert (method, path) == ("POST" if ask.form is not None else "GET", ask.path)
    assert sorted(params) == sorted(ask.params or ask.form or ())
    # The LB routes by the header; the backend never sees it.
    assert "x-ceems-cluster-id" not in {h.lower() for h in headers}


@pytest.mark.parametrize(
    ("cluster", "path", "params", "expected"),
    [
        (PROM, "/api/v1/status/config", (), "global:"),
        # VictoriaMetrics' cardinality page for the day of the series: names every metric.
        (VM, "/api/v1/status/tsdb", (("date", "2026-01-01"),), UNIT_METRIC),
    ],
)
def test_root_may_use_other_endpoints(
    client: httpx.Client,
    proxies: dict[str, CountingProxy],
    cluster: str,
    path: str,
    params: Pairs,
    expected: str,
) -> None:
    """Admins are not limited to the read endpoints (here, the backends' status pages)."""
    before = counts(proxies)
    response = Ask("root", cluster, path, params).send(client)
    assert response.status_code == 200, response.text
    assert expected in str(response.json()["data"])
    reached = forwarded(proxies, before)
    assert [r[1] for r in reached[cluster]] == [path]
    assert sum(len(r) for r in reached.values()) == 1


def exactly(text: str) -> str:
    """An `error` pattern matching `text` only."""
    return re.escape(text)


def starting(text: str) -> str:
    """An `error` pattern matching `text` and whatever reason follows it."""
    return re.escape(text) + ".*"


def reasoned(text: str) -> str:
    """An `error` pattern matching `text: reason`: the authoriser's refusals say why."""
    return re.escape(text + ": ") + ".+"


# alice's own query in a form body, beside another in the URL.
OWN_FORM = (("query", sel("a-2")), ("time", str(AT)))
# (id, request, status, errorType, pattern of `error`)
REFUSED: list[tuple[str, Ask, int, str, str]] = [
    ("bob-reads-alice", Ask("bob", PROM, "/api/v1/query", instant(sel("a-1"))),
     403, "forbidden", exactly(NO_UNIT)),
    ("alice-reads-bob", Ask("alice", PROM, "/api/v1/query", instant(rate(sel("b-1")))),
     403, "forbidden", exactly(NO_UNIT)),
    ("alice-reads-bob-vm", Ask("alice", VM, "/api/v1/query", instant(sel("b-9"))),
     403, "forbidden", exactly(NO_UNIT)),
    ("bob-reads-alice-vm", Ask("bob", VM, "/api/v1/query_range", ranged(rate(sel("a-9")))),
     403, "forbidden", exactly(NO_UNIT)),
    ("carol-reads-bob", Ask("carol", PROM, "/api/v1/query", instant(sel("b-1"))),
     403, "forbidden", exactly(NO_UNIT)),
    ("stranger-reads-alice", Ask("mallory", PROM, "/api/v1/query", instant(sel("a-1"))),
     403, "forbidden", exactly(NO_UNIT)),
    ("alice-reads-bob-post", Ask("alice", PROM, "/api/v1/query", form=instant(sel("b-1"))),
     403, "forbidden", exactly(NO_UNIT)),
    ("own-and-other-regex", Ask("alice", PROM, "/api/v1/query", instant(sel("a-1", "b-1"))),
     403, "forbidden", exactly(NO_UNIT)),
    ("own-and-other-binary", Ask("alice", PROM, "/api/v1/query",
                                 instant(f"{sel('a-1')} + {sel('b-1')}")),
     403, "forbidden", exactly(NO_UNIT)),
    ("own-and-other-or-matcher", Ask("alice", PROM, "/api/v1/query",
                                     instant(f'{UNIT_METRIC}{{uuid="a-1" or uuid="b-1"}}')),
     403, "forbidden", exactly(NO_UNIT)),
    ("own-and-other-range", Ask("alice", PROM, "/api/v1/query_range",
                                ranged(rate(sel("a-2", "b-1")))),
     403, "forbidden", exactly(NO_UNIT)),
    ("unknown-uuid", Ask("alice", PROM, "/api/v1/query", instant(sel("zz-404"))),
     403, "forbidden", exactly(NO_UNIT)),
    ("own-and-unknown-uuid", Ask("alice", PROM, "/api/v1/query", instant(sel("a-1", "a-3"))),
     403, "forbidden", exactly(NO_UNIT)),
    ("other-cluster-unit", Ask("alice", PROM, "/api/v1/query", instant(sel("a-9"))),
     403, "forbidden", exactly(NO_UNIT)),
    ("other-cluster-unit-vm", Ask("alice", VM, "/api/v1/query", instant(sel("a-1"))),
     403, "forbidden", exactly(NO_UNIT)),
    ("unpinned", Ask("alice", PROM, "/api/v1/query", instant(UNIT_METRIC)),
     403, "forbidden", reasoned(NO_UNIT)),
    ("unpinned-range", Ask("alice", VM, "/api/v1/query_range", ranged(rate(UNIT_METRIC))),
     403, "forbidden", reasoned(NO_UNIT)),
    ("unpinned-negative", Ask("alice", PROM, "/api/v1/query",
                              instant(f'{UNIT_METRIC}{{uuid!="b-1"}}')),
     403, "forbidden", reasoned(NO_UNIT)),
    ("unpinned-regex", Ask("alice", PROM, "/api/v1/query",
                           instant(f'{UNIT_METRIC}{{uuid=~"a-.*"}}')),
     403, "forbidden", reasoned(NO_UNIT)),
    ("unpinned-empty", Ask("alice", PROM, "/api/v1/query", instant(f'{UNIT_METRIC}{{uuid=""}}')),
     403, "forbidden", reasoned(NO_UNIT)),
    ("secret-node-metric", Ask("alice", PROM, "/api/v1/query", instant(SECRET_METRIC)),
     403, "forbidden", reasoned(NO_UNIT)),
    ("secret-node-metric-vm", Ask("bob", VM, "/api/v1/query", instant(f"max({SECRET_METRIC})")),
     403, "forbidden", reasoned(NO_UNIT)),
    ("secret-beside-own-unit", Ask("alice", PROM, "/api/v1/query",
                                   instant(f"{sel('a-1')} or {SECRET_METRIC}")),
     403, "forbidden", reasoned(NO_UNIT)),
    ("status-config", Ask("alice", PROM, "/api/v1/status/config"),
     403, "forbidden", exactly(NO_RESOURCE)),
    ("status-flags", Ask("bob", VM, "/api/v1/status/flags"),
     403, "forbidden", exactly(NO_RESOURCE)),
    ("delete-series", Ask("alice", PROM, "/api/v1/admin/tsdb/delete_series",
                          form=matching(sel("a-1"))),
     403, "forbidden", exactly(NO_RESOURCE)),
    ("remote-write", Ask("alice", PROM, "/api/v1/write", content=b"\x0a\x00",
                         content_type="application/x-protobuf"),
     403, "forbidden", exactly(NO_RESOURCE)),
    ("vm-import", Ask("alice", VM, "/api/v1/import/prometheus",
                      content=f'{UNIT_METRIC}{{uuid="a-9"}} 1'.encode(), content_type="text/plain"),
     403, "forbidden", exactly(NO_RESOURCE)),
    ("query-exemplars", Ask("alice", PROM, "/api/v1/query_exemplars",
                            (("query", sel("a-1")), *SPAN)),
     403, "forbidden", exactly(NO_RESOURCE)),
    ("federate", Ask("alice", PROM, "/federate", matching(sel("a-1"))),
     403, "forbidden", exactly(NO_RESOURCE)),
    ("query-put", Ask("alice", PROM, "/api/v1/query", instant(sel("a-1")), method="PUT"),
     403, "forbidden", exactly(NO_RESOURCE)),
    ("query-trailing-slash", Ask("alice", PROM, "/api/v1/query/", instant(sel("a-1"))),
     403, "forbidden", exactly(NO_RESOURCE)),
    ("series-without-match", Ask("alice", PROM, "/api/v1/series", SPAN),
     403, "forbidden", reasoned(NO_UNIT)),
    ("labels-without-match", Ask("alice", PROM, "/api/v1/labels", SPAN),
     403, "forbidden", reasoned(NO_UNIT)),
    ("label-values-without-match", Ask("alice", VM, "/api/v1/label/uuid/values", SPAN),
     403, "forbidden", reasoned(NO_UNIT)),
    ("series-unpinned-match", Ask("alice", PROM, "/api/v1/series",
                                  matching('{__name__=~".+"}')),
     403, "forbidden", reasoned(NO_UNIT)),
    ("series-own-and-unpinned-match", Ask("alice", PROM, "/api/v1/series",
                                          matching(sel("a-1"), UNIT_METRIC)),
     403, "forbidden", reasoned(NO_UNIT)),
    ("series-own-and-other-match", Ask("alice", PROM, "/api/v1/series",
                                       matching(sel("a-1"), sel("b-1"))),
     403, "forbidden", exactly(NO_UNIT)),
    ("label-values-other-match", Ask("bob", PROM, "/api/v1/label/uuid/values",
                                     matching(sel("a-1"))),
     403, "forbidden", exactly(NO_UNIT)),
    ("two-queries-url-and-form", Ask("alice", PROM, "/api/v1/query",
                                     (("query", sel("a-1")),), form=OWN_FORM),
     403, "forbidden", reasoned(NO_UNIT)),
    ("two-queries-url", Ask("alice", PROM, "/api/v1/query",
                            (("query", sel("a-1")), ("query", SECRET_METRIC))),
     403, "forbidden", reasoned(NO_UNIT)),
    ("no-query", Ask("alice", PROM, "/api/v1/query", (("time", str(AT)),)),
     403, "forbidden", reasoned(NO_UNIT)),
    ("ceems-id-routes-to-other-cluster", Ask("alice", PROM, "/api/v1/query",
                                             instant(f'{UNIT_METRIC}{{uuid="a-1", '
                                                     f'ceems_id="{VM}"}}')),
     403, "forbidden", exactly(NO_UNIT)),
    # A quoted label name with an escape (Prometheus 3) still names the cluster.
    ("ceems-id-escaped-routes-to-other-cluster", Ask("alice", PROM, "/api/v1/query",
                                                     instant(f'{UNIT_METRIC}{{uuid="a-1", '
                                                             f'"ceems\\x5fid"="{VM}"}}')),
     403, "forbidden", exactly(NO_UNIT)),
    ("ceems-id-routes-bob-to-other-cluster", Ask("bob", VM, "/api/v1/query",
                                                 instant(f'{UNIT_METRIC}{{uuid="b-9", '
                                                         f'ceems_id=~"{PROM}|"}}')),
     403, "forbidden", exactly(NO_UNIT)),
    ("ceems-id-two-clusters", Ask("alice", PROM, "/api/v1/query",
                                  instant(f'{UNIT_METRIC}{{uuid="a-1", '
                                          f'ceems_id=~"{PROM}|{VM}"}}')),
     400, "bad_data", starting("the query names several clusters")),
    ("ceems-id-unknown", Ask("alice", PROM, "/api/v1/query",
                             instant(f'{UNIT_METRIC}{{uuid="a-1", ceems_id="slurm-7"}}')),
     400, "bad_data", exactly(INVALID_CLUSTER)),
    ("no-user", Ask("", PROM, "/api/v1/query", instant(sel("a-1"))),
     401, "unauthorized", exactly(NO_USER)),
    ("no-cluster", Ask("alice", "", "/api/v1/query", instant(sel("a-1"))),
     400, "bad_data", exactly(INVALID_CLUSTER)),
    ("unknown-cluster", Ask("alice", "slurm-7", "/api/v1/query", instant(sel("a-1"))),
     400, "bad_data", exactly(INVALID_CLUSTER)),
    ("invalid-promql", Ask("alice", PROM, "/api/v1/query", instant(f"sum({sel('a-1')}")),
     400, "bad_data", starting("invalid query")),
    ("empty-query", Ask("alice", PROM, "/api/v1/query", instant("")),
     400, "bad_data", starting("invalid query")),
    ("json-body", Ask("alice", PROM, "/api/v1/query", content=b'{"query": "1"}',
                      content_type="application/json"),
     400, "bad_data", starting("POST body must be")),
    ("multipart-body", Ask("alice", PROM, "/api/v1/query",
                           content=b'--b\r\nContent-Disposition: form-data; name="query"\r\n\r\n'
                                   + SECRET_METRIC.encode() + b"\r\n--b--\r\n",
                           content_type="multipart/form-data; boundary=b"),
     400, "bad_data", starting("POST body must be")),
    ("get-with-body", Ask("alice", PROM, "/api/v1/query", instant(sel("a-1")),
                          content=b"query=" + SECRET_METRIC.encode(), method="GET"),
     400, "bad_data", starting("a GET request carries no body")),
]  # fmt: skip


@pytest.mark.parametrize(("ask", "status", "error_type", "error"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])  # fmt: skip
def test_refused_requests_never_reach_a_backend(
    client: httpx.Client,
    proxies: dict[str, CountingProxy],
    ask: Ask,
    status: int,
    error_type: str,
    error: str,
) -> None:
    before = counts(proxies)
    response = ask.send(client)
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["status"], body["data"], body["errorType"]) == ("error", None, error_type)
    assert re.fullmatch(error, body["error"]), body["error"]
    assert counts(proxies) == before


def test_a_semicolon_in_the_query_string_is_refused(
    client: httpx.Client, proxies: dict[str, CountingProxy]
) -> None:
    """Go drops `;`-separated pairs, Python keeps them: the ambiguity is refused."""
    before = counts(proxies)
    query = urlencode({"query": sel("a-1")})
    response = client.get(
        f"/api/v1/query?{query};query={SECRET_METRIC}",
        headers={"X-Grafana-User": "alice", "X-Ceems-Cluster-Id": PROM},
    )
    assert response.status_code == 400, response.text
    assert response.json()["errorType"] == "bad_data"
    assert "';' is not a parameter separator" in response.json()["error"]
    assert counts(proxies) == before


# The adversarial table of test_authz with alice's own uuid in the benign parts.
OWN_CONSTRUCTS = [c.replace('"101"', '"a-1"') for c in CONSTRUCTS]
ADVERSARIAL = [c.replace("SEL", s) for s in BAD_SELECTORS for c in OWN_CONSTRUCTS]
# Every construct around bob's unit: parsed fine and pinned, but not alice's.
BOBS = [c.replace("SEL", sel("b-1")) for c in OWN_CONSTRUCTS]
# String escapes that spell regex metacharacters.
ESCAPES = [
    f'{UNIT_METRIC}{{uuid=~"a-1|\\x2e\\x2a"}}',
    f'{UNIT_METRIC}{{uuid=~"a-1|\\056\\052"}}',
    f'{UNIT_METRIC}{{uuid=~"a-1|\\u002e\\u002a"}}',
    f"{UNIT_METRIC}{{uuid=~'a-1|.*'}}",
    f"{UNIT_METRIC}{{uuid=~`a-1|.+`}}",
    f'{UNIT_METRIC}{{uuid=~"a-1|b-\\\\d"}}',
]


EXPRESSIONS = ("query", "match[]")


def adversarial_requests() -> list[tuple[Ask, bool]]:
    """Every adversarial query as alice: GET on Prometheus' cluster, POST form on VM's, and
    the bare selectors as `match[]` of the series, labels and label values endpoints.

    Each comes with whether the authoriser itself must refuse it (True), or only the
    ownership check (bob's unit, well pinned: False).
    """
    asks = []
    for query in [*ADVERSARIAL, *ESCAPES, *BOBS]:
        own = query in BOBS
        asks.append((Ask("alice", PROM, "/api/v1/query", instant(query)), not own))
        asks.append((Ask("alice", VM, "/api/v1/query", form=instant(query)), not own))
    for query in BOBS:
        asks.append((Ask("alice", PROM, "/api/v1/query_range", ranged(query)), False))
    for selector in [*BAD_SELECTORS, *ESCAPES, sel("b-1")]:
        for path in ("/api/v1/series", "/api/v1/labels", "/api/v1/label/uuid/values"):
            ask = Ask("alice", PROM, path, matching(sel("a-1"), selector))
            asks.append((ask, selector != sel("b-1")))
    return asks


def refusal_problem(response: httpx.Response, by_authoriser: bool) -> str | None:
    """Why `response` is not the expected refusal, or None.

    The authoriser answers 400 (not PromQL) or 403 with its reason after CEEMS' text; the
    ownership check answers 403 with CEEMS' text.
    """
    body = response.json()
    error_type, error = body.get("errorType"), body.get("error") or ""
    if response.status_code == 400 and error_type == "bad_data" and by_authoriser:
        return None
    if response.status_code != 403 or error_type != "forbidden":
        return f"answered {response.status_code}: {response.text[:200]}"
    if by_authoriser and not error.startswith(NO_UNIT + ": "):
        return f"not refused by the authoriser: {error}"
    if not error.startswith(NO_UNIT):
        return f"unexpected refusal: {error}"
    return None


def test_adversarial_queries_are_refused_and_never_forwarded(
    client: httpx.Client, proxies: dict[str, CountingProxy]
) -> None:
    asks = adversarial_requests()
    assert len(ADVERSARIAL) == len(BAD_SELECTORS) * len(CONSTRUCTS) >= 100
    assert not any("101" in c for c in OWN_CONSTRUCTS)
    assert sum('uuid="a-1"' in c for c in OWN_CONSTRUCTS) >= 4
    # A control: alice's own query is forwarded and recorded, so the checks below can see.
    control = Ask("alice", PROM, "/api/v1/query", instant(rate(sel("a-1"))))
    assert control.send(client).status_code == 200
    before = counts(proxies)
    problems = []
    for ask, by_authoriser in asks:
        problem = refusal_problem(ask.send(client), by_authoriser)
        if problem is not None:
            problems.append((ask.path, ask.params or ask.form, problem))
    assert not problems, f"{len(problems)} not refused as expected, e.g. {problems[:3]}"
    assert counts(proxies) == before
    # Nothing alice ever got forwarded, in this module or another, carries one of them.
    sent = {v for ask, _ in asks for k, v in (*ask.params, *(ask.form or ())) if k in EXPRESSIONS}
    sent.discard(sel("a-1"))
    assert len(sent) >= len(ADVERSARIAL)
    reached = set()
    for proxy in proxies.values():
        with proxy.lock:
            reached |= {
                v
                for _, _, params, headers in proxy.seen
                if {k.lower(): h for k, h in headers.items()}.get("x-grafana-user") == "alice"
                for k, v in params
                if k in EXPRESSIONS
            }
    assert rate(sel("a-1")) in reached
    assert not reached & sent
    print(f"{len(asks)} adversarial requests refused, none forwarded")  # a figure, not a test


def test_bobs_unit_is_refused_in_every_construct(
    client: httpx.Client, proxies: dict[str, CountingProxy]
) -> None:
    """Bob's unit is well pinned: only ownership refuses it, with CEEMS' exact text (unless
    the construct also reads a node metric that is not allow-listed)."""
    before = counts(proxies)
    for query in BOBS:
        body = Ask("alice", PROM, "/api/v1/query", instant(query)).send(client).json()
        assert body["errorType"] == "forbidden", query
        if "ceems_emissions" not in query:
            assert body["error"] == NO_UNIT, query
    assert counts(proxies) == before


def on(cluster: str, uuid: str | None = None) -> str:
    """Unit series (of `uuid`) with a `ceems_id` matcher naming `cluster`.

    `|` lets series without the label match too (the test series have none), so the answer
    shows which backend was asked.
    """
    pin = f'uuid="{uuid}", ' if uuid else ""
    return f'{UNIT_METRIC}{{{pin}ceems_id=~"{cluster}|"}}'


ROUTED = [
    ("query", Ask("alice", PROM, "/api/v1/query", instant(rate(on(VM, "a-9")))),
     VM, rates("a-9")),
    ("query-post", Ask("carol", PROM, "/api/v1/query", form=instant(rate(on(VM, "a-9")))),
     VM, rates("a-9")),
    ("query-range", Ask("alice", PROM, "/api/v1/query_range", ranged(rate(on(VM, "a-9")))),
     VM, {"a-9": (cpu_rate("a-9"),) * 5}),
    ("query-to-prom", Ask("alice", VM, "/api/v1/query", instant(rate(on(PROM, "a-1")))),
     PROM, rates("a-1")),
    ("series", Ask("alice", PROM, "/api/v1/series", matching(on(VM, "a-9"))),
     VM, series("a-9")),
    ("label-values", Ask("bob", PROM, "/api/v1/label/uuid/values", matching(on(VM, "b-9"))),
     VM, ["b-9"]),
    ("admin", Ask("root", PROM, "/api/v1/query", instant(f"sum by (uuid) ({rate(on(VM))})")),
     VM, rates("a-9", "b-9")),
]  # fmt: skip


@pytest.mark.parametrize(("ask", "backend", "expected"), [r[1:] for r in ROUTED],
                         ids=[r[0] for r in ROUTED])  # fmt: skip
def test_a_ceems_id_matcher_wins_over_the_header(
    client: httpx.Client,
    proxies: dict[str, CountingProxy],
    ask: Ask,
    backend: str,
    expected: Any,
) -> None:
    """As in CEEMS, the cluster a query names routes it (and ownership is checked there)."""
    assert ask.cluster != backend
    before = counts(proxies)
    response = ask.send(client)
    assert response.status_code == 200, response.text
    assert digest(response.json()["data"]) == expected
    reached = forwarded(proxies, before)
    assert {c: len(r) for c, r in reached.items()} == {c: int(c == backend) for c in proxies}


@pytest.mark.parametrize("user", ["alice", "root"])
def test_two_ceems_ids_are_refused_even_for_admins(
    client: httpx.Client, proxies: dict[str, CountingProxy], user: str
) -> None:
    query = (
        f'{UNIT_METRIC}{{uuid="a-1", ceems_id="{PROM}"}}'
        f' + {UNIT_METRIC}{{uuid="a-9", ceems_id="{VM}"}}'
    )
    before = counts(proxies)
    for ask in (
        Ask(user, PROM, "/api/v1/query", instant(query)),
        Ask(user, VM, "/api/v1/query", form=instant(query)),
        Ask(user, PROM, "/api/v1/series", matching(
            f'{UNIT_METRIC}{{uuid="a-1", ceems_id="{PROM}"}}',
            f'{UNIT_METRIC}{{uuid="a-9", ceems_id="{VM}"}}',
        )),
    ):  # fmt: skip
        response = ask.send(client)
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["errorType"] == "bad_data"
        assert body["error"] == f"the query names several clusters: {PROM}, {VM}"
    assert counts(proxies) == before
