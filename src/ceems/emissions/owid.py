"""Yearly carbon intensity per country from Our World in Data, a table shipped in the package."""

from __future__ import annotations

import csv
import math
import re
from importlib import resources

from ceems.emissions.provider import EmissionFactor, ProviderConfig, ProviderError

DATA_FILE = "owid_carbon_intensity.csv"
COLUMNS = ["country_code", "country", "year", "gco2_per_kwh"]
_COUNTRY_CODE = re.compile(r"[A-Z]{2}")


def _parse_row(row: list[str], lineno: int) -> EmissionFactor:
    if len(row) != len(COLUMNS):
        raise ProviderError(f"owid table line {lineno}: expected {len(COLUMNS)} columns: {row}")
    code, country, year, value = row
    if not _COUNTRY_CODE.fullmatch(code):
        raise ProviderError(f"owid table line {lineno}: {code!r} is not an ISO alpha-2 code")
    if not country:
        raise ProviderError(f"owid table line {lineno}: empty country name")
    if not year.isdigit():
        raise ProviderError(f"owid table line {lineno}: year {year!r} is not a year")
    try:
        number = float(value)
    except ValueError as err:
        raise ProviderError(f"owid table line {lineno}: {value!r} is not a number") from err
    if not math.isfinite(number) or number < 0:
        raise ProviderError(f"owid table line {lineno}: {value!r} is not a carbon intensity")
    return EmissionFactor(code, country, number)


def parse_owid_csv(text: str) -> dict[str, EmissionFactor]:
    """Factors keyed by country code from the OWID table; lines starting with # are comments."""
    rows = [
        (lineno, line)
        for lineno, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.startswith("#")
    ]
    if not rows:
        raise ProviderError("owid table is empty")
    header_lineno, header = rows[0]
    if next(csv.reader([header])) != COLUMNS:
        raise ProviderError(
            f"owid table line {header_lineno}: header must be {','.join(COLUMNS)}, got {header!r}"
        )
    factors: dict[str, EmissionFactor] = {}
    for lineno, line in rows[1:]:
        factor = _parse_row(next(csv.reader([line])), lineno)
        if factor.country_code in factors:
            raise ProviderError(f"owid table line {lineno}: {factor.country_code} appears twice")
        factors[factor.country_code] = factor
    return factors


def load_owid_table() -> dict[str, EmissionFactor]:
    """The table shipped in `ceems/emissions/data/`, parsed."""
    text = resources.files(__package__).joinpath("data", DATA_FILE).read_text(encoding="utf-8")
    return parse_owid_csv(text)


class OwidProvider:
    """Static OWID factors: every country, or only the node's when its country is configured."""

    name = "owid"
    display_name = "OWID"
    refresh_interval_s = 0.0

    def __init__(self, config: ProviderConfig) -> None:
        table = load_owid_table()
        code = config.country_code
        if code and code not in table:
            raise ProviderError(
                f"owid: no carbon intensity for country code {code!r}"
                f" (the table covers {len(table)} countries)"
            )
        self._factors = {code: table[code]} if code else table

    def factors(self) -> dict[str, EmissionFactor]:
        """The table's factors; the same at every call."""
        return dict(self._factors)
