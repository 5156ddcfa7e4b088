"""The code location: every asset, check, job, schedule and sensor of ``seq_assets.orchestration``."""

from __future__ import annotations

import dagster as dg

from seq_assets import settings
from seq_assets.orchestration.analysis_assets import analysis_defs
from seq_assets.orchestration.buckets import build_assets
from seq_assets.orchestration.checks import (
    build_checks,
    build_sequence_checks,
    quality_automation,
)
from seq_assets.orchestration.executors import run_executor
from seq_assets.orchestration.io import STAGED_IO, LakeIOManager
from seq_assets.orchestration.maintenance import maintenance_defs
from seq_assets.orchestration.resources import LakeResource
from seq_assets.orchestration.schedules import build_schedules
from seq_assets.orchestration.sensors import sensor_defs


@dg.definitions
def defs() -> dg.Definitions:
    compiled = settings.load_compiled()
    batch = dg.Definitions(
        assets=build_assets(compiled, settings.user_buckets()),
        asset_checks=build_checks(compiled) + build_sequence_checks(compiled),
        schedules=build_schedules(compiled),
        sensors=[quality_automation],
        resources={"lake": LakeResource(), STAGED_IO: LakeIOManager()},
        # By default asset runs execute their steps in the run's own (warm) process: a step process
        # per asset would re-import the code location for each of them (seconds each on a small
        # machine), and every step already uses all cores through polars and delta-rs.
        # SEQ_EXECUTOR=celery spreads the steps over dagster-celery workers (docs/workers.md).
        executor=run_executor(),
    )
    return dg.Definitions.merge(batch, sensor_defs(compiled), analysis_defs(compiled), maintenance_defs(compiled))
