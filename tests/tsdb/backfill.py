"""Deterministic series for a real Prometheus: OpenMetrics text backfilled with promtool.

Blocks are written into the data directory before Prometheus starts, so it loads them at
start (a running Prometheus only picks up new blocks at its next reload or compaction).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import PrometheusService

# Scrape and evaluation interval of every test Prometheus.
SCRAPE_S = 15
PROMETHEUS_YML = f"global: {{scrape_interval: {SCRAPE_S}s, evaluation_interval: {SCRAPE_S}s}}\n"


@dataclass(frozen=True)
class Series:
    """One series: name, labels and (epoch seconds, value) points in time order."""

    name: str
    labels: Mapping[str, str]
    points: Sequence[tuple[float, float]]
    kind: str = "gauge"  # or "counter" (name must then end in _total)

    @property
    def family(self) -> str:
        """The metric family name OpenMetrics groups samples under."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


def _value(value: float) -> str:
    return repr(float(value)).replace("inf", "Inf").replace("nan", "NaN")


def openmetrics(series: Iterable[Series]) -> str:
    """OpenMetrics text of the series, one family block per name, ending in `# EOF`."""
    families: dict[str, list[Series]] = {}
    for one in series:
        families.setdefault(one.family, []).append(one)
    lines = []
    for family, members in families.items():
        lines.append(f"# TYPE {family} {members[0].kind}")
        for one in members:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(one.labels.items()))
            lines += [f"{one.name}{{{labels}}} {_value(v)} {t:.3f}" for t, v in one.points]
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def backfill(promtool: str, series: Iterable[Series], data_dir: Path) -> None:
    """Write the series as TSDB blocks into `data_dir` with promtool."""
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir.parent / "backfill.om"
    source.write_text(openmetrics(series))
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)],
        check=True,
        capture_output=True,
        timeout=120,
    )


@dataclass
class LoadedPrometheus:
    """A started Prometheus and the series loaded into it."""

    service: PrometheusService
    series: list[Series] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Base URL."""
        return self.service.url


def start_loaded(
    service: PrometheusService,
    promtool: str,
    series: Iterable[Series],
    monkeypatch: pytest.MonkeyPatch,
    *,
    args: str = "",
    config: str = PROMETHEUS_YML,
) -> LoadedPrometheus:
    """Backfill the series into the service's data directory, then start it."""
    loaded = list(series)
    # scripts/services.sh keeps Prometheus' TSDB in <state>/prometheus/data
    backfill(promtool, loaded, service.state_dir / "prometheus" / "data")
    config_file = service.state_dir / "prometheus-test.yml"
    config_file.write_text(config)
    monkeypatch.setenv("PROMETHEUS_ARGS", args)
    service.start(config_file)
    return LoadedPrometheus(service, loaded)
