"""Index-time enrichments, one function per enrichment kind, all vectorized joins.

They read what they need through an :class:`EnrichmentContext`, which the framework backs with the
lake (batch and stream) or with in-memory frames (tests); the enrichment code never opens a table.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Callable, Protocol

import polars as pl

from seq_assets.compiled import polars_type
from seq_assets.predicates import to_expr

DAY_MS = 86_400_000


class EnrichmentContext(Protocol):
    def snapshot(self, enrichment: dict, day: date) -> pl.DataFrame | None:
        """The enrichment's snapshot valid on ``day`` (key + columns), or None if there is none."""

    def history(self, source: dict, columns: list[str], start_ms: int, end_ms: int,
                users: pl.Series | None) -> pl.DataFrame:
        """Raw events of ``source`` with event time in [start_ms, end_ms), one row per event_id."""


def lookup(events: pl.DataFrame, enrichment: dict, ctx: EnrichmentContext) -> pl.DataFrame:
    """Left-join each event with the snapshot of its own day: history is enriched as it was then."""
    key, columns = enrichment["key"], enrichment["columns"]
    parts = []
    for day in events.get_column("date").unique().sort().to_list():
        snap = ctx.snapshot(enrichment, day)
        if snap is None:
            snap = pl.DataFrame(schema={key: polars_type(enrichment["key_type"]), **{c: polars_type(t) for c, t in columns.items()}})
        parts.append(snap.select(key, *columns).unique(key, keep="first").with_columns(pl.lit(day).alias("date")))
    if not parts:
        return events.with_columns([pl.lit(None, polars_type(t)).alias(c) for c, t in columns.items()])
    table = pl.concat(parts).with_columns(
        [pl.col(c).cast(polars_type(t)) for c, t in columns.items()]
    )
    return events.join(table, on=[key, "date"], how="left")


def counter(events: pl.DataFrame, enrichment: dict, ctx: EnrichmentContext, source: dict) -> pl.DataFrame:
    """Point-in-time count of the source's matching events per key in [ts - window, ts).

    Each key's history gets a running rank; two as-of joins (strictly before ``ts`` and strictly
    before ``ts - window``) give the count as a difference of ranks: O((events + history) log n),
    never a join per event.
    """
    keys, ts_field = list(enrichment["keys"]), source["time_field"]
    out_col = enrichment["column"] or enrichment["name"]
    window_ms = enrichment["window_days"] * DAY_MS
    if events.is_empty():
        return events.with_columns(pl.lit(None, pl.Int64).alias(out_col))
    # Day-aligned bounds, so the event types of one batch share one prepared history (see cache).
    start = (int(events.get_column(ts_field).min()) // DAY_MS) * DAY_MS - window_ms
    end = (int(events.get_column(ts_field).max()) // DAY_MS + 1) * DAY_MS
    user_field = source["user_field"]
    cache = getattr(ctx, "cache", None)
    cache_key = ("counter", enrichment["name"], start, end)
    hist = cache.get(cache_key) if cache is not None else None
    if hist is None:
        needed = sorted({*keys, ts_field, *_pred_cols(enrichment["counts"])})
        # A small batch (the stream) reads only its users' history; a whole day reads everything once.
        users = events.get_column(user_field).unique() if user_field in keys and cache is None else None
        hist = _ranked(ctx.history(source, needed, start, end, users).filter(to_expr(enrichment["counts"])),
                       keys, ts_field)
        if cache is not None:
            cache.clear()
            cache[cache_key] = hist
    probe = events.select(*keys, pl.col(ts_field).alias("_t")).with_row_index("_row")
    probe = probe.with_columns((pl.col("_t") - window_ms).alias("_t0"))

    def rank_before(at: str) -> pl.Series:
        joined = probe.sort(at).join_asof(
            hist, left_on=at, right_on="_hts", by=keys, strategy="backward", allow_exact_matches=False,
            check_sortedness=False,  # sorted on the as-of column; polars cannot check within groups
        )
        return joined.sort("_row").get_column("_rank").fill_null(0)

    counts = (rank_before("_t") - rank_before("_t0")).alias(out_col)
    return events.with_columns(counts)


def _ranked(hist: pl.DataFrame, keys: list[str], ts_field: str) -> pl.DataFrame:
    """Number each key's history 1, 2, ... in time order, then sort by time for the as-of joins.

    After one sort by key and time, a key starts where any key column changes; the rank is the
    distance from that start. This avoids a hash group-by over the whole history.
    """
    hist = hist.select(*keys, pl.col(ts_field).alias("_hts")).sort(*keys, "_hts").with_row_index("_i")
    new_key = pl.any_horizontal([pl.col(k).ne_missing(pl.col(k).shift(1)) for k in keys])
    return hist.with_columns(
        (pl.col("_i") - pl.when(new_key).then(pl.col("_i")).otherwise(None).forward_fill() + 1)
        .cast(pl.Int64).alias("_rank")
    ).drop("_i").sort("_hts")


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


def days_between(start_ms: int, end_ms: int) -> list[date]:
    """Every UTC day touched by [start_ms, end_ms]."""
    first = date(1970, 1, 1) + timedelta(days=start_ms // DAY_MS)
    last = date(1970, 1, 1) + timedelta(days=end_ms // DAY_MS)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


INDEX_ENRICHERS: dict[str, Callable] = {"lookup": lookup, "counter": counter, "context": context}
