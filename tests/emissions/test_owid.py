"""The OWID table shipped in the package and the provider serving it."""

from __future__ import annotations

from importlib import resources

import pytest

from ceems.emissions.owid import DATA_FILE, OwidProvider, load_owid_table, parse_owid_csv
from ceems.emissions.provider import EmissionFactor, ProviderConfig, ProviderError

EU_27 = [
    *("AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE"),
    *("IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE"),
]
OTHERS = ["US", "CA", "GB", "CH", "NO", "IN", "CN", "JP", "AU", "BR", "ZA", "KR", "MX", "TR"]


@pytest.mark.parametrize(
    ("code", "country", "value"),
    [
        ("FR", "France", 56.03859),
        ("DE", "Germany", 380.95047),
        ("US", "United States", 369.47318),
        ("IN", "India", 713.4407),
        ("CN", "China", 582.31696),
        ("NO", "Norway", 30.080084),
        ("GB", "United Kingdom", 237.58902),
        ("PL", "Poland", 661.92584),
        ("CF", "Central African Republic", 0.0),
    ],
)
def test_table_has_owid_latest_value(code: str, country: str, value: float) -> None:
    assert load_owid_table()[code] == EmissionFactor(code, country, value)


@pytest.mark.parametrize("code", EU_27 + OTHERS)
def test_table_covers_major_countries(code: str) -> None:
    assert code in load_owid_table()


def test_table_holds_only_countries() -> None:
    table = load_owid_table()
    assert len(table) > 200
    assert all(len(code) == 2 and code.isupper() for code in table)
    # Aggregates ("World", "Europe", ...) carry no ISO code and stay out, as in CEEMS.
    assert not {"ZZ", "XK"} & set(table)
    assert "World" not in {factor.country for factor in table.values()}


def test_data_file_names_its_source_and_year() -> None:
    text = resources.files("ceems.emissions").joinpath("data", DATA_FILE).read_text()
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "Our World in Data" in comments
    assert "Data year: 2023" in comments


def test_provider_serves_every_country_without_a_configured_one() -> None:
    assert OwidProvider(ProviderConfig()).factors() == load_owid_table()


def test_provider_serves_only_the_configured_country() -> None:
    factors = OwidProvider(ProviderConfig(country_code="DE")).factors()
    assert factors == {"DE": EmissionFactor("DE", "Germany", 380.95047)}


def test_provider_refuses_a_country_missing_from_the_table() -> None:
    with pytest.raises(ProviderError, match=r"owid: no carbon intensity for country code 'XK'"):
        OwidProvider(ProviderConfig(country_code="XK"))


def test_provider_returns_a_copy_callers_cannot_alter() -> None:
    provider = OwidProvider(ProviderConfig(country_code="FR"))
    provider.factors().clear()
    assert set(provider.factors()) == {"FR"}


def test_parse_skips_comments_and_blank_lines() -> None:
    text = "# source\n\ncountry_code,country,year,gco2_per_kwh\n# note\nFR,France,2023,56.0\n\n"
    assert parse_owid_csv(text) == {"FR": EmissionFactor("FR", "France", 56.0)}


def test_parse_reads_quoted_names() -> None:
    text = 'country_code,country,year,gco2_per_kwh\nKR,"Korea, Republic of",2023,430.5\n'
    assert parse_owid_csv(text)["KR"].country == "Korea, Republic of"


HEADER = "# comment\ncountry_code,country,year,gco2_per_kwh\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "table is empty"),
        ("# only a comment\n", "table is empty"),
        ("code,name,year,value\nFR,France,2023,56\n", "line 1: header must be"),
        (HEADER + "fra,France,2023,56\n", "line 3: 'fra' is not an ISO alpha-2 code"),
        (HEADER + "FR,,2023,56\n", "line 3: empty country name"),
        (HEADER + "FR,France,20x3,56\n", "line 3: year '20x3' is not a year"),
        (HEADER + "FR,France,2023,abc\n", "line 3: 'abc' is not a number"),
        (HEADER + "FR,France,2023,-1\n", "line 3: '-1' is not a carbon intensity"),
        (HEADER + "FR,France,2023,nan\n", "line 3: 'nan' is not a carbon intensity"),
        (HEADER + "FR,France,2023\n", "line 3: expected 4 columns"),
        (HEADER + "FR,France,2023,56\nFR,France,2022,60\n", "line 4: FR appears twice"),
    ],
)
def test_parse_rejects_a_malformed_table(text: str, message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        parse_owid_csv(text)
