"""Request parameters: what the LB parses is what it authorises, and what it forwards.

`read_params` reads the URL query and a form body the way Prometheus (Go's `url.ParseQuery`)
does; anything the two parsers could read differently is refused. The forwarded request is
re-encoded from the parsed pairs, so re-encoding then parsing again must give the same pairs.
"""

from __future__ import annotations

import random
from urllib.parse import parse_qsl, quote, urlencode

import pytest

from ceems.lb import params as params_module
from ceems.lb.params import (
    CACHED_COMPONENT,
    FORM_TYPE,
    MAX_FIELDS,
    BadParamsError,
    Params,
    parse_pairs,
    read_params,
)

QUERY = 'rate(ceems_compute_unit_cpu_user_seconds_total{uuid=~"a-1|a-2"}[5m]) + 1'


def test_get_reads_the_url_only() -> None:
    params = read_params(b"query=up&time=1767225900", "GET", "", b"")
    assert params.url == [("query", "up"), ("time", "1767225900")]
    assert params.form is None
    assert params.body() == b""


def test_get_with_a_body_is_refused() -> None:
    with pytest.raises(BadParamsError, match="a GET request carries no body"):
        read_params(b"query=up", "GET", FORM_TYPE, b"query=secret")


@pytest.mark.parametrize("method", ["DELETE", "PUT", "HEAD"])
def test_other_methods_without_a_body_read_the_url(method: str) -> None:
    params = read_params(b"query=up", method, "", b"")
    assert params == Params([("query", "up")], None)


@pytest.mark.parametrize(
    "content_type",
    [
        FORM_TYPE,
        "application/x-www-form-urlencoded; charset=UTF-8",
        "application/x-www-form-urlencoded;charset=utf-8",
        "Application/X-WWW-Form-Urlencoded",
        "  application/x-www-form-urlencoded  ; charset=utf-8",
    ],
)
def test_post_reads_url_and_form(content_type: str) -> None:
    body = b"query=" + quote(QUERY, safe="").encode()
    params = read_params(b"time=1767225900", "POST", content_type, body)
    assert params.url == [("time", "1767225900")]
    assert params.form == [("query", QUERY)]


def test_post_with_an_empty_form_has_a_form() -> None:
    params = read_params(b"query=up", "POST", FORM_TYPE, b"")
    assert params.form == []
    assert params.body() == b""
    assert params.values("query") == ["up"]


@pytest.mark.parametrize(
    "content_type",
    ["", "application/json", "multipart/form-data; boundary=x", "text/plain", FORM_TYPE + "x"],
)
def test_post_must_be_a_form(content_type: str) -> None:
    with pytest.raises(BadParamsError, match="POST body must be application/x-www-form"):
        read_params(b"", "POST", content_type, b"query=up")


def test_missing_content_type_is_named() -> None:
    with pytest.raises(BadParamsError, match="not missing"):
        read_params(b"", "POST", "", b"query=up")


def test_values_merge_body_then_url() -> None:
    params = read_params(
        b"match[]=url1&match[]=url2&start=1", "POST", FORM_TYPE, b"match[]=body1&end=2"
    )
    assert params.values("match[]") == ["body1", "url1", "url2"]
    assert params.values("start") == ["1"]
    assert params.values("end") == ["2"]
    assert params.values("query") == []


def test_values_without_a_form() -> None:
    assert Params([("a", "1"), ("b", "2"), ("a", "3")], None).values("a") == ["1", "3"]


@pytest.mark.parametrize(
    ("raw", "pairs"),
    [
        (b"", []),
        (b"a=1", [("a", "1")]),
        (b"a=1&a=2", [("a", "1"), ("a", "2")]),
        (b"a=&b", [("a", ""), ("b", "")]),
        (b"a==b", [("a", "=b")]),
        (b"a=1&&b=2&", [("a", "1"), ("b", "2")]),
        (b"a+b=c+d", [("a b", "c d")]),
        (b"a=%2B", [("a", "+")]),
        (b"a=%3B", [("a", ";")]),
        (b"a=%26b%3Dc", [("a", "&b=c")]),
        (b"q=%7Bservice_name%3D%22a-1%22%7D", [("q", '{service_name="a-1"}')]),
        (b"a=%C3%A9%E2%9C%93", [("a", "é✓")]),
        (b"a=%F0%9F%94%A5", [("a", "\U0001f525")]),
        (b"%61=%62", [("a", "b")]),
    ],
)
def test_parse_pairs(raw: bytes, pairs: list[tuple[str, str]]) -> None:
    assert parse_pairs(raw, "query string") == pairs


