"""Index-time enrichments, one function per enrichment kind, all vectorized joins.

They read what they need through an :class:`EnrichmentContext`, which the framework backs with the
lake (batch and stream) or with in-memory frames (tests); the enrichment code never opens a table.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Protocol

import polars as pl

from seq_assets.core.compiled import polars_type
from seq_assets.core.days import DAY_MS, day_start_ms, days_between
from seq_assets.core.predicates import to_expr


class EnrichmentContext(Protocol):
    def snapshot(self, enrichment: dict, day: date) -> pl.DataFrame | None:
        """The enrichment's snapshot valid on ``day`` (key + columns), or None if there is none."""

    def history(self, source: dict, columns: list[str], start_ms: int, end_ms: int,
                users: pl.Series | None) -> pl.DataFrame:
        """Raw events of ``source`` with event time in [start_ms, end_ms), one row per event_id."""


def lookup(events: pl.DataFrame, enrichment: dict, ctx: EnrichmentContext) -> pl.DataFrame:
    """Left-join each event with the snapshot of its own day: history is enriched as it was then."""
    key, columns = enrichment["key"], enrichment["columns"]
    cache = getattr(ctx, "cache", None)
    parts = []
    for day in events.get_column("date").unique().sort().to_list():
        prepared = cache.get(("lookup", enrichment["name"], day)) if cache is not None else None
        if prepared is None:
            snap = ctx.snapshot(enrichment, day)
            if snap is None:
                snap = pl.DataFrame(schema={key: polars_type(enrichment["key_type"]), **{c: polars_type(t) for c, t in columns.items()}})
            prepared = snap.select(key, *columns).unique(key, keep="first").with_columns(pl.lit(day).alias("date"))
            if cache is not None:  # the event types of one day share it; earlier days are dropped
                for k in [k for k in cache if k[:2] == ("lookup", enrichment["name"]) and k[2] < day]:
                    del cache[k]
                cache[("lookup", enrichment["name"], day)] = prepared
        parts.append(prepared)
    if not parts:
        return events.with_columns([pl.lit(None, polars_type(t)).alias(c) for c, t in columns.items()])
    table = pl.concat(parts).with_columns(
        [pl.col(c).cast(polars_type(t)) for c, t in columns.items()]
    )
    return events.join(table, on=[key, "date"], how="left")


def counter(events: pl.DataFrame, enrichment: dict, ctx: EnrichmentContext, source: dict) -> pl.DataFrame:
    """Point-in-time count of the source's matching events per key in [ts - window, ts).

    The keys of ``events`` get dense ids and only history rows of those keys are kept (a hash
    join, so a day's events cost one probe of the window's history, not a sort of it). A kept
    row becomes one sortable integer, ``id * 2**bits + (ts - start)``, and the sorted integers
    answer "how many rows of this key before time t" with a binary search. The count is the
    difference of two searches (before ``ts`` and before ``ts - window``):
    O(history + events log events), no join per event.
    """
    keys, ts_field = list(enrichment["keys"]), source["time_field"]
    out_col = enrichment["column"] or enrichment["name"]
    window_ms = enrichment["window_days"] * DAY_MS
    if events.is_empty():
        return events.with_columns(pl.lit(None, pl.Int64).alias(out_col))
    # Day-aligned bounds, so the event types of one batch share one history read (see cache).
    start = (int(events.get_column(ts_field).min()) // DAY_MS) * DAY_MS - window_ms
    end = (int(events.get_column(ts_field).max()) // DAY_MS + 1) * DAY_MS
    bits = (end - start).bit_length()
    user_field = source["user_field"]
    cache = getattr(ctx, "cache", None)
    needed = sorted({*keys, ts_field, *_pred_cols(enrichment["counts"])})

    def counted(lo: int, hi: int, users: pl.Series | None) -> pl.DataFrame:
        return (ctx.history(source, needed, lo, hi, users).lazy()
                .filter(to_expr(enrichment["counts"])).select(*keys, ts_field).collect())

    if cache is None:
        # A small batch (the stream) reads only its users' history.
        users = events.get_column(user_field).unique() if user_field in keys else None
        hist = counted(start, end, users)
    else:
        # A whole day reads everything, and keeps each day's counted rows for the next days of
        # the run (a backfill walks consecutive days): each day is filtered once, not once per window.
        days = days_between(start, end - 1)
        missing = [d for d in days if ("counter", enrichment["name"], d) not in cache]
        if missing:
            lo, hi = day_start_ms(missing[0]), day_start_ms(missing[-1]) + DAY_MS
            got = counted(lo, hi, None).with_columns((pl.col(ts_field) // DAY_MS).alias("_day"))
            parts = got.partition_by("_day", as_dict=True, include_key=False)
            for d in missing:
                part = parts.get((day_start_ms(d) // DAY_MS,))
                cache[("counter", enrichment["name"], d)] = part if part is not None else got.head(0).drop("_day")
        for k in [k for k in cache if k[:2] == ("counter", enrichment["name"]) and k[2] not in days]:
            del cache[k]
        hist = pl.concat([cache[("counter", enrichment["name"], d)] for d in days])
    ids = events.select(keys).unique().with_row_index("_g")
    if ids.height >= 1 << (62 - bits):
        raise OverflowError(f"counter: {ids.height} keys over a {(1 << bits) // DAY_MS}-day span do not fit 63 bits")
    # Only history rows whose every key value occurs among the events' can match: a membership test
    # per column first (one hash of each value) shrinks what the multi-column join has to hash. A
    # null key stays out either way (joins never match null).
    if hist.height > ids.height:
        hist = hist.filter(pl.all_horizontal([pl.col(k).is_in(ids.get_column(k).unique().implode()) for k in keys]))
    codes = hist.join(ids, on=keys, how="inner").select(
        pl.col("_g").cast(pl.Int64) * (1 << bits) + (pl.col(ts_field) - start)
    ).to_series().sort()
    probe = events.select(*keys, pl.col(ts_field)).join(ids, on=keys, how="left", maintain_order="left")
    g = pl.col("_g").cast(pl.Int64) * (1 << bits)
    # A null key (no id; joins never match null) finds 0 rows before both bounds: its count is 0.
    code = probe.select((g + (pl.col(ts_field) - start)).fill_null(-1).alias("t"),
                        (g + (pl.col(ts_field) - start - window_ms)).fill_null(-1).alias("t0"))
    counts = (codes.search_sorted(code.get_column("t"), side="left").cast(pl.Int64)
              - codes.search_sorted(code.get_column("t0"), side="left").cast(pl.Int64))
    return events.with_columns(counts.alias(out_col))


def context(events: pl.DataFrame, enrichment: dict, ctx: EnrichmentContext) -> pl.DataFrame:
    return events.with_columns([pl.col(raw).alias(out) for out, raw in enrichment["fields"].items()])


def _pred_cols(pred: dict) -> list[str]:
    out: list[str] = []
    for a in pred.get("args", []):
        if isinstance(a, dict) and "col" in a:
            out.append(a["col"])
        elif isinstance(a, dict) and "op" in a:
            out.extend(_pred_cols(a))
    return out


INDEX_ENRICHERS: dict[str, Callable] = {"lookup": lookup, "counter": counter, "context": context}
