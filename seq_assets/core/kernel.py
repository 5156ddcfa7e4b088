"""Assemble enriched events into sequences: pure functions over polars frames.

One definition of "the sequence" used everywhere: the batch assets, point-in-time training reads
and the serving path all call :func:`order_events` and :func:`assemble_sequences`.
"""

from __future__ import annotations

from datetime import date

import polars as pl

from seq_assets.core.days import DAY_MS


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


def extendable(feature: dict, fields: list[str], event_id: str = "event_id", time: str = "ts") -> bool:
    """Whether a day's sequences can be built from the previous day's plus the day's own events.

    That holds when every new event sorts before every older one (newest first by event time),
    when no new event can duplicate an older one (the dedup key holds the event id, and an event
    id lives in one day), and when the ordering column is stored, so the window can be trimmed.
    """
    o = feature["ordering"]
    dedup = list(feature["dedup_key"])
    return o["by"] == time and o["descending"] and o["by"] in fields and (not dedup or event_id in dedup)


def extend_sequences(feature: dict, previous: pl.DataFrame, events: pl.LazyFrame | pl.DataFrame,
                     as_of_end_ms: int, fields: list[str], day: date | None = None) -> pl.DataFrame:
    """The sequences as of ``as_of_end_ms`` from those of the day before and the day's events.

    ``previous`` is :func:`assemble_sequences` output as of the end of the day before (``user_id``
    and the list columns; a ``date`` column is ignored); ``events`` holds the events after it. The
    result equals :func:`assemble_sequences` over the whole window, for a feature that is
    :func:`extendable`, at a cost that follows the day's events and the output, not the window:
    the new events are ordered, the old lists are cut to what still fits (length and window), and
    both are interleaved by one narrow sort and one gather, then regrouped by their sorted users.
    """
    start, end = window_bounds(feature, as_of_end_ms)
    by, n = feature["ordering"]["by"], feature["max_length"]
    lf = events.lazy().filter(
        pl.col("event_type").is_in(feature["event_types"]) & (pl.col(by) >= start) & (pl.col(by) < end)
    )
    fresh = (order_events(feature, lf).filter(pl.int_range(pl.len()).over("user_id") < n)
             .select("user_id", *fields).collect())
    old = previous.select("user_id", *fields)
    counts = fresh.group_by("user_id").len("_new")
    old = old.join(counts, on="user_id", how="left", maintain_order="left")
    size = pl.col(by).list.len()
    keep = pl.min_horizontal(size, pl.lit(n, pl.UInt32) - pl.col("_new").fill_null(0).cast(pl.UInt32))
    if old.select((pl.col(by).list.last() < start).any()).item():
        # The oldest day left the window: lists are newest first, so what left is a tail.
        keep = pl.min_horizontal(keep, pl.col(by).list.eval(pl.element() >= start).list.sum().cast(pl.UInt32))
    old = old.with_columns(keep.alias("_keep"))
    if old.select((pl.col("_keep") == 0).any()).item():
        old = old.filter(pl.col("_keep") > 0)
    if old.select((pl.col("_keep") < size).any()).item():
        old = old.with_columns([pl.col(f).list.head(pl.col("_keep")) for f in fields])
    old = old.drop("_new", "_keep").explode(fields)
    both = pl.concat([fresh.with_columns(pl.lit(0, pl.Int8).alias("_src")),
                      old.with_columns(pl.lit(1, pl.Int8).alias("_src"))], how="vertical_relaxed")
    # Per user: the new events (already newest first), then the kept old ones in their order.
    order = both.select(pl.arg_sort_by("user_id", "_src", maintain_order=True)).to_series()
    flat = both.drop("_src")[order].set_sorted("user_id")
    seqs = flat.group_by("user_id", maintain_order=True).agg(fields)
    if day is not None:
        seqs = seqs.with_columns(pl.lit(day).alias("date"))
    return seqs
