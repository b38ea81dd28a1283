"""PromQL authorisation: allowed queries name exactly their units; every other shape is refused.

The adversarial table crosses every PromQL construct with every way of selecting series that
are not the user's; all of those must be refused before anything reaches a backend.
"""

from __future__ import annotations

import time

import pytest

from ceems.lb import authz
from ceems.lb.authz import MAX_QUERY_BYTES, DecisionCache, QueryRefusedError, authorise

NODE_METRICS = ("ceems_emissions_gCo2_kWh", "instance:ceems_host_power_watts:pue")

ALLOWED = [
    ('uuid:ceems_host_power_watts:pue{uuid="101"}', {"101"}),
    ('rate(ceems_compute_unit_cpu_user_seconds_total{uuid=~"101|102"}[5m])', {"101", "102"}),
    ('sum by (uuid) (uuid:ceems_cpu_usage:ratio_irate{uuid=~"a1\\\\.b|c-d"})', {"a1.b", "c-d"}),
    ('{__name__="uuid:ceems_gpu_usage:ratio", uuid="7"}', {"7"}),
    ('{uuid="8"}', {"8"}),
    ('foo{uuid="1"} / on (instance) group_left () ceems_emissions_gCo2_kWh', {"1"}),
    ('sum_over_time(foo{uuid="1"}[1h:30s] offset 5m)', {"1"}),
    ('foo{uuid="1"} @ 1700000000', {"1"}),
    ('foo{uuid="1", uuid=~"1|2"}', {"1"}),
    ('foo{uuid="1" or uuid="2"}', {"1", "2"}),
    ("instance:ceems_host_power_watts:pue", set()),
    ('max by (provider) (ceems_emissions_gCo2_kWh{country_code="FR"})', set()),
    ("1 + 1", set()),
    ('label_replace(foo{uuid="3"}, "x", "$1", "uuid", "(.*)")', {"3"}),
    ('absent(foo{uuid="4"})', {"4"}),
]


@pytest.mark.parametrize(("query", "uuids"), ALLOWED)
def test_allowed_queries_name_their_units(query: str, uuids: set[str]) -> None:
    assert authorise(query, NODE_METRICS).uuids == uuids


# Ways of selecting series that are not pinned to named units.
BAD_SELECTORS = [
    "uuid:ceems_host_power_watts:pue",  # no uuid at all
    'uuid:ceems_host_power_watts:pue{uuid=~".*"}',  # everything
    'uuid:ceems_host_power_watts:pue{uuid=~"10.|11"}',  # '.' is a wildcard
    'uuid:ceems_host_power_watts:pue{uuid!="101"}',  # everyone else
    'uuid:ceems_host_power_watts:pue{uuid!~"101"}',
    'uuid:ceems_host_power_watts:pue{uuid=""}',  # series without a uuid
    'uuid:ceems_host_power_watts:pue{uuid=~"101|"}',  # empty alternative
    'uuid:ceems_host_power_watts:pue{uuid=~"(?i)abc"}',  # flags
    'uuid:ceems_host_power_watts:pue{uuid=~"1[0-9]+"}',  # classes
    'uuid:ceems_host_power_watts:pue{uuid=~"10\\\\d"}',  # escapes
    '{__name__=~"uuid:.*"}',  # name regex, no uuid
    '{__name__="ceems_emissions_gCo2_kWh", __name__=~".+"}',  # name trick on the allow-list
    'ceems_compute_unit_cpus{job="ceems"}',  # unit series, by another label
    '{uuid="1" or job="ceems"}',  # one or-branch unpinned
    'ceems_emissions_gCo2_kWh{uuid!="x"}',  # allow-listed name with a negative uuid
]

# Every place a selector can sit.
CONSTRUCTS = [
    "SEL",
    "rate(SEL[5m])",
    "sum by (uuid) (SEL)",
    "topk(5, SEL)",
    'count_values("v", SEL)',
    "SEL + on (instance) group_left () ceems_emissions_gCo2_kWh",
    'uuid:ceems_host_power_watts:pue{uuid="101"} or SEL',
    'uuid:ceems_host_power_watts:pue{uuid="101"} and SEL',
    'uuid:ceems_host_power_watts:pue{uuid="101"} unless SEL',
    "max_over_time(SEL[1h:1m])",
    "SEL offset 1h",
    "SEL @ 1700000000",
    "-SEL",
    "(SEL)",
    'label_replace(SEL, "uuid", "101", "uuid", ".*")',
    'label_join(SEL, "x", ",", "uuid")',
    "absent_over_time(SEL[5m])",
    "histogram_quantile(0.9, sum by (le) (rate(SEL[5m])))",
    "sort_desc(SEL)",
    'uuid:ceems_host_power_watts:pue{uuid="101"} * on () group_left () count(SEL)',
    "vector(1) + scalar(sum(SEL))",
    "quantile_over_time(0.5, SEL[10m] offset 1d)",
    "sum(SEL) by (uuid) > bool 0",
    "timestamp(SEL)",
    "clamp_min(SEL, 0)",
]


