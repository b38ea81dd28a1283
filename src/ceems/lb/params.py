"""Request parameters as the backend will read them: URL query and form body together.

Prometheus reads a parameter from the form body or the URL alike, so both are parsed and
authorised, and what is forwarded is re-encoded from exactly the parsed pairs. A byte the
two parsers could read differently (`;`, bad percent-escapes, invalid UTF-8) therefore
never reaches the backend unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote_plus, unquote

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 10_000
# Fields (`name=value`) and components up to this size are decoded and encoded once and
# remembered: a dashboard sends the same PromQL with every refresh (only the times change),
# and percent-coding it is most of the LB's own work on a small query. Larger ones are
# rare; they are not kept.
CACHED_COMPONENT = 4096


class BadParamsError(Exception):
    """The query string or form body cannot be parsed; answered with 400."""


def parse_pairs(raw: bytes, where: str) -> list[tuple[str, str]]:
    """`a=1&b=2` as pairs; refuses invalid UTF-8, `;` separators and absurd field counts."""
    return _parse(raw, where)[0]


def _parse(raw: bytes, where: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The pairs, and each field re-encoded as `encode_pairs` writes it."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise BadParamsError(f"{where}: not URL-encoded (raw non-ASCII bytes)") from None
    if ";" in text:
        # Go's parser drops `;`-separated pairs, Python's keeps them: refuse the ambiguity.
        raise BadParamsError(f"{where}: ';' is not a parameter separator; encode it as %3B")
    # urllib's parse_qsl(keep_blank_values=True, errors="strict"), field by field
    if text and text.count("&") >= MAX_FIELDS:
        raise BadParamsError(f"{where}: Max number of fields exceeded")
    pairs: list[tuple[str, str]] = []
    encoded: list[str] = []
    try:
        for item in text.split("&") if text else ():
            if item:
                pair, again = _field(item) if len(item) > CACHED_COMPONENT else _cached(item)
                pairs.append(pair)
                encoded.append(again)
    except UnicodeDecodeError:
        raise BadParamsError(f"{where}: a percent-escape is not valid UTF-8") from None
    return pairs, encoded


def _field(item: str) -> tuple[tuple[str, str], str]:
    """`name=value` decoded, and re-encoded (a function of the field's text alone)."""
    name, _, value = item.partition("=")
    if "%" in name or "+" in name:
        name = _unquote_plus(name)
    if "%" in value or "+" in value:
        value = _unquote_plus(value)
    return (name, value), quote_plus(name) + "=" + quote_plus(value)


# A dashboard sends the same fields with every refresh (the query, the step; the times
# change): one look-up per field replaces splitting, decoding and, later, encoding it.
# A decoding error is raised, never kept.
_cached = lru_cache(maxsize=4096)(_field)


def _unquote_plus(component: str) -> str:
    return unquote(component.replace("+", " "), encoding="utf-8", errors="strict")


_quote_plus_cached = lru_cache(maxsize=4096)(quote_plus)


def _encoded(component: str) -> str:
    if len(component) > CACHED_COMPONENT:
        return quote_plus(component)
    return _quote_plus_cached(component)


def encode_pairs(pairs: list[tuple[str, str]]) -> bytes:
    """`urlencode(pairs)`: what Go's and urllib's parsers read back as the same pairs."""
    return "&".join([_encoded(k) + "=" + _encoded(v) for k, v in pairs]).encode("ascii")


@dataclass(frozen=True, slots=True)
class Params:
    """Parameters of the URL and of a form body, kept apart so they are forwarded in place."""

    url: list[tuple[str, str]]
    form: list[tuple[str, str]] | None  # None: the request has no form body
    # Each pair re-encoded, when the parser had it already (read_params): no second pass.
    url_fields: list[str] | None = field(default=None, compare=False, repr=False)
    form_fields: list[str] | None = field(default=None, compare=False, repr=False)

    def values(self, name: str) -> list[str]:
        """Every value of `name`, body and URL."""
        found = [v for k, v in self.form or () if k == name]
        return found + [v for k, v in self.url if k == name]

    def query_string(self) -> bytes:
        """The URL parameters, re-encoded."""
        if self.url_fields is not None:
            return "&".join(self.url_fields).encode("ascii")
        return encode_pairs(self.url)

    def body(self) -> bytes:
        """The form body, re-encoded (empty without one)."""
        if self.form is None:
            return b""
        if self.form_fields is not None:
            return "&".join(self.form_fields).encode("ascii")
        return encode_pairs(self.form)


def read_params(query_string: bytes, method: str, content_type: str, body: bytes) -> Params:
    """Both sources; a POST must be a form (that is what the Prometheus API accepts)."""
    url, url_fields = _parse(query_string, "query string")
    if method != "POST":
        if body:
            raise BadParamsError(f"a {method} request carries no body")
        return Params(url, None, url_fields)
    media = content_type.split(";", 1)[0].strip().lower()
    if media != FORM_TYPE:
        raise BadParamsError(f"POST body must be {FORM_TYPE}, not {media or 'missing'}")
    form, form_fields = _parse(body, "form body")
    return Params(url, form, url_fields, form_fields)
