"""A feature's upkeep settings: how long sequences/ keeps its snapshots, by when a closed day's
snapshot is due, and every how many days sequences/ holds a full snapshot. Validated, compiled into
the JSON, and outside the output hash (they change no row)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from signal_defs import demo
from signal_defs.compile import check_version_lock, compile_registry
from signal_defs.loader import DEMO_LOCK
from signal_defs.model import Registry
from signal_defs.validate import DefinitionErrors, validate


def with_feature(feature) -> Registry:
    return Registry().add(*[feature if d.kind == "feature" and d.name == feature.name else d
                            for d in demo.DEFINITIONS])


def test_defaults_are_compiled_and_leave_the_locked_hashes_alone():
    compiled = compile_registry(Registry().add(*demo.DEFINITIONS))
    f = compiled["feature.engagements_v1"]
    assert (f["snapshot_retention_days"], f["freshness_hours"], f["full_snapshot_every_days"]) == (35, 6, 7)
    assert check_version_lock(compiled, json.loads(DEMO_LOCK.read_text())) == []
    kept = replace(demo.engagements_v1, snapshot_retention_days=90, freshness_hours=2, full_snapshot_every_days=1)
    other = compile_registry(with_feature(kept))["feature.engagements_v1"]
    assert other["output_hash"] == f["output_hash"] and other["hash"] != f["hash"]
    assert (other["snapshot_retention_days"], other["freshness_hours"], other["full_snapshot_every_days"]) == (90, 2, 1)


@pytest.mark.parametrize("setting", ["snapshot_retention_days", "freshness_hours", "full_snapshot_every_days"])
@pytest.mark.parametrize("value", [0, -3, "6", 1.5, True])
def test_a_setting_that_is_not_a_positive_whole_number_is_refused(setting, value):
    with pytest.raises(DefinitionErrors) as info:
        validate(with_feature(replace(demo.saves_v1, **{setting: value})))
    (e,) = [e for e in info.value.errors if e.field == setting]
    assert "saves" in e.obj and "positive whole number" in str(e) and repr(value) in str(e)