@pytest.mark.parametrize("construct", CONSTRUCTS)
@pytest.mark.parametrize("selector", BAD_SELECTORS)
def test_unpinned_selectors_are_refused_everywhere(construct: str, selector: str) -> None:
    query = construct.replace("SEL", selector)
    with pytest.raises(QueryRefusedError):
        authorise(query, NODE_METRICS)


def test_adversarial_suite_is_large() -> None:
    assert len(CONSTRUCTS) * len(BAD_SELECTORS) >= 100


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("sum(", "invalid PromQL"),
        ('foo{uuid="1"', "invalid PromQL"),
        ("", "invalid PromQL"),
        ('foo{uuid="1"} + ' * 20_000 + "1", "longer than"),
        ('foo{uuid!="1"}', "negative uuid matcher"),
        ("secret_metric", "not an allowed node metric"),
    ],
)
def test_bad_input_gets_a_reason(query: str, reason: str) -> None:
    with pytest.raises(QueryRefusedError, match=reason):
        authorise(query, NODE_METRICS)
    assert len(('foo{uuid="1"} + ' * 20_000).encode()) > MAX_QUERY_BYTES


def test_allow_list_is_by_exact_name() -> None:
    with pytest.raises(QueryRefusedError):
        authorise("ceems_emissions_gCo2_kWh")  # empty allow-list
    assert authorise("ceems_emissions_gCo2_kWh", NODE_METRICS).uuids == frozenset()


def test_a_thousand_uuids_are_named() -> None:
    uuids = [str(1_000_000 + i) for i in range(1000)]
    selector = f'ceems_compute_unit_cpu_user_seconds_total{{uuid=~"{"|".join(uuids)}"}}'
    query = f"sum by (uuid) (rate({selector}[5m]))"
    started = time.perf_counter()
    decision = authorise(query)
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert decision.uuids == frozenset(uuids)
    print(f"authorised a 1,000-uuid query in {elapsed_ms:.2f} ms")  # a figure, not a test


# ---- the cache of decisions ------------------------------------------------------------------


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every query authz parses, in order."""
    seen: list[str] = []
    real = authz.parse

    def counting(query: str) -> object:
        seen.append(query)
        return real(query)

    monkeypatch.setattr(authz, "parse", counting)
    return seen


def test_the_cache_parses_a_query_once(parses: list[str]) -> None:
    cache = DecisionCache()
    query, uuids = ALLOWED[1]
    first = cache.authorise(query, frozenset(NODE_METRICS))
    assert cache.authorise(query, frozenset(NODE_METRICS)) is first
    assert first.uuids == uuids and parses == [query]


def test_the_cache_answers_as_authorise(parses: list[str]) -> None:
    cache = DecisionCache()
    for _ in range(2):
        for query, uuids in ALLOWED:
            assert cache.authorise(query, frozenset(NODE_METRICS)) == authorise(query, NODE_METRICS)
            assert cache.authorise(query, frozenset(NODE_METRICS)).uuids == uuids


@pytest.mark.parametrize("selector", BAD_SELECTORS)
def test_the_cache_refuses_every_time(parses: list[str], selector: str) -> None:
    cache = DecisionCache()
    for _ in range(3):
        with pytest.raises(QueryRefusedError):
            cache.authorise(selector, frozenset(NODE_METRICS))
    assert len(parses) == 3 and len(cache) == 0  # refusals are never kept


def test_a_cached_decision_is_per_allow_list_and_label() -> None:
    cache = DecisionCache()
    node = "instance:ceems_host_power_watts:pue"
    assert cache.authorise(node, frozenset({node})).uuids == frozenset()
    # the same text under another allow-list (or none) is decided afresh: refused
    with pytest.raises(QueryRefusedError):
        cache.authorise(node, frozenset())
    pinned = '{service_name="a-1"}'
    assert cache.authorise(pinned, frozenset(), label="service_name").uuids == {"a-1"}
    with pytest.raises(QueryRefusedError, match="not pinned"):
        cache.authorise(pinned, frozenset())


def test_the_cache_stays_within_its_budget() -> None:
    cache = DecisionCache(budget_bytes=2000)
    queries = [f'foo{{uuid="{i}"}}' for i in range(50)]
    for query in queries:
        cache.authorise(query, frozenset())
        assert cache.used <= 2000
    assert 0 < len(cache) < 50
    # the most recent are kept, the oldest evicted
    assert (queries[-1], "uuid", frozenset()) in cache._entries
    assert (queries[0], "uuid", frozenset()) not in cache._entries
    huge = 'foo{uuid="1"} + ' * 200 + "1"
    assert cache.authorise(huge, frozenset()).uuids == {"1"}  # answered, too big to keep
    assert (huge, "uuid", frozenset()) not in cache._entries
