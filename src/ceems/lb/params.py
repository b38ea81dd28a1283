"""Request parameters as the backend will read them: URL query and form body together.

Prometheus reads a parameter from the form body or the URL alike, so both are parsed and
authorised, and what is forwarded is re-encoded from exactly the parsed pairs. A byte the
two parsers could read differently (`;`, bad percent-escapes, invalid UTF-8) therefore
never reaches the backend unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 10_000


class BadParamsError(Exception):
    """The query string or form body cannot be parsed; answered with 400."""


def parse_pairs(raw: bytes, where: str) -> list[tuple[str, str]]:
    """`a=1&b=2` as pairs; refuses invalid UTF-8, `;` separators and absurd field counts."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise BadParamsError(f"{where}: not URL-encoded (raw non-ASCII bytes)") from None
    if ";" in text:
        # Go's parser drops `;`-separated pairs, Python's keeps them: refuse the ambiguity.
        raise BadParamsError(f"{where}: ';' is not a parameter separator; encode it as %3B")
    try:
        return parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, encoding="utf-8",
            errors="strict", max_num_fields=MAX_FIELDS,
        )  # fmt: skip
    except UnicodeDecodeError:
        raise BadParamsError(f"{where}: a percent-escape is not valid UTF-8") from None
    except ValueError as err:
        raise BadParamsError(f"{where}: {err}") from None


@dataclass(frozen=True, slots=True)
class Params:
    """Parameters of the URL and of a form body, kept apart so they are forwarded in place."""

    url: list[tuple[str, str]]
    form: list[tuple[str, str]] | None  # None: the request has no form body

    def values(self, name: str) -> list[str]:
        """Every value of `name`, body and URL."""
        found = [v for k, v in self.form or () if k == name]
        return found + [v for k, v in self.url if k == name]

    def query_string(self) -> bytes:
        """The URL parameters, re-encoded."""
        return urlencode(self.url).encode()

    def body(self) -> bytes:
        """The form body, re-encoded (empty without one)."""
        return urlencode(self.form).encode() if self.form is not None else b""


def read_params(query_string: bytes, method: str, content_type: str, body: bytes) -> Params:
    """Both sources; a POST must be a form (that is what the Prometheus API accepts)."""
    url = parse_pairs(query_string, "query string")
    if method != "POST":
        if body:
            raise BadParamsError(f"a {method} request carries no body")
        return Params(url, None)
    media = content_type.split(";", 1)[0].strip().lower()
    if media != FORM_TYPE:
        raise BadParamsError(f"POST body must be {FORM_TYPE}, not {media or 'missing'}")
    return Params(url, parse_pairs(body, "form body"))
