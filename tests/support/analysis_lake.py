"""A small lake for the SQL and analysis tests, built once per session through the real batch path.

Demo data for 2026-03-01..03, one real Dagster run of the batch graph per day, then a few stream
rows added to raw/ (with Kafka arrival times, one of them two days late) and late-arrival metrics
recorded the way the stream records them, so every table kind and both origins are present.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from tests.support.demo_lake import copy_template
from tests.support.envutil import scoped_env

DAYS = (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3))
SOURCE = "user_engagements"
STREAM_ROWS = 20
LATE_RECORDED = {date(2026, 3, 2): 3, date(2026, 3, 3): 1}
_CACHE: dict[str, "AnalysisLake"] = {}


@dataclass
class AnalysisLake:
    root: Path
    landing: Path
    lake: Path

    def env(self) -> dict[str, str]:
        return {"SEQ_LAKE_URI": str(self.lake), "SEQ_LANDING_DIR": str(self.landing)}


def lake_env(al: AnalysisLake):
    return scoped_env(**al.env(), SEQ_DEFS_DIR=None)


def _add_stream_rows(lake) -> None:
    import polars as pl

    from seq_assets import settings
    from seq_assets.core.engine import Engine
    from seq_assets.kafka.microbatch import record_late_arrivals
    from seq_assets.settings import load_compiled

    day = DAYS[-1]
    raw = lake.read("raw", SOURCE, days=[day]).filter(~pl.col("is_bot")).sort("event_id").head(STREAM_ROWS)
    # lag (ms) of each row: 1.5 min steps, the last one two days late
    lag = pl.Series("lag", [(i + 1) * 90_000 for i in range(raw.height - 1)] + [2 * 86_400_000 + 60_000], dtype=pl.Int64)
    arrived = pl.from_epoch(pl.col("ts") + lag, time_unit="ms").dt.replace_time_zone("UTC")
    stream = raw.with_columns(
        ("s-" + pl.col("event_id")).alias("event_id"),
        pl.lit("kafka").alias("origin"),
        pl.lit(0, dtype=pl.Int32).alias("kafka_partition"),
        pl.int_range(0, raw.height, dtype=pl.Int64).alias("kafka_offset"),
        pl.format("{}:0:{}", pl.lit(SOURCE), pl.int_range(0, raw.height)).alias("record_id"),
        arrived.cast(pl.Datetime("us", "UTC")).alias("arrived_at"),
        arrived.dt.date().alias("arrival_date"),
    )
    lake.insert_unseen("raw", SOURCE, stream, key="event_id")
    record_late_arrivals(Engine(load_compiled(), lake, settings.landing()), SOURCE, "test-batch-1", LATE_RECORDED,
                         datetime(2026, 3, 5, 12, tzinfo=timezone.utc))


def build(tmp_path_factory) -> AnalysisLake:
    if "lake" in _CACHE:
        return _CACHE["lake"]

    from seq_assets.storage.lake import Lake

    root = tmp_path_factory.mktemp("analysis_lake") / "copy"
    copy_template(tmp_path_factory, root)
    al = AnalysisLake(root, root / "landing", root / "lake")
    with lake_env(al):
        _add_stream_rows(Lake(str(al.lake)))
    _CACHE["lake"] = al
    return al


def end_of_day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000) + 86_400_000


def days_before(day: date, n: int) -> date:
    return day - timedelta(days=n)
