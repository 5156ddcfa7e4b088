"""Assemble enriched events into sequences: pure functions over polars frames.

One definition of "the sequence" used everywhere: the batch assets, point-in-time training reads
and the serving path all call :func:`order_events` and :func:`assemble_sequences`.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import polars as pl

DAY_MS = 86_400_000


def end_of_day_ms(day: date) -> int:
    """Exclusive end of a UTC day in epoch milliseconds."""
    return int(datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc).timestamp() * 1000)


def window_bounds(feature: dict, as_of_end_ms: int) -> tuple[int, int]:
    """[start, end) of event times a sequence ending at ``as_of_end_ms`` may hold."""
    return as_of_end_ms - feature["window_days"] * DAY_MS, as_of_end_ms


def order_events(feature: dict, events: pl.LazyFrame | pl.DataFrame) -> pl.LazyFrame:
    """Dedup on the feature's key (keeping the newest copy) and sort each user's events newest first.

    Ties on the ordering column are broken by ``ordering.tie_break`` ascending, so the order never
    depends on how the rows arrived.
    """
    o = feature["ordering"]
    lf = events.lazy()
    sort_cols = ["user_id", o["by"], o["tie_break"]]
    desc = [False, o["descending"], False]
    lf = lf.sort(sort_cols, descending=desc)
    dedup = list(feature["dedup_key"])
    if dedup:
        lf = lf.unique(subset=["user_id", *dedup], keep="first", maintain_order=True)
    return lf


def assemble_sequences(feature: dict, events: pl.LazyFrame | pl.DataFrame, as_of_end_ms: int,
                       fields: list[str], day: date | None = None) -> pl.DataFrame:
    """One row per user: ``user_id``, one list column per field (newest first), then ``date``.

    ``events`` may hold anything; only the feature's event types inside its window count, and each
    user keeps at most ``max_length`` events.
    """
    start, end = window_bounds(feature, as_of_end_ms)
    ts = feature["ordering"]["by"]
    lf = events.lazy().filter(
        pl.col("event_type").is_in(feature["event_types"]) & (pl.col(ts) >= start) & (pl.col(ts) < end)
    )
    ordered = order_events(feature, lf)
    seqs = (
        ordered.group_by("user_id", maintain_order=True)
        .agg([pl.col(f).head(feature["max_length"]) for f in fields])
        .sort("user_id")
    )
    if day is not None:
        seqs = seqs.with_columns(pl.lit(day).alias("date"))
    return seqs.collect()
