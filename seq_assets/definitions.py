"""The code location: the batch assets and schedule from here, the stream sensors from ``sensors``."""

from __future__ import annotations

import dagster as dg

from seq_assets.assets import build_assets
from seq_assets.checks import build_checks, quality_automation
from seq_assets.compiled import load_compiled
from seq_assets.resources import LakeResource
from seq_assets.schedules import build_schedules


@dg.definitions
def defs() -> dg.Definitions:
    compiled = load_compiled()
    assets = build_assets(compiled)
    batch = dg.Definitions(
        assets=assets,
        asset_checks=build_checks(compiled),
        schedules=build_schedules(compiled),
        sensors=[quality_automation],
        resources={"lake": LakeResource()},
        # Asset runs execute their steps in the run's own (warm) process: a step process per asset
        # would re-import the code location for each of them (seconds each on a small machine),
        # and every step already uses all cores through polars and delta-rs.
        executor=dg.in_process_executor,
    )
    from sensors.definitions import sensor_defs

    from seq_assets.analysis import analysis_defs

    return dg.Definitions.merge(batch, sensor_defs(compiled), analysis_defs(compiled))
