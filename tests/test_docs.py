"""Documentation is checked: every exporter flag and every metric it emits is documented."""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

import httpx

from ceems.exporter.cli import build_parser
from ceems.exporter.registry import load_factories
from tests.conftest import ROOT, StartExporter
from tests.exporter.node_tree import full_node

EXPORTER_DOC = (ROOT / "docs" / "exporter.md").read_text()


def expand(pattern: str) -> list[str]:
    """`a_{b,c}_d` -> [`a_b_d`, `a_c_d`]; several groups multiply."""
    parts = re.split(r"\{([^}]*)\}", pattern)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def documented_metric_patterns() -> list[re.Pattern[str]]:
    names = re.findall(r"`(ceems_[A-Za-z0-9_{},<>]+)`", EXPORTER_DOC)
    patterns = []
    for name in names:
        for concrete in expand(name):
            regex = re.escape(concrete).replace(r"<", "<").replace(r">", ">")
            regex = re.sub(r"<[A-Za-z]+>", r"[A-Za-z0-9_]+", regex)
            patterns.append(re.compile(f"^{regex}$"))
    return patterns


def test_every_flag_is_documented() -> None:
    parser = build_parser(load_factories())
    flags = {
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option not in ("--help", "--version")
    }
    # Enable/disable pairs are documented once, in the collector table, by name.
    pairs = {f for f in flags if re.fullmatch(r"--(no-)?collector\.\w+", f)} - {
        "--collector.disable-defaults",
        "--collector.empty-hostname-label",
        "--collector.hostname",
    }
    collectors = {f.split(".", 1)[1] for f in pairs}
    # A flag every unit collector has is documented once as `--collector.<manager>.option`.
    templates = [
        re.compile("^" + re.escape(t).replace(re.escape("<manager>"), r"\w+") + "$")
        for t in re.findall(r"`(--collector\.<manager>\.[\w.-]+)`", EXPORTER_DOC)
    ]
    undocumented = [
        f
        for f in flags - pairs
        if f"`{f}`" not in EXPORTER_DOC and not any(t.match(f) for t in templates)
    ]
    assert sorted(undocumented) == []
    assert sorted(c for c in collectors if f"| `{c}` |" not in EXPORTER_DOC) == []


def test_every_emitted_metric_is_documented(start_exporter: StartExporter, tmp_path: Path) -> None:
    from ceems.sim.redfish import FakeChassis, FakeRedfishServer, PowerWindow
    from tests.exporter.node_tree import gpu_node

    _, flags = full_node(tmp_path / "node")
    redfish = FakeRedfishServer([FakeChassis("c1", PowerWindow(lambda: 300.0))]).start()
    try:
        _, gpu_flags = gpu_node(tmp_path / "gpu", redfish.url)
        exposed: set[str] = set()
        for node_flags, ready in (
            ([*flags, "--collector.meminfo.all-stats"], "ipmi_dcmi"),
            ([*gpu_flags, "--collector.slurm.swap-memory-metrics",
              "--collector.slurm.psi-metrics", "--collector.slurm.blkio-metrics"], "redfish"),
        ):  # fmt: skip
            exporter = start_exporter(*node_flags)
            url = f"http://127.0.0.1:{exporter.server.ports[0]}/metrics"
            deadline = time.monotonic() + 15
            while f'collector="{ready}"}} 1.0' not in (text := httpx.get(url).text):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            exposed |= set(re.findall(r"^# TYPE (ceems_\w+) ", text, re.M))  # with _total
    finally:
        redfish.stop()
    patterns = documented_metric_patterns()
    undocumented = sorted(n for n in exposed if not any(p.match(n) for p in patterns))
    assert undocumented == []
    assert "ceems_compute_unit_gpu_index_flag" in exposed


def _long_flags(parser: object) -> set[str]:
    return {
        option
        for action in parser._actions  # type: ignore[attr-defined]
        for option in action.option_strings
        if option.startswith("--") and option not in ("--help", "--version")
    }


def test_api_server_and_cacct_flags_are_documented() -> None:
    from ceems.api.cli import build_parser as api_parser
    from ceems.cli.cacct import build_parser as cacct_parser

    api_doc = (ROOT / "docs" / "api-server.md").read_text()
    cacct_doc = (ROOT / "docs" / "cacct.md").read_text()
    assert sorted(f for f in _long_flags(api_parser()) if f"`{f}`" not in api_doc) == []
    assert sorted(f for f in _long_flags(cacct_parser()) if f"`{f}`" not in cacct_doc) == []


def test_every_api_route_is_documented() -> None:
    import sqlalchemy as sa

    from ceems.api.app import create_app
    from ceems.api.config import ApiServerConfig

    app = create_app(ApiServerConfig(), sa.create_engine("sqlite://"))
    doc = (ROOT / "docs" / "api-server.md").read_text()
    paths = {p for p in app.openapi()["paths"] if p.startswith("/api/v1/")}
    assert paths and sorted(p for p in paths if f"`{p.removeprefix('/api/v1')}`" not in doc) == []