@pytest.mark.parametrize(
    "raw",
    [b"query=up;time=1", b"a=1;", b";", b"a=%3B;b", b"query=up&x=;"],
)
def test_semicolons_are_refused(raw: bytes) -> None:
    # Go's parser drops `;`-separated pairs, Python's kept them once: never guess.
    with pytest.raises(BadParamsError, match="';' is not a parameter separator"):
        parse_pairs(raw, "query string")


def test_error_names_where() -> None:
    with pytest.raises(BadParamsError, match=r"^form body: "):
        read_params(b"", "POST", FORM_TYPE, b"a=1;b=2")
    with pytest.raises(BadParamsError, match=r"^query string: "):
        read_params(b"a=1;b=2", "POST", FORM_TYPE, b"")


@pytest.mark.parametrize("raw", [b"a=%C3%28", b"a=%FF", b"%80=1", b"a=%ED%A0%80", b"a=%C3"])
def test_percent_escapes_of_invalid_utf8_are_refused(raw: bytes) -> None:
    with pytest.raises(BadParamsError, match="percent-escape is not valid UTF-8"):
        parse_pairs(raw, "query string")


@pytest.mark.parametrize(
    ("raw", "value", "forwarded"),
    [(b"a=%ZZ", "%ZZ", b"a=%25ZZ"), (b"a=%2", "%2", b"a=%252"), (b"a=%", "%", b"a=%25")],
)
def test_malformed_percent_escapes_are_literal_and_forwarded_escaped(
    raw: bytes, value: str, forwarded: bytes
) -> None:
    # Go refuses these; the LB reads them literally and forwards them escaped, so the
    # backend reads exactly the literal value that was authorised.
    params = Params(parse_pairs(raw, "query string"), None)
    assert params.url == [("a", value)]
    assert params.query_string() == forwarded
    assert parse_pairs(params.query_string(), "again") == params.url


@pytest.mark.parametrize("raw", ["a=é".encode(), b"a=\xff", b"q=\x80", "é=1".encode("latin-1")])
def test_raw_non_ascii_is_refused(raw: bytes) -> None:
    with pytest.raises(BadParamsError, match="raw non-ASCII"):
        parse_pairs(raw, "query string")


def test_raw_non_ascii_form_body_is_refused() -> None:
    with pytest.raises(BadParamsError, match="form body: not URL-encoded"):
        read_params(b"", "POST", FORM_TYPE, 'query=up{uuid="é"}'.encode())


def test_field_count_limit() -> None:
    exactly = b"&".join([b"a=1"] * MAX_FIELDS)
    assert len(parse_pairs(exactly, "query string")) == MAX_FIELDS
    with pytest.raises(BadParamsError, match="Max number of fields exceeded"):
        parse_pairs(exactly + b"&a=1", "query string")
    # Empty fields count too: a body of separators is not a way around the limit.
    with pytest.raises(BadParamsError, match="Max number of fields exceeded"):
        parse_pairs(b"&" * MAX_FIELDS, "form body")


SPECIAL_VALUES = [
    QUERY,
    '{service_name="a-1"}',
    'up{uuid=~"a-1|a-2", job!="x"}',
    "sum by (uuid) (a) + on (uuid) b",
    "a+b c%d&e=f;g#h?i/j\\k'l\"m",
    'x=~"é|ü|✓|\U0001f525"',
    " leading and trailing ",
    "",
    "%ZZ%2%",
    "\x00\t\n\r",
    "100%",
]


@pytest.mark.parametrize("value", SPECIAL_VALUES)
def test_reencoding_round_trips(value: str) -> None:
    pairs = [("query", value), (value, "k"), ("match[]", value)]
    params = Params(pairs, pairs)
    for encoded in (params.query_string(), params.body()):
        text = encoded.decode("ascii")  # always plain ASCII
        assert ";" not in text
        for raw in ("{", '"', "|", " ", "#", "?", "\\"):
            assert raw not in text
        assert parse_pairs(encoded, "re-encoded") == pairs


def test_reencoding_keeps_plus_and_space_apart() -> None:
    params = Params([("query", "a + b"), ("x", "+")], None)
    assert params.query_string() == b"query=a+%2B+b&x=%2B"
    assert parse_pairs(params.query_string(), "q") == [("query", "a + b"), ("x", "+")]


