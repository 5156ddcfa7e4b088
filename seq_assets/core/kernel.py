"""The sequence rules, stated once. Every runtime builds a feature's sequences through this module.

A feature (its compiled dict, see :mod:`seq_assets.core.compiled`) defines a user's sequence as of
an end time ``end`` by four rules, applied in this order:

1. **Scope.** Only events whose event type (the :data:`EVENT_TYPE` column) is one of
   ``feature["event_types"]`` and whose ordering column ``ordering.by`` lies in the window
   ``[end - window_days, end)`` count. The window is half-open: an event at its start is in it,
   one at ``end`` is not (:func:`window_bounds`, :func:`in_scope`).
2. **Order.** Per user by ``ordering.by``, newest first when ``ordering.descending`` (else oldest
   first), ties broken by ``ordering.tie_break`` ascending, so the order never depends on how the
   rows arrived (:func:`order_keys`).
3. **Dedup.** Of the events of a user sharing ``dedup_key``, only the first in that order stays:
   the newest copy, for a newest-first feature (:func:`dedup`). Copies equal in the ordering column
   and the tie-break are interchangeable; which of them stays is not defined.
4. **N.** The first ``max_length`` events.

Column names come from the feature (ordering, dedup key, fields) and from parameters: the user
column is ``user`` (default :data:`USER`), the event-type column ``event_type`` (default
:data:`EVENT_TYPE`).

Where each runtime calls the rules:

- batch build: :func:`assemble_sequences` (polars, lazy), from the window's events;
- day-to-day extension: :func:`extend_sequences`, from the day before's sequences and the day's
  events, for a feature that is :func:`extendable`;
- serving, per request: :func:`sequence_rows` (a snapshot slice merged with fresh events) and
  :func:`window_slice` (a snapshot slice alone), on one user's numpy columns;
- training: point-in-time reads sort with :func:`scan_order`, drop copies with
  :func:`drop_copies` and window with :func:`window_bounds`.

Two runtimes drop copies before the window instead of after it, since they cannot know it: a
point-in-time read over all labels at once, and the serving store when an event arrives a second
time. Both equal the rules as long as the copies of a key do not straddle a window edge, as the
copies of one event id, one event at one time, never do.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from seq_assets.core.days import DAY_MS

USER = "user_id"  # the user column of events and sequences
EVENT_TYPE = "event_type"  # the column holding an event's event type


# ---- the rules ------------------------------------------------------------------------------


def window_bounds(feature: dict, as_of_end_ms):
    """[start, end) of the ordering column a sequence ending at ``as_of_end_ms`` may hold.

    ``as_of_end_ms`` may be a number or a polars expression (one end per row).
    """
    return as_of_end_ms - feature["window_days"] * DAY_MS, as_of_end_ms


def in_scope(feature: dict, start_ms=None, end_ms=None, event_type: str = EVENT_TYPE) -> pl.Expr:
    """The rows that count: the feature's event types, with ``start_ms <= by < end_ms`` (a bound
    that is None is not checked)."""
    expr = pl.col(event_type).is_in(feature["event_types"])
    by = pl.col(feature["ordering"]["by"])
    if start_ms is not None:
        expr = expr & (by >= start_ms)
    if end_ms is not None:
        expr = expr & (by < end_ms)
    return expr


def order_keys(feature: dict, user: str = USER, reverse: bool = False) -> tuple[list[str], list[bool]]:
    """Sort columns and their ``descending`` flags for sequence order: users ascending, then each
    user's events in order. ``reverse=True`` reverses each user's events."""
    o = feature["ordering"]
    return [user, o["by"], o["tie_break"]], [False, bool(o["descending"]) != reverse, reverse]


def scan_order(feature: dict, user: str = USER) -> tuple[list[str], list[bool], bool]:
    """Sort keys that put each user's events in time order (ordering column ascending), and whether
    a sequence reads that order backwards (newest first) or forwards (oldest first)."""
    backwards = bool(feature["ordering"]["descending"])
    keys, desc = order_keys(feature, user, reverse=backwards)
    return keys, desc, backwards


def dedup(feature: dict, ordered: pl.LazyFrame, user: str = USER) -> pl.LazyFrame:
    """Rows in sequence order, keeping the first of each user's copies of the dedup key."""
    keys = list(feature["dedup_key"])
    if not keys:
        return ordered
    return ordered.unique(subset=[user, *keys], keep="first", maintain_order=True)


