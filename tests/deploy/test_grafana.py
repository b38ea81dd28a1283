"""Grafana provisioning and dashboards in deploy/grafana: they load, and every query is valid.

PromQL is parsed with `promql_parser` after Grafana's variables are substituted; API URLs
are checked against the API server's OpenAPI document; the unit dashboard, which users
query through the LB, pins every selector to `uuid="$uuid"`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import promql_parser
import pytest
import sqlalchemy as sa
import yaml

from ceems.api.app import create_app
from ceems.api.render import UNIT_FIELDS, USAGE_BASE_FIELDS, USAGE_FIELDS
from tests.api.routes.conftest import Api, make_config
from tests.api.routes.scenario import T0, build_store
from tests.conftest import ROOT
from tests.test_docs import documented_metric_patterns

GRAFANA = ROOT / "deploy" / "grafana"
DATASOURCES_YML = GRAFANA / "provisioning" / "datasources" / "ceems.yml"
PROVIDERS_YML = GRAFANA / "provisioning" / "dashboards" / "ceems.yml"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DOC = ROOT / "docs" / "dashboards.md"

PROMETHEUS = "prometheus"
INFINITY = "yesoreyeram-infinity-datasource"
UNIT_DASHBOARD = "ceems-unit-timeseries"

# What Grafana puts in place of its global variables; every dashboard variable becomes
# SAMPLE (a valid label value, so `uuid="$uuid"` reads `uuid="1234"` once substituted).
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__from": "1767225600",
    "__to": "1767229200",
}
SAMPLE = "1234"
# ${name}, ${name:format}, [[name]] (deprecated) and $name.
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
# Grafana's Prometheus variable functions that wrap a selector or a query.
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((.*)\)\s*$", re.DOTALL)
_NO_EXPRESSION = re.compile(r"^\s*(label_values\(\s*\w+\s*\)|label_names\(.*\)|metrics\(.*\))\s*$")


class UndefinedVariableError(ValueError):
    """A query refers to a variable the dashboard does not define."""


@dataclass(frozen=True, slots=True)
class Query:
    """One query text of a dashboard, and where it is."""

    dashboard: str
    panel: str
    datasource: str  # the data source uid, variables resolved
    text: str  # PromQL, or an Infinity URL
    params: tuple[tuple[str, str], ...] = ()  # Infinity `url_options.params`
    columns: tuple[str, ...] = ()  # Infinity column selectors

    def where(self) -> str:
        """`dashboard / panel: text`, for failure messages."""
        return f"{self.dashboard} / {self.panel}: {self.text!r}"


# ------------------------------------------------------------------ loading


@cache
def provisioned_datasources() -> dict[str, dict[str, Any]]:
    """The provisioned data sources by uid."""
    loaded = yaml.safe_load(DATASOURCES_YML.read_text())
    return {ds["uid"]: ds for ds in loaded["datasources"]}


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard file by its name."""
    return {path.name: json.loads(path.read_text()) for path in DASHBOARD_FILES}


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels depth first, including those inside (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def variables_of(dashboard: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The dashboard's template variables by name."""
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def resolve_datasource(ref: Any, variables: Mapping[str, Mapping[str, Any]]) -> str:
    """The uid a data source reference stands for; `${var}` goes through a datasource variable."""
    if not isinstance(ref, dict) or not isinstance(ref.get("uid"), str):
        raise ValueError(f"data source reference without a uid: {ref!r}")
    uid: str = ref["uid"]
    match = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", uid)
    if match is None:
        return uid
    name = match.group(1) or match.group(2)
    variable = variables.get(name)
    if variable is None or variable.get("type") != "datasource":
        raise UndefinedVariableError(f"data source {uid!r}: no datasource variable {name!r}")
    return str(variable["current"]["value"])


def substitute(text: str, defined: set[str], values: Mapping[str, str] | None = None) -> str:
    """`text` with Grafana's variables replaced as Grafana would before sending it.

    `values` gives some variables a value of their own; the others get BUILTINS' or SAMPLE.
    """

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if values and name in values:
            return values[name]
        if name in BUILTINS:
            return BUILTINS[name]
        if name in defined:
            return SAMPLE
        raise UndefinedVariableError(f"undefined variable ${name}")

    return _VARIABLE.sub(value, text)


# ------------------------------------------------------------------ extraction


def _datasource_type(uid: str) -> str:
    found = provisioned_datasources().get(uid)
    return str(found["type"]) if found else ""


def _variable_expression(query: Any) -> str | None:
    """The PromQL inside a Prometheus variable query, None for one without any."""
    text = query.get("query", "") if isinstance(query, dict) else str(query)
    if not text.strip() or _NO_EXPRESSION.match(text):
        return None
    for wrapper in (_LABEL_VALUES, _QUERY_RESULT):
        match = wrapper.match(text)
        if match:
            return match.group(1)
    return text


def _infinity_query(dashboard: str, panel: str, uid: str, target: Mapping[str, Any]) -> Query:
    params = target.get("url_options", {}).get("params", [])
    return Query(
        dashboard,
        panel,
        uid,
        str(target["url"]),
        tuple((str(p["key"]), str(p.get("value", ""))) for p in params),
        tuple(str(c["selector"]) for c in target.get("columns", [])),
    )


def queries_of(dashboard: Mapping[str, Any], datasource_type: str) -> list[Query]:
    """The queries the dashboard sends to data sources of one type: panels and variables."""
    name = str(dashboard.get("uid", "?"))
    variables = variables_of(dashboard)
    found: list[Query] = []
    for panel in iter_panels(dashboard.get("panels", [])):
        title = str(panel.get("title", f"panel {panel.get('id')}"))
        for target in panel.get("targets", []):
            uid = resolve_datasource(target.get("datasource", panel.get("datasource")), variables)
            if _datasource_type(uid) != datasource_type:
                continue
            if datasource_type == PROMETHEUS and "expr" in target:
                found.append(Query(name, title, uid, str(target["expr"])))
            elif datasource_type == INFINITY and "url" in target:
                found.append(_infinity_query(name, title, uid, target))
    for variable in variables.values():
        if variable.get("type") != "query":
            continue
        uid = resolve_datasource(variable.get("datasource"), variables)
        if _datasource_type(uid) != datasource_type:
            continue
        where = f"variable {variable['name']}"
        if datasource_type == PROMETHEUS:
            expression = _variable_expression(variable.get("query"))
            if expression is not None:
                found.append(Query(name, where, uid, expression))
        elif datasource_type == INFINITY:
            found.append(_infinity_query(name, where, uid, variable["query"]["infinityQuery"]))
    return found


def parse_promql(query: Query, dashboard: Mapping[str, Any]) -> promql_parser.Expr:
    """The parsed expression, Grafana's variables substituted; ValueError names the query."""
    try:
        return promql_parser.parse(substitute(query.text, set(variables_of(dashboard))))
    except ValueError as err:
        raise ValueError(f"{query.where()}: {err}") from err


def promql_errors(dashboard: Mapping[str, Any]) -> list[str]:
    """One message per PromQL expression of the dashboard that does not parse."""
    errors = []
    for query in queries_of(dashboard, PROMETHEUS):
        try:
            parse_promql(query, dashboard)
        except ValueError as err:
            errors.append(str(err))
    return errors


def vector_selectors(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    """Every vector selector of the expression, including those of ranges and subqueries."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(expr, visit)
    return found


def unpinned_selectors(expr: promql_parser.Expr, uuid: str = SAMPLE) -> list[str]:
    """Selectors that may match series of units other than `uuid` (what the LB refuses)."""

    def pinned(matchers: list[promql_parser.Matcher]) -> bool:
        return any(
            m.name == "uuid" and m.op == promql_parser.MatchOp.Equal and m.value == uuid
            for m in matchers
        )

    offenders = []
    for selector in vector_selectors(expr):
        groups = selector.matchers.or_matchers or [selector.matchers.matchers]
        if not all(pinned(group) for group in groups):
            offenders.append(selector.prettify())
    return offenders


def metric_names(expr: promql_parser.Expr) -> set[str]:
    """Metric names the expression selects by name (`name{...}` or `__name__="name"`)."""
    names = set()
    for selector in vector_selectors(expr):
        if selector.name:
            names.add(selector.name)
        names.update(
            m.value
            for m in selector.matchers.matchers
            if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal
        )
    return names


# ------------------------------------------------------------------ the API server


@cache
def openapi_parameters() -> dict[str, set[str]]:
    """GET paths of the API server (with their `/api/v1` prefix) and their query parameters."""
    # Building the OpenAPI document never touches the store, so an empty engine will do.
    app = create_app(make_config(), sa.create_engine("sqlite://"))
    paths: dict[str, set[str]] = {}
    for path, operations in app.openapi()["paths"].items():
        if "get" in operations:
            parameters = operations["get"].get("parameters", [])
            paths[path] = {p["name"] for p in parameters if p["in"] == "query"}
    return paths


def _valid_fields(path: str) -> tuple[set[str], set[str]]:
    """The `field` values `path` takes, and the keys it returns whether asked or not."""
    if path.startswith("/api/v1/units"):
        return set(UNIT_FIELDS), {"uuid"}
    if path.startswith("/api/v1/usage/"):
        return set(USAGE_FIELDS), set(USAGE_BASE_FIELDS)
    return set(), set()


def api_problems(query: Query, paths: Mapping[str, set[str]]) -> list[str]:
    """What is wrong with an Infinity query of the API: path, parameters, fields, columns."""
    url = urlsplit(query.text)
    if url.scheme or url.netloc:
        return [f"{query.where()}: absolute URL; the data source holds the API server's address"]
    if "$" in url.path:
        return [f"{query.where()}: variable in the path"]
    if url.path not in paths:
        return [f"{query.where()}: no path {url.path} in the API's OpenAPI document"]
    params = [*parse_qsl(url.query, keep_blank_values=True), *query.params]
    problems = [
        f"{query.where()}: {url.path} takes no parameter {name!r}"
        for name, _ in params
        if name not in paths[url.path]
    ]
    valid, always = _valid_fields(url.path)
    fields = {value for name, value in params if name == "field"}
    problems += [f"{query.where()}: unknown field {f!r}" for f in sorted(fields - valid)]
    if fields:
        returned = fields | always
        problems += [
            f"{query.where()}: column {c!r} is not among the requested fields"
            for c in query.columns
            if c.split(".")[0] not in returned
        ]
    return problems


# ------------------------------------------------------------------ provisioning


def test_datasources_provisioning_has_the_three_ceems_sources() -> None:
    loaded = yaml.safe_load(DATASOURCES_YML.read_text())
    assert loaded["apiVersion"] == 1
    names = [ds["name"] for ds in loaded["datasources"]]
    assert len(set(names)) == len(names)
    assert len(provisioned_datasources()) == len(names), "duplicate uid"
    by_name = {ds["name"]: ds for ds in loaded["datasources"]}

    lb, prometheus, api = by_name["CEEMS LB"], by_name["Prometheus"], by_name["CEEMS API"]
    assert (lb["type"], urlsplit(lb["url"]).port) == (PROMETHEUS, 9030)
    assert (prometheus["type"], urlsplit(prometheus["url"]).port) == (PROMETHEUS, 9090)
    assert (api["type"], urlsplit(api["url"]).port) == (INFINITY, 9020)
    assert api["url"] in api["jsonData"]["allowedHosts"]
    assert lb["jsonData"]["httpHeaderName1"] == "X-Ceems-Cluster-Id"
    assert api["jsonData"]["httpHeaderName1"] == "X-Grafana-User"
    # `$$` is Grafana's escape: the plugin receives ${__user.login}, its user macro.
    assert api["secureJsonData"]["httpHeaderValue1"] == "$${__user.login}"


def test_datasources_match_the_api_server_example() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "api-server" / "config.yml").read_text())
    by_name = {ds["name"]: ds for ds in provisioned_datasources().values()}
    cluster_ids = {cluster["id"] for cluster in config["clusters"]}
    assert by_name["CEEMS LB"]["secureJsonData"]["httpHeaderValue1"] in cluster_ids
    header = by_name["CEEMS API"]["jsonData"]["httpHeaderName1"]
    assert header in config["ceems_api_server"]["web"]["user_header_names"]


def test_dashboard_provider_points_at_the_documented_folder() -> None:
    loaded = yaml.safe_load(PROVIDERS_YML.read_text())
    assert loaded["apiVersion"] == 1
    [provider] = loaded["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert Path(path).is_absolute()
    # The doc tells operators to copy deploy/grafana/dashboards/*.json there.
    assert path in DOC.read_text()
    assert DASHBOARD_FILES, "no dashboards in deploy/grafana/dashboards"


# ------------------------------------------------------------------ dashboards


def test_dashboards_have_unique_uids_and_titles() -> None:
    dashboards = load_dashboards().values()
    uids = [d["uid"] for d in dashboards]
    titles = [d["title"] for d in dashboards]
    assert len(set(uids)) == len(uids) == len(DASHBOARD_FILES)
    assert len(set(titles)) == len(titles)
    assert all(d.get("id") is None for d in dashboards), "provisioned dashboards carry no id"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    assert isinstance(dashboard["templating"]["list"], list)
    panels = list(iter_panels(dashboard["panels"]))
    assert panels
    ids = [panel["id"] for panel in panels]
    assert len(set(ids)) == len(ids), "panel ids repeat"
    variables = variables_of(dashboard)
    for panel in panels:
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            ref = target.get("datasource", panel.get("datasource"))
            uid = resolve_datasource(ref, variables)
            assert uid in provisioned_datasources(), f"{panel['title']}: data source {uid!r}"
            assert ref["type"] == provisioned_datasources()[uid]["type"], panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            uid = resolve_datasource(variable["datasource"], variables)
            assert uid in provisioned_datasources(), f"variable {variable['name']}: {uid!r}"
        if variable["type"] == "datasource":
            assert variable["current"]["value"] in provisioned_datasources()


def _links(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        url = node.get("url")
        if isinstance(url, str) and url.startswith("/d/"):
            yield url
        for value in node.values():
            yield from _links(value)
    elif isinstance(node, list):
        for item in node:
            yield from _links(item)


def test_links_between_dashboards_resolve() -> None:
    dashboards = {d["uid"]: d for d in load_dashboards().values()}
    links = [link for d in dashboards.values() for link in _links(d)]
    assert links, "the unit list links to the unit's time series"
    for link in links:
        url = urlsplit(link)
        target = dashboards.get(url.path.split("/")[2])
        assert target is not None, link
        for name, _ in parse_qsl(url.query, keep_blank_values=True):
            if name.startswith("var-"):
                assert name[4:] in variables_of(target), link


# ------------------------------------------------------------------ PromQL


def test_every_promql_expression_parses() -> None:
    dashboards = load_dashboards()
    queries = [q for d in dashboards.values() for q in queries_of(d, PROMETHEUS)]
    assert len(queries) > 20
    errors = [e for d in dashboards.values() for e in promql_errors(d)]
    assert not errors, "\n".join(errors)


def _dashboard_with(expr: str) -> dict[str, Any]:
    ref = {"type": PROMETHEUS, "uid": "ceems-prometheus"}
    return {
        "uid": "broken",
        "templating": {"list": [{"name": "uuid", "type": "textbox"}]},
        "panels": [
            {"id": 1, "title": "Power", "datasource": ref, "targets": [{"expr": expr}]},
        ],
    }


@pytest.mark.parametrize(
    "expr",
    [
        "sum(rate(ceems_rapl_package_joules_total[$__rate_interval])",
        "rate(ceems_cpu_seconds_total[$__rate_interval]) by (instance)",
        'uuid:ceems_host_power_watts:pue{uuid="$nope"}',
    ],
)
def test_a_broken_expression_is_reported_with_its_place(expr: str) -> None:
    [error] = promql_errors(_dashboard_with(expr))
    assert error.startswith(f"broken / Power: {expr!r}: ")


def test_variables_are_substituted_before_parsing() -> None:
    expr = (
        'sum_over_time(sum(uuid:ceems_host_power_watts:pue{uuid="${uuid}"})'
        "[$__range:$__interval]) * [[uuid]]"
    )
    assert promql_errors(_dashboard_with(expr)) == []
    assert substitute(expr, {"uuid"}) == (
        'sum_over_time(sum(uuid:ceems_host_power_watts:pue{uuid="1234"})[1h:15s]) * 1234'
    )


@pytest.mark.parametrize(
    ("query", "expression"),
    [
        ("label_values(ceems_compute_units, instance)", "ceems_compute_units"),
        ({"query": 'label_values(up{job="x"}, instance)', "qryType": 1}, 'up{job="x"}'),
        ("query_result(topk(5, ceems_compute_units))", "topk(5, ceems_compute_units)"),
        ("label_values(instance)", None),
        ("label_names()", None),
        ("sum(ceems_compute_units)", "sum(ceems_compute_units)"),
    ],
)
def test_variable_queries_yield_their_promql(query: Any, expression: str | None) -> None:
    assert _variable_expression(query) == expression


def test_unit_dashboard_pins_every_selector_to_the_unit() -> None:
    dashboard = next(d for d in load_dashboards().values() if d["uid"] == UNIT_DASHBOARD)
    assert variables_of(dashboard)["uuid"]["type"] == "textbox"
    queries = queries_of(dashboard, PROMETHEUS)
    assert len(queries) >= 8
    for query in queries:
        assert provisioned_datasources()[query.datasource]["name"].startswith("CEEMS LB")
        assert unpinned_selectors(parse_promql(query, dashboard)) == [], query.where()


@pytest.mark.parametrize(
    ("expr", "unpinned"),
    [
        ('uuid:ceems_host_power_watts:pue{uuid="1234"}', []),
        ('sum_over_time(sum(uuid:ceems_host_power_watts:pue{uuid="1234"})[1h:1m]) * 60', []),
        ('{__name__="a", uuid="1234" or __name__="b", uuid="1234"}', []),
        (
            'uuid:ceems_host_power_watts:pue{uuid="1234"} / on (instance) group_left '
            "instance:ceems_host_power_watts:pue",
            ["instance:ceems_host_power_watts:pue"],
        ),
        ('rate(ceems_cpu_seconds_total{uuid=~"1234|5678"}[1m])', ["ceems_cpu_seconds_total"]),
        ('max_over_time(x{uuid="5678"}[1h:1m])', ["x"]),
        ('{__name__="a", uuid="1234" or __name__="b"}', ["{"]),
    ],
)
def test_unpinned_selectors_are_found(expr: str, unpinned: list[str]) -> None:
    found = unpinned_selectors(promql_parser.parse(expr))
    assert len(found) == len(unpinned)
    assert all(f.startswith(prefix) for f, prefix in zip(found, unpinned, strict=True))


def test_operator_dashboard_metrics_are_the_exporters() -> None:
    dashboard = next(d for d in load_dashboards().values() if d["uid"] == "ceems-operator-overview")
    names = {
        name
        for query in queries_of(dashboard, PROMETHEUS)
        for name in metric_names(parse_promql(query, dashboard))
    }
    exported = {name for name in names if ":" not in name}  # the rest are recording rules
    assert "ceems_compute_units" in exported
    patterns = documented_metric_patterns()
    undocumented = sorted(n for n in exported if not any(p.match(n) for p in patterns))
    assert not undocumented, f"not in docs/exporter.md: {undocumented}"


# ------------------------------------------------------------------ the API server's paths


def test_openapi_paths_carry_the_api_prefix() -> None:
    paths = openapi_parameters()
    assert {"from", "to", "cluster_id", "field"} <= paths["/api/v1/units"]


def test_every_api_url_exists_with_its_parameters() -> None:
    queries = [q for d in load_dashboards().values() for q in queries_of(d, INFINITY)]
    assert {urlsplit(q.text).path for q in queries} >= {"/api/v1/units", "/api/v1/usage/current"}
    problems = [p for q in queries for p in api_problems(q, openapi_parameters())]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("url", "columns", "problem"),
    [
        ("/api/v1/unitz?cluster_id=${cluster_id}", (), "no path /api/v1/unitz"),
        ("/api/v1/units?colour=red", (), "takes no parameter 'colour'"),
        ("/api/v1/units?field=uuid&field=energy", (), "unknown field 'energy'"),
        ("/api/v1/units?field=uuid", ("total_cpu_energy_usage_kwh.total",), "column"),
        ("http://api:9020/api/v1/units", (), "absolute URL"),
        ("/api/v1/${path}", (), "variable in the path"),
    ],
)
def test_a_wrong_api_url_is_reported(url: str, columns: tuple[str, ...], problem: str) -> None:
    query = Query("made-up", "Units", "ceems-api", url, columns=columns)
    [found] = api_problems(query, openapi_parameters())
    assert problem in found and found.startswith("made-up / Units: ")


def test_url_options_params_are_checked_too() -> None:
    query = Query("made-up", "Units", "ceems-api", "/api/v1/units", (("colour", "red"),))
    assert api_problems(query, openapi_parameters()) == [
        "made-up / Units: '/api/v1/units': /api/v1/units takes no parameter 'colour'"
    ]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Api:
    """The API server on the HTTP tests' scenario store, its clock at T0."""
    scenario = build_store(tmp_path_factory.mktemp("store") / "ceems_api_server.db")
    return Api(create_app(make_config(), scenario.engine, clock=lambda: float(T0)))


def test_every_api_url_answers_with_the_dashboards_columns(api: Api) -> None:
    # The day before T0 on slurm-0, as alice would see it in Grafana.
    values = {"cluster_id": "slurm-0", "__from": str(T0 - 86_400), "__to": str(T0)}
    for dashboard in load_dashboards().values():
        for query in queries_of(dashboard, INFINITY):
            url = substitute(query.text, set(variables_of(dashboard)), values)
            params: dict[str, list[str]] = {}
            for name, value in query.params:
                params.setdefault(name, []).append(value)
            response = asyncio.run(api.get(url, user="alice", params=params or None))
            assert response.status_code == 200, f"{query.where()}: {response.text}"
            rows = response.json()["data"]
            assert rows, query.where()
            for column in query.columns:
                key = column.split(".")[0]
                assert any(key in row for row in rows), f"{query.where()}: no {key!r}"
