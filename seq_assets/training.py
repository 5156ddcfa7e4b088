"""Reads for training code: sequences as of a day, and point-in-time sequences for labels.

    from seq_assets.training import read_sequences, point_in_time_sequences
    seqs = read_sequences("engagements_v1", "2026-03-02", fields=["item_id", "ts"])
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import polars as pl

from seq_assets import settings
from seq_assets.core import kernel
from seq_assets.core.compiled import Compiled
from seq_assets.core.days import day_of_ms
from seq_assets.core.snapshots import sequences_as_of
from seq_assets.storage.lake import Lake


def _as_day(as_of: date | datetime | str) -> date:
    if isinstance(as_of, datetime):
        return as_of.astimezone(timezone.utc).date() if as_of.tzinfo else as_of.date()
    if isinstance(as_of, date):
        return as_of
    return date.fromisoformat(str(as_of)[:10])


def _user_ids(compiled: Compiled, feature: dict, users) -> pl.Series:
    """``users`` (a list or a Series) as ids of the feature's user type (int64 or string); ids of
    the other kind are refused naming the type the feature expects."""
    want = compiled.user_type(feature)
    name = compiled.user_field(feature)
    values = users.rename(name) if isinstance(users, pl.Series) else pl.Series(name, list(users), strict=False)
    if values.dtype != pl.Null and values.dtype.is_integer() != want.is_integer():
        kind = "int64" if want.is_integer() else "string"
        raise ValueError(f"user ids of {feature['name']}_v{feature['version']} are {kind}, got {values.dtype} ids")
    return values.cast(want)


def read_sequences(feature: str, as_of: date | datetime | str, users: list[int] | list[str] | pl.Series | None = None,
                   fields: list[str] | None = None, lake: Lake | None = None,
                   compiled: Compiled | None = None) -> pl.DataFrame:
    """The feature's sequences as of the end of day ``as_of``: one row per user (its column named
    by the feature's source's user field), list columns; ``users`` keeps only those ids.

    Only the partitions that make that day are read (its full snapshot and the changes since, see
    :mod:`seq_assets.core.snapshots`; partition pruning) and only ``fields`` (column projection).
    """
    compiled = compiled or settings.load_compiled()
    f = compiled.feature(feature)
    table = f"{f['name']}_v{f['version']}"
    stored = compiled.stored_fields(f)
    fields = list(fields) if fields is not None else stored
    unknown = [x for x in fields if x not in stored]
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} of {table}; stored fields: {stored}")
    lake = lake or settings.lake()
    user = compiled.user_field(f)
    ids = None if users is None else _user_ids(compiled, f, users)
    seqs = sequences_as_of(lake, compiled, table, _as_day(as_of), users=ids, columns=fields)
    return seqs.select(user, "date", *fields)


def point_in_time_sequences(feature: str, labels: pl.DataFrame, fields: list[str] | None = None,
                            lake: Lake | None = None, compiled: Compiled | None = None,
                            events: pl.DataFrame | None = None) -> pl.DataFrame:
    """For each label row (the user, ``request_ts`` epoch ms) the sequence as it was just before it.

    The labels' user column is named by the feature's user field (``Compiled.user_field``) and holds
    ids of its type; a ``user_id`` column is taken for it when the field has another name and the
    labels have no such column (the output then names it by the field).

    Only events with event time strictly before ``request_ts`` and inside the window count, so a
    label never sees its own or any later event. One sort of the events and two as-of lookups find,
    for every label, the slice of that user's history it sees: O(events + labels) after the sort,
    never a join per label. Returns the labels' columns plus one list column per field.

    The sequence rules are the kernel's (:mod:`seq_assets.core.kernel`); copies of a dedup key are
    dropped once over the events read, not per label, which is exact for keys whose copies are one
    event at one time, such as event ids.
    """
    compiled = compiled or settings.load_compiled()
    f = compiled.feature(feature)
    fields = list(fields) if fields is not None else compiled.stored_fields(f)
    user, ts = compiled.user_field(f), f["ordering"]["by"]
    if user not in labels.columns and kernel.USER in labels.columns:
        labels = labels.rename({kernel.USER: user})
    labels = labels.with_columns(_user_ids(compiled, f, labels.get_column(user)), pl.col("request_ts").cast(pl.Int64))
    if events is None:
        events = _events_for_labels(compiled, f, labels, kernel.rule_columns(f, fields, user), lake or settings.lake())
    # The window is per label, so only the event types are checked here; copies are dropped once.
    events = kernel.drop_copies(f, events.filter(kernel.in_scope(f)), user)
    # Each user's events in time order: a slice of it, read backwards for a newest-first feature
    # and forwards for an oldest-first one, is that label's sequence in the kernel's order.
    keys, desc, backwards = kernel.scan_order(f, user)
    ev = events.sort(keys, descending=desc).with_row_index("_pos").with_columns(pl.col("_pos").cast(pl.Int64))
    anchors = ev.select(user, pl.col(ts).alias("_t"), "_pos")
    start, _ = kernel.window_bounds(f, pl.col("request_ts"))
    lab = labels.with_row_index("_label").with_columns(start.alias("_start"))

    def last_pos_before(col: str) -> pl.Series:
        j = lab.sort(col).join_asof(anchors, left_on=col, right_on="_t", by=user, strategy="backward",
                                    allow_exact_matches=False, check_sortedness=False)
        return j.sort("_label").get_column("_pos")

    hi = last_pos_before("request_ts")  # newest event strictly before the request
    lo_excl = last_pos_before("_start")  # newest event strictly before the window opens
    first = ev.group_by(user).agg(pl.col("_pos").min().alias("_first"))
    lab = lab.with_columns(hi.alias("_hi"), lo_excl.alias("_lo_excl")).join(first, on=user, how="left")
    n, lo_in = f["max_length"], pl.coalesce(pl.col("_lo_excl") + 1, pl.col("_first"))
    if backwards:  # the N newest of the slice, from _hi down
        lab = lab.with_columns(pl.max_horizontal(lo_in, pl.col("_hi") - n + 1).alias("_lo"))
        rng = pl.int_ranges(pl.col("_hi").cast(pl.Int64), pl.col("_lo").cast(pl.Int64) - 1, -1, dtype=pl.Int64)
    else:  # the N oldest of the slice, from its first up
        lab = lab.with_columns(lo_in.alias("_lo"), pl.min_horizontal(pl.col("_hi"), lo_in + n - 1).alias("_top"))
        rng = pl.int_ranges(pl.col("_lo").cast(pl.Int64), pl.col("_top").cast(pl.Int64) + 1, 1, dtype=pl.Int64)
    idx = lab.select(
        "_label",
        pl.when(pl.col("_hi").is_not_null() & (pl.col("_hi") >= pl.col("_lo")))
        .then(rng).otherwise(pl.lit([], dtype=pl.List(pl.Int64))).alias("_idx"),
    ).explode("_idx", empty_as_null=False)
    picked = idx.filter(pl.col("_idx").is_not_null()).join(ev.select("_pos", *fields), left_on="_idx", right_on="_pos", how="left", maintain_order="left")
    seqs = picked.group_by("_label", maintain_order=True).agg([pl.col(x) for x in fields])
    out = lab.select("_label", *labels.columns).join(seqs, on="_label", how="left", maintain_order="left")
    schema = compiled.sequence_schema(f)
    return out.with_columns(
        [pl.col(x).fill_null(pl.lit([], dtype=schema[x])).cast(schema[x]) for x in fields]
    ).sort("_label").drop("_label")


def _events_for_labels(compiled: Compiled, f: dict, labels: pl.DataFrame, cols: list[str], lake: Lake) -> pl.DataFrame:
    if labels.is_empty():
        start = end = date(1970, 1, 1)
    else:
        lo, _ = kernel.window_bounds(f, int(labels.get_column("request_ts").min()))
        hi = int(labels.get_column("request_ts").max())
        start, end = day_of_ms(lo), day_of_ms(hi)
    user = compiled.user_field(f)
    users = labels.get_column(user).unique().implode()
    frames = []
    for et in f["event_types"]:
        lf = lake.scan("events", et, start=start, end=end, columns=cols)
        if lf is not None:
            frames.append(lf.filter(pl.col(user).is_in(users)))
    if not frames:
        schema = {}
        for et in f["event_types"]:
            schema.update({c: t for c, t in compiled.event_schema(et).items() if c in cols})
        return pl.DataFrame(schema=schema)
    return pl.concat(frames, how="vertical_relaxed").collect()