def order_events(feature: dict, events: pl.LazyFrame | pl.DataFrame, user: str = USER) -> pl.LazyFrame:
    """Each user's events in sequence order, deduplicated (rules 2 and 3)."""
    keys, desc = order_keys(feature, user)
    return dedup(feature, events.lazy().sort(keys, descending=desc), user)


def drop_copies(feature: dict, events: pl.DataFrame, user: str = USER) -> pl.DataFrame:
    """``events`` with only the first of each user's copies of the dedup key (in sequence order);
    returned as they are when no key repeats. The order of the rows is not kept."""
    keys = list(feature["dedup_key"])
    if not keys:
        return events
    distinct = (events.get_column(keys[0]).n_unique() if len(keys) == 1
                else events.select(pl.struct(keys).n_unique()).item())
    if distinct == events.height:
        return events
    return order_events(feature, events, user).collect()


def rule_columns(feature: dict, fields: list[str], user: str = USER, event_type: str = EVENT_TYPE) -> list[str]:
    """The event columns building ``fields`` of the feature's sequences reads."""
    o = feature["ordering"]
    return sorted({user, event_type, o["by"], o["tie_break"], *feature["dedup_key"], *fields})


# ---- batch: polars frames -------------------------------------------------------------------


def assemble_sequences(feature: dict, events: pl.LazyFrame | pl.DataFrame, as_of_end_ms: int,
                       fields: list[str], day: date | None = None, user: str = USER) -> pl.DataFrame:
    """One row per user: ``user``, one list column per field (in sequence order), then ``date``.

    ``events`` may hold anything; the four rules pick each user's sequence.
    """
    start, end = window_bounds(feature, as_of_end_ms)
    ordered = order_events(feature, events.lazy().filter(in_scope(feature, start, end)), user)
    seqs = (
        ordered.group_by(user, maintain_order=True)
        .agg([pl.col(f).head(feature["max_length"]) for f in fields])
        .sort(user)
    )
    if day is not None:
        seqs = seqs.with_columns(pl.lit(day).alias("date"))
    return seqs.collect()


def extendable(feature: dict, fields: list[str], event_id: str | None = None, time: str | None = None) -> bool:
    """Whether a day's sequences can be built from the previous day's plus the day's own events.

    That holds when every new event sorts before every older one (newest first by event time),
    when no new event can duplicate an older one (the dedup key holds the event id, and an event
    id lives in one day), and when the ordering column is stored, so the window can be trimmed.
    ``event_id`` and ``time`` name the source's event id and event time; without them the
    feature's tie-break and ordering column are taken to be those.
    """
    o = feature["ordering"]
    event_id = o["tie_break"] if event_id is None else event_id
    time = o["by"] if time is None else time
    dedup_key = list(feature["dedup_key"])
    return o["by"] == time and o["descending"] and o["by"] in fields and (not dedup_key or event_id in dedup_key)


def extend_sequences(feature: dict, previous: pl.DataFrame, events: pl.LazyFrame | pl.DataFrame,
                     as_of_end_ms: int, fields: list[str], day: date | None = None,
                     user: str = USER) -> pl.DataFrame:
    """The sequences as of ``as_of_end_ms`` from those of the day before and the day's events (see
    :func:`extend_sequences_changes`)."""
    return extend_sequences_changes(feature, previous, events, as_of_end_ms, fields, day, user)[0]


