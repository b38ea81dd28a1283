"""A rule spec that would give wrong or unloadable rules is refused with the reason."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ceems.attribution.spec import Emissions, HostJob, PowerSource, RuleSpec, SpecError
from ceems.cli.tool.main import main

HOST = (HostJob("node", PowerSource.IPMI),)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"hosts": ()}, "no ceems_exporter or GPU exporter job"),
        ({"pue": float("nan")}, "PUE must be between 1 and 5"),
        ({"pue": 0.9}, "PUE must be between 1 and 5"),
        ({"misc_fraction": -0.1}, "misc fraction"),
        ({"evaluation_interval": timedelta(0)}, "evaluation interval must be positive"),
        ({"rate_interval": timedelta(seconds=30)}, "rate interval must cover"),
        ({"hosts": (HostJob('no"de', PowerSource.IPMI),)}, "cannot be quoted"),
        ({"emissions": Emissions(static_g_per_kwh=float("inf"))}, "emission factor"),
        ({"emissions": Emissions(providers=("owid}",))}, "not a plain word"),
        ({"emissions": Emissions(country_code='FR"')}, "not a plain word"),
    ],
)
def test_bad_spec_is_refused(kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(SpecError, match=reason):
        RuleSpec(**{"hosts": HOST, **kwargs})


@pytest.mark.parametrize(
    "flags",
    [
        ["--pue", "high"],
        ["--eval-interval", "soon"],
        ["--misc-policy", "random"],
        ["--power-source", "psu"],
        ["--start", "yesterday"],
        ["--url", "ftp://prometheus"],
    ],
)
def test_garbage_flags_exit_2(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["tsdb", "create-recording-rules", *flags])
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err
