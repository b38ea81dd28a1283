"""The generated rules under the real promtool: they load, and they conserve power.

Each file in deploy/prometheus/tests/ is a promtool unit test for one sensor variant; the
table below is the rule spec `ceems_tool` would build for that site. The tests assert exact
per-unit figures (worked out by hand in the files' numbers) and, at several instants,
`sum(unit power) + unattributed == node power` for every node and GPU.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ceems.attribution.rulefile import describe, render, rule_files
from ceems.attribution.spec import (
    Emissions,
    GpuJob,
    GpuSource,
    HostJob,
    MiscPolicy,
    PowerSource,
    RuleSpec,
)

TESTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "tests"
DCGM = GpuJob(
    "dcgm",
    GpuSource.DCGM,
    "DCGM_FI_DEV_POWER_USAGE",
    frozenset({"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}),
)
DCGM_MIG = GpuJob(
    "dcgm", GpuSource.DCGM, "DCGM_FI_DEV_POWER_USAGE", frozenset({"DCGM_FI_PROF_GR_ENGINE_ACTIVE"})
)
OWID_FR = Emissions(country_code="FR", providers=("owid",))

VARIANTS: dict[str, RuleSpec] = {
    "rapl": RuleSpec(
        hosts=(HostJob("node", PowerSource.RAPL, rapl=True, rapl_dram=True),),
        emissions=Emissions(static_g_per_kwh=50.0),
    ),
    "ipmi": RuleSpec(hosts=(HostJob("node", PowerSource.IPMI),), pue=1.25),
    "ipmi-rapl": RuleSpec(
        hosts=(HostJob("node", PowerSource.IPMI, rapl=True, rapl_dram=True),), emissions=OWID_FR
    ),
    "redfish": RuleSpec(
        hosts=(HostJob("node", PowerSource.REDFISH),), misc_policy=MiscPolicy.EQUAL
    ),
    "cray": RuleSpec(
        hosts=(HostJob("node", PowerSource.CRAY, cray_accel=True),), misc_policy=MiscPolicy.NODE
    ),
    "gpu-full": RuleSpec(hosts=(HostJob("node", PowerSource.IPMI, gpus=True),), gpus=(DCGM,)),
    "gpu-mig": RuleSpec(hosts=(HostJob("node", PowerSource.IPMI, gpus=True),), gpus=(DCGM_MIG,)),
    "gpu-shared": RuleSpec(hosts=(HostJob("node", PowerSource.IPMI, gpus=True),), gpus=(DCGM,)),
}


def write_rules(spec: RuleSpec, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for file in rule_files(spec):
        path = directory / file.name
        path.write_text(render(file, describe(spec)))
        paths.append(path)
    return paths


def test_every_shipped_test_has_a_variant() -> None:
    assert {p.stem for p in TESTS.glob("*.yml")} == set(VARIANTS)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rules_pass_promtool(variant: str, promtool: str, tmp_path: Path) -> None:
    rules = write_rules(VARIANTS[variant], tmp_path / "rules")
    check = subprocess.run(
        [promtool, "check", "rules", *map(str, rules)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    shutil.copy(TESTS / f"{variant}.yml", tmp_path / "test.yml")
    result = subprocess.run(
        [promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_detects_a_broken_split(promtool: str, tmp_path: Path) -> None:
    """The harness can fail: rules that give units 10 % too much fail the same test file."""
    [path] = write_rules(VARIANTS["ipmi-rapl"], tmp_path / "rules")
    text = path.read_text().replace(
        "- record: uuid:ceems_host_power_watts:pue\n    expr: |-\n      ",
        "- record: uuid:ceems_host_power_watts:pue\n    expr: |-\n      1.1 * ",
    )
    assert "1.1 * " in text
    path.write_text(text)
    shutil.copy(TESTS / "ipmi-rapl.yml", tmp_path / "test.yml")
    result = subprocess.run(
        [promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "uuid:ceems_host_power_watts:pue" in result.stdout + result.stderr