def extend_sequences_changes(feature: dict, previous: pl.DataFrame, events: pl.LazyFrame | pl.DataFrame,
                             as_of_end_ms: int, fields: list[str], day: date | None = None,
                             user: str = USER) -> tuple[pl.DataFrame, pl.Series]:
    """The sequences as of ``as_of_end_ms`` from those of the day before and the day's events, and
    the users whose sequence changed: those with a new event (it goes in front), and those whose
    old events were cut by the length cap or the window (a user left with none is among them and
    not in the sequences).

    ``previous`` is :func:`assemble_sequences` output as of the end of the day before (``user``
    and the list columns; a ``date`` column is ignored); ``events`` holds the events after it. The
    result equals :func:`assemble_sequences` over the whole window, for a feature that is
    :func:`extendable`, at a cost that follows the day's events and the output, not the window:
    the new events are ordered, the old lists are cut to what still fits (length and window), and
    both are interleaved by one narrow sort and one gather, then regrouped by their sorted users.
    """
    start, end = window_bounds(feature, as_of_end_ms)
    by, n = feature["ordering"]["by"], feature["max_length"]
    lf = events.lazy().filter(in_scope(feature, start, end))
    fresh = (order_events(feature, lf, user).filter(pl.int_range(pl.len()).over(user) < n)
             .select(user, *fields).collect())
    old = previous.select(user, *fields)
    counts = fresh.group_by(user).len("_new")
    old = old.join(counts, on=user, how="left", maintain_order="left")
    size = pl.col(by).list.len()
    keep = pl.min_horizontal(size, pl.lit(n, pl.UInt32) - pl.col("_new").fill_null(0).cast(pl.UInt32))
    if old.select((pl.col(by).list.last() < start).any()).item():
        # The oldest day left the window: lists are newest first, so what left is a tail.
        keep = pl.min_horizontal(keep, pl.col(by).list.eval(pl.element() >= start).list.sum().cast(pl.UInt32))
    old = old.with_columns(keep.alias("_keep"))
    cut = old.filter(pl.col("_keep") < size).get_column(user)
    changed = pl.concat([counts.get_column(user), cut]).unique().sort()
    if old.select((pl.col("_keep") == 0).any()).item():
        old = old.filter(pl.col("_keep") > 0)
    if old.select((pl.col("_keep") < size).any()).item():
        old = old.with_columns([pl.col(f).list.head(pl.col("_keep")) for f in fields])
    old = old.drop("_new", "_keep").explode(fields)
    # One chunk per column before the gather: a gather across chunks resolves every index's chunk
    # (the nested lists of enrichments most of all), a copy into one chunk costs less.
    both = pl.concat([fresh.with_columns(pl.lit(0, pl.Int8).alias("_src")),
                      old.with_columns(pl.lit(1, pl.Int8).alias("_src"))], how="vertical_relaxed", rechunk=True)
    # Per user: the new events (already newest first), then the kept old ones in their order.
    order = both.select(pl.arg_sort_by(user, "_src", maintain_order=True)).to_series()
    flat = both.drop("_src")[order].set_sorted(user)
    seqs = flat.group_by(user, maintain_order=True).agg(fields)
    if day is not None:
        seqs = seqs.with_columns(pl.lit(day).alias("date"))
    return seqs, changed


# ---- serving: one user's numpy columns ------------------------------------------------------


def _sort_key(values: np.ndarray, descending: bool) -> np.ndarray:
    if not descending:
        return values
    if values.dtype.kind in "iuf":
        return -values
    return -np.unique(values, return_inverse=True)[1]


def sequence_rows(feature: dict, cols: dict[str, np.ndarray], start_ms: int, end_ms: int | None,
                  event_type: str = EVENT_TYPE) -> np.ndarray:
    """Positions of one user's rows that make the sequence, in sequence order (rules 1 to 3; no
    upper bound when ``end_ms`` is None, no event-type check when ``cols`` has no such column).

    The same rules as :func:`assemble_sequences` in numpy, for the serving request path.
    """
    o = feature["ordering"]
    by = cols[o["by"]]
    keep = by >= start_ms
    if end_ms is not None:
        keep &= by < end_ms
    if event_type in cols:
        keep &= np.isin(cols[event_type], feature["event_types"])
    rows = np.flatnonzero(keep)
    # lexsort: the last key is the primary one.
    rows = rows[np.lexsort((cols[o["tie_break"]][rows], _sort_key(by[rows], o["descending"])))]
    keys = list(feature["dedup_key"])
    if not keys or not len(rows):
        return rows
    if len(keys) == 1:
        values = cols[keys[0]][rows]
    else:
        values = np.rec.fromarrays([cols[k][rows] for k in keys])
    _, first = np.unique(values, return_index=True)  # the first position of each key
    return rows if len(first) == len(rows) else rows[np.sort(first)]


def window_slice(feature: dict, cols: dict[str, np.ndarray], start_ms: int, end_ms: int | None) -> slice:
    """The rows inside the window of rows already in sequence order: a contiguous run, found by two
    binary searches (no upper bound when ``end_ms`` is None)."""
    o = feature["ordering"]
    by = cols[o["by"]]
    if o["descending"]:
        neg = -by
        lo = 0 if end_ms is None else int(np.searchsorted(neg, -end_ms, side="right"))
        hi = int(np.searchsorted(neg, -start_ms, side="right"))
    else:
        lo = int(np.searchsorted(by, start_ms, side="left"))
        hi = len(by) if end_ms is None else int(np.searchsorted(by, end_ms, side="left"))
    return slice(lo, max(lo, hi))
