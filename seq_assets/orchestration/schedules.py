"""The daily batch: close yesterday and recompute the days still inside the late-arrival horizon."""


from datetime import timedelta

import dagster as dg

from seq_assets.core.compiled import Compiled
from seq_assets.orchestration.partitions import DAILY

BATCH_SELECTION = dg.AssetSelection.groups("raw", "enrichments", "events", "sequences", "analysis")
daily_batch_job = dg.define_asset_job("daily_batch", selection=BATCH_SELECTION, partitions_def=DAILY)


def closing_range(scheduled_day, horizon: int) -> tuple[str, str]:
    """The partition range a run scheduled on ``scheduled_day`` recomputes: [yesterday - horizon, yesterday]."""
    yesterday = scheduled_day - timedelta(days=1)
    return (yesterday - timedelta(days=horizon)).isoformat(), yesterday.isoformat()


def build_schedules(compiled: Compiled) -> list[dg.ScheduleDefinition]:
    horizon = compiled.horizon_days()

    @dg.schedule(
        job=daily_batch_job,
        cron_schedule="30 0 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Closes yesterday and recomputes the {horizon} days before it (late-arrival horizon) "
                    "from raw/, in one run that walks the days oldest first.",
    )
    def close_days(context: dg.ScheduleEvaluationContext):
        start, end = closing_range(context.scheduled_execution_time.date(), horizon)
        return dg.RunRequest(
            run_key=f"close-{end}",
            tags={
                "dagster/asset_partition_range_start": start,
                "dagster/asset_partition_range_end": end,
                "seq/closes": end,
            },
        )

    return [close_days]
