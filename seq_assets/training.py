"""Reads for training code: sequences as of a day, and point-in-time sequences for labels.

    from seq_assets.training import read_sequences, point_in_time_sequences
    seqs = read_sequences("engagements_v1", "2026-03-02", fields=["item_id", "ts"])
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import polars as pl

from seq_assets.core.compiled import Compiled
from seq_assets.core.days import DAY_MS, day_of_ms
from seq_assets import settings
from seq_assets.storage.lake import Lake


def _as_day(as_of: date | datetime | str) -> date:
    if isinstance(as_of, datetime):
        return as_of.astimezone(timezone.utc).date() if as_of.tzinfo else as_of.date()
    if isinstance(as_of, date):
        return as_of
    return date.fromisoformat(str(as_of)[:10])


def read_sequences(feature: str, as_of: date | datetime | str, users: list[int] | pl.Series | None = None,
                   fields: list[str] | None = None, lake: Lake | None = None,
                   compiled: Compiled | None = None) -> pl.DataFrame:
    """The feature's sequences as of the end of day ``as_of``: one row per user, list columns.

    Only that day's partition is read (partition pruning) and only ``fields`` (column projection).
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
    lf = lake.scan("sequences", table, days=[_as_day(as_of)], columns=["user_id", "date", *fields])
    if lf is None:
        return pl.DataFrame(schema={k: v for k, v in compiled.sequence_schema(f).items() if k in ("user_id", "date", *fields)})
    if users is not None:
        lf = lf.filter(pl.col("user_id").is_in(pl.Series(users, dtype=pl.Int64).implode()))
    return lf.collect()


def point_in_time_sequences(feature: str, labels: pl.DataFrame, fields: list[str] | None = None,
                            lake: Lake | None = None, compiled: Compiled | None = None,
                            events: pl.DataFrame | None = None) -> pl.DataFrame:
    """For each label row (``user_id``, ``request_ts`` epoch ms) the sequence as it was just before it.

    Only events with event time strictly before ``request_ts`` and inside the window count, so a
    label never sees its own or any later event. One sort of the events and two as-of lookups find,
    for every label, the slice of that user's history it sees: O(events + labels) after the sort,
    never a join per label. Returns the labels' columns plus one list column per field.
    """
    compiled = compiled or settings.load_compiled()
    f = compiled.feature(feature)
    fields = list(fields) if fields is not None else compiled.stored_fields(f)
    o = f["ordering"]
    ts, tie = o["by"], o["tie_break"]
    window_ms = f["window_days"] * DAY_MS
    labels = labels.with_columns(pl.col("user_id").cast(pl.Int64), pl.col("request_ts").cast(pl.Int64))
    if events is None:
        events = _events_for_labels(compiled, f, labels, sorted({"user_id", "event_type", ts, tie, *f["dedup_key"], *fields}),
                                    lake or settings.lake())
    events = events.filter(pl.col("event_type").is_in(f["event_types"]))
    if list(f["dedup_key"]) != ["event_id"] or events.get_column("event_id").n_unique() != events.height:
        # Dedup on the key keeping the newest copy, exactly like the batch path.
        events = events.sort(["user_id", ts, tie], descending=[False, True, False]).unique(
            subset=["user_id", *f["dedup_key"]], keep="first", maintain_order=True)
    # Oldest first, and on equal times the larger tie-break first, so that reading a slice backwards
    # gives newest first with the tie-break ascending, as the batch path orders it.
    ev = events.sort(["user_id", ts, tie], descending=[False, False, True]).with_row_index("_pos").with_columns(pl.col("_pos").cast(pl.Int64))
    anchors = ev.select("user_id", pl.col(ts).alias("_t"), "_pos")
    lab = labels.with_row_index("_label").with_columns((pl.col("request_ts") - window_ms).alias("_start"))

    def last_pos_before(col: str) -> pl.Series:
        j = lab.sort(col).join_asof(anchors, left_on=col, right_on="_t", by="user_id", strategy="backward",
                                    allow_exact_matches=False, check_sortedness=False)
        return j.sort("_label").get_column("_pos")

    hi = last_pos_before("request_ts")  # newest event strictly before the request
    lo_excl = last_pos_before("_start")  # newest event strictly before the window opens
    first = ev.group_by("user_id").agg(pl.col("_pos").min().alias("_first"))
    lab = lab.with_columns(hi.alias("_hi"), lo_excl.alias("_lo_excl")).join(first, on="user_id", how="left")
    lab = lab.with_columns(
        pl.max_horizontal(pl.coalesce(pl.col("_lo_excl") + 1, pl.col("_first")), pl.col("_hi") - f["max_length"] + 1).alias("_lo")
    )
    idx = lab.select(
        "_label",
        pl.when(pl.col("_hi").is_not_null() & (pl.col("_hi") >= pl.col("_lo")))
        .then(pl.int_ranges(pl.col("_hi").cast(pl.Int64), pl.col("_lo").cast(pl.Int64) - 1, -1, dtype=pl.Int64))
        .otherwise(pl.lit([], dtype=pl.List(pl.Int64))).alias("_idx"),
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
        lo = int(labels.get_column("request_ts").min()) - f["window_days"] * DAY_MS
        hi = int(labels.get_column("request_ts").max())
        start, end = day_of_ms(lo), day_of_ms(hi)
    users = labels.get_column("user_id").unique().implode()
    frames = []
    for et in f["event_types"]:
        lf = lake.scan("events", et, start=start, end=end, columns=cols)
        if lf is not None:
            frames.append(lf.filter(pl.col("user_id").is_in(users)))
    if not frames:
        schema = {}
        for et in f["event_types"]:
            schema.update({c: t for c, t in compiled.event_schema(et).items() if c in cols})
        return pl.DataFrame(schema=schema)
    return pl.concat(frames, how="vertical_relaxed").collect()