def test_reencoding_is_stable() -> None:
    raw = b"query=rate%28x%7Buuid%3D%22a-1%22%7D%5B5m%5D%29&time=1&match%5B%5D=a&match%5B%5D=b"
    params = read_params(raw, "GET", "", b"")
    once = params.query_string()
    assert read_params(once, "GET", "", b"").query_string() == once
    assert params.values("match[]") == ["a", "b"]


def test_form_reencoding_round_trips() -> None:
    body = b"query=" + quote(QUERY).encode() + b"&start=1&end=2&step=15s"
    params = read_params(b"", "POST", FORM_TYPE, body)
    assert params.values("query") == [QUERY]
    again = read_params(params.query_string(), "POST", FORM_TYPE, params.body())
    assert again == params


def test_random_values_round_trip() -> None:
    rng = random.Random(20260101)
    alphabet = [chr(c) for c in range(0x20, 0x7F)] + list("éü✓\u00a0\u2028\U0001f525\x00\n")
    for _ in range(500):
        pairs = [
            ("".join(rng.choices(alphabet, k=rng.randint(0, 6))),
             "".join(rng.choices(alphabet, k=rng.randint(0, 30))))
            for _ in range(rng.randint(1, 4))
        ]  # fmt: skip
        params = Params(pairs, pairs)
        assert parse_pairs(params.query_string(), "url") == pairs
        assert parse_pairs(params.body(), "body") == pairs


def test_parsing_matches_urllib(monkeypatch: pytest.MonkeyPatch) -> None:
    # parse_pairs splits and decodes itself (to remember decoded components): it must read
    # every input exactly as urllib's parse_qsl did, cached or not.
    rng = random.Random(20261123)
    alphabet = [*"ab=&+%2BCc3F;", "%7B", "%22", "%C3%A9", "%E2%9C", "%ZZ", "%", "%2"]
    for limit in (CACHED_COMPONENT, 0):  # with, then without the component cache
        monkeypatch.setattr(params_module, "CACHED_COMPONENT", limit)
        for _ in range(3000):
            raw = "".join(rng.choices(alphabet, k=rng.randint(0, 12)))
            if ";" in raw:
                continue  # refused before parsing
            try:
                expected = parse_qsl(
                    raw, keep_blank_values=True, encoding="utf-8", errors="strict",
                    max_num_fields=MAX_FIELDS,
                )  # fmt: skip
            except UnicodeDecodeError:
                with pytest.raises(BadParamsError, match="not valid UTF-8"):
                    parse_pairs(raw.encode(), "q")
                continue
            assert parse_pairs(raw.encode(), "q") == expected, raw


def test_encoding_matches_urlencode() -> None:
    rng = random.Random(7)
    alphabet = [chr(c) for c in range(0x20, 0x7F)] + list("é✓\U0001f525\x00\n")
    for _ in range(500):
        pairs = [
            ("".join(rng.choices(alphabet, k=rng.randint(0, 5))),
             "".join(rng.choices(alphabet, k=rng.randint(0, 20))))
            for _ in range(rng.randint(0, 4))
        ]  # fmt: skip
        assert Params(pairs, None).query_string() == urlencode(pairs).encode()


def test_read_params_forwards_what_encode_pairs_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    # read_params re-encodes each field as it parses it (and remembers fields): what it
    # forwards must be exactly what encoding the parsed pairs again gives, cached or not.
    rng = random.Random(11)
    alphabet = [*"ab=+%2BCc3F/:", "%7B", "%22", "%C3%A9", "%20", "%2F", "~", "*", "%"]
    for limit in (CACHED_COMPONENT, 0):
        monkeypatch.setattr(params_module, "CACHED_COMPONENT", limit)
        for _ in range(2000):
            raw = "&".join(
                "".join(rng.choices(alphabet, k=rng.randint(0, 10)))
                for _ in range(rng.randint(0, 4))
            ).encode()
            try:
                params = read_params(raw, "POST", FORM_TYPE, raw)
            except BadParamsError:
                continue
            assert params == Params(params.url, params.form)
            assert params.query_string() == Params(params.url, None).query_string()
            assert params.body() == Params(params.form or [], None).query_string()
            assert params.query_string() == urlencode(params.url).encode()


def test_a_field_that_cannot_be_decoded_is_refused_every_time() -> None:
    for _ in range(2):  # a decoding error is never remembered as a result
        with pytest.raises(BadParamsError, match="not valid UTF-8"):
            read_params(b"query=%E2%9C", "GET", "", b"")
