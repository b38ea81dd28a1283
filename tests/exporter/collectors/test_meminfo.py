"""The meminfo collector on fixture /proc trees."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from ceems.exporter.collectors.meminfo import MeminfoCollector, metric_name, parse_meminfo
from tests.conftest import FIXTURES

PROC = FIXTURES / "proc"


def test_default_fields_in_bytes() -> None:
    registry = CollectorRegistry()
    registry.register(MeminfoCollector(PROC / "good", "node1"))
    assert registry.get_sample_value("ceems_meminfo_MemTotal_bytes", {"hostname": "node1"}) == (
        16042172 * 1024
    )
    assert registry.get_sample_value("ceems_meminfo_MemFree_bytes", {"hostname": "node1"}) == (
        440324 * 1024
    )
    assert registry.get_sample_value("ceems_meminfo_Cached_bytes", {"hostname": "node1"}) is None


def test_all_stats_exports_every_field_with_safe_names() -> None:
    registry = CollectorRegistry()
    registry.register(MeminfoCollector(PROC / "good", "n", all_stats=True))
    assert registry.get_sample_value("ceems_meminfo_Active_anon_bytes", {"hostname": "n"}) == (
        2011164 * 1024
    )
    # Counts without a unit keep their raw value and get no _bytes suffix.
    assert registry.get_sample_value("ceems_meminfo_HugePages_Total", {"hostname": "n"}) == 0


@pytest.mark.parametrize(
    ("field", "is_bytes", "name"),
    [
        ("MemTotal", True, "ceems_meminfo_MemTotal_bytes"),
        ("Active(file)", True, "ceems_meminfo_Active_file_bytes"),
        ("HugePages_Free", False, "ceems_meminfo_HugePages_Free"),
    ],
)
def test_metric_names(field: str, is_bytes: bool, name: str) -> None:
    assert metric_name(field, is_bytes) == name


def test_non_numeric_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="non-numeric"):
        parse_meminfo("MemTotal:  lots kB\n")


@pytest.mark.parametrize("tree", ["truncated", "garbage", "absent"])
def test_broken_meminfo_raises(tree: str) -> None:
    with pytest.raises((ValueError, OSError)):
        list(MeminfoCollector(PROC / tree, "n").collect())
