"""Provenance accumulates across updates: every source a unit's figures came from is kept."""

from __future__ import annotations

from ceems.api.models import merge_provenance


def test_values_are_unioned_key_by_key() -> None:
    before = {"cpu_power_source": "ipmi_dcmi", "cpu_pue": "1.2"}
    after = {"cpu_power_source": "redfish,ipmi_dcmi", "gpu_power_source": "dcgm"}
    assert merge_provenance(before, after) == {
        "cpu_power_source": "ipmi_dcmi,redfish",
        "cpu_pue": "1.2",
        "gpu_power_source": "dcgm",
    }


def test_an_empty_update_keeps_what_was_known() -> None:
    before = {"cpu_attribution": "cpu_time+memory"}
    assert merge_provenance(before, {}) == before
    assert merge_provenance({}, {"cpu_pue": ""}) == {"cpu_pue": ""}
