"""The one partitioning of every asset: event-time days in UTC (users stay a column)."""

from __future__ import annotations

from datetime import date

import dagster as dg

from seq_assets import settings

# end_offset=1 makes today a partition too: the stream writes the open day.
DAILY = dg.DailyPartitionsDefinition(start_date=settings.partition_start(), end_offset=1, timezone="UTC")


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    """The days a run covers, oldest first (one, or a range under a single-run backfill)."""
    return [date.fromisoformat(k) for k in context.partition_keys]
