"""Stage 1, fetch: a user's events from the closed snapshot plus everything indexed since.

The snapshot is the newest closed partition of ``sequences/<feature>`` held as flat numpy
columns with per-user offsets, so a fetch is a binary search and a few zero-copy slices. Events
indexed after it (from ``events/`` and from the stream tail) are kept per user in ``FreshEvents``
and merged by the filter stage.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date

import numpy as np
import polars as pl

from seq_assets.core import kernel, snapshots
from seq_assets.core.compiled import Compiled
from seq_assets.core.days import end_of_day_ms
from seq_assets.core.engine import Engine
from seq_assets.serving.columns import (
    Events,
    column_to_numpy,
    frame_to_events,
    list_widths,
)
from seq_assets.serving.shards import Shard
from seq_assets.storage.lake import Lake, add_actions


class Snapshot:
    """One closed ``sequences/`` partition, flattened: user ``i`` owns rows offsets[i]:offsets[i+1]."""

    def __init__(self, day: date | None, user_ids: np.ndarray, offsets: np.ndarray, events: Events,
                 written_ms: int | None = None, vocabs: dict[str, np.ndarray] | None = None):
        self.day, self.user_ids, self.offsets, self.events = day, user_ids, offsets, events
        self.written_ms = written_ms  # when the partition was written: events indexed later are fresh
        # String columns held as codes into these (a snapshot mapped from shared files): decoded per slice
        self.vocabs = vocabs or {}

    @classmethod
    def empty(cls, fields: list[str], schema: dict, widths: dict[str, int] | None = None,
              user: str = kernel.USER) -> "Snapshot":
        """No users yet; ``schema`` is the feature's sequence schema, whose ``user`` column types the ids."""
        df = pl.DataFrame(schema={f: schema[f].inner for f in fields})
        user_ids = pl.Series(user, [], dtype=schema.get(user, pl.Int64)).to_numpy()
        return cls(None, user_ids, np.zeros(1, np.int64), frame_to_events(df, fields, widths))

    @classmethod
    def load(cls, lake: Lake, table: str, day: date, fields: list[str],
             widths: dict[str, int] | None = None, user: str = kernel.USER,
             built: pl.DataFrame | None = None,
             keep: Callable[[pl.Series], pl.Series] | None = None) -> "Snapshot":
        """The day's partition of ``sequences/<table>``; ``user`` names its user column (int64 or
        string ids; sorted either way, so a fetch is one binary search). ``built`` stands in for the
        partition's rows (the same layout) when given; the partition still dates the snapshot. ``keep``
        (the user ids -> a mask) keeps only some users, a shard's: the other users' rows are never
        flattened."""
        t = lake.table("sequences", table)
        adds = add_actions(t)
        written = adds.filter(pl.col("partition.date") == day).get_column("modification_time").max()
        # One column at a time: the nested frame, its flat copy and the numpy form of one field are
        # alive at once, never those of every field (embeddings dominate the peak memory).
        # Every read goes through the same table version ``t``, so the columns line up row for row.
        # The rows that make the day are its full snapshot and the changes since (core.snapshots).
        rows = None if built is not None else snapshots.rows_as_of(pl.scan_delta(t), day, user)
        part = pl.scan_delta(t).filter(pl.col("date") == day)
        read = built.select if built is not None else rows.read if rows is not None else (
            lambda *cols: part.select(*cols).collect())
        keys = read(user, fields[0]).with_row_index("_row")
        if keep is not None:
            keys = keys.filter(keep(keys.get_column(user)))
        keys = keys.sort(user)
        order = keys.get_column("_row")
        lengths = keys.get_column(fields[0]).list.len().fill_null(0).to_numpy().astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        user_ids = keys.get_column(user).to_numpy()
        del keys
        cols, valid = {}, {}
        for f in fields:
            nested = read(f).get_column(f).gather(order)
            flat = nested.explode(empty_as_null=False) if len(nested) else nested.explode()
            del nested
            arr, v = column_to_numpy(flat, (widths or {}).get(f))
            del flat
            cols[f] = arr
            if v is not None:
                valid[f] = v
        return cls(day, user_ids, offsets, Events(cols, valid), None if written is None else int(written))

    def slice(self, user_id: int | str) -> Events:
        i = int(np.searchsorted(self.user_ids, user_id))
        if i >= len(self.user_ids) or self.user_ids[i] != user_id:
            rows = self.events.take(slice(0, 0))
        else:
            rows = self.events.take(slice(int(self.offsets[i]), int(self.offsets[i + 1])))
        for c, vocab in self.vocabs.items():
            rows.cols[c] = vocab[rows.cols[c]]
        return rows

    @property
    def users(self) -> int:
        return len(self.user_ids)


_MAX_CHUNKS = 32  # the fresh frame is made contiguous again past this many chunks


def _run_of(events: Events, start: int, end: int) -> Events:
    """Rows [start, end) of ``events`` as arrays of their own; a validity mask only where one of
    those rows is null."""
    cols = {k: v[start:end].copy() for k, v in events.cols.items()}
    valid = {k: v[start:end].copy() for k, v in events.valid.items() if not v[start:end].all()}
    return Events(cols, valid)


class FreshEvents:
    """Events indexed after the snapshot day, per user, in sequence order.

    An event that arrives twice (from ``events/`` and from the stream tail) is kept once: rows equal
    in the event id and the feature's order columns are copies the rules cannot tell apart. Copies
    that differ there are kept, and the filter stage dedups them by the feature's rule.
    """

    def __init__(self, feature: dict, fields: list[str], event_id: str, time: str,
                 widths: dict[str, int] | None = None, user: str = kernel.USER):
        """``event_id`` and ``time`` name the source's event id and event time columns."""
        self.feature, self.fields, self.widths, self.user = feature, fields, widths, user
        self.event_id, self.time = event_id, time
        o = feature["ordering"]
        self.copy_key = list(dict.fromkeys([event_id, o["by"], o["tie_break"]]))
        # The event id and time are kept beside the fields (copies and drop_held need them).
        self.keep = list(dict.fromkeys([user, *fields, event_id, time]))
        self.frame: pl.DataFrame | None = None
        self.by_user: dict[int | str, Events] = {}
        # Each user's first and last (ordering column, tie-break) in sequence order: a poll's events
        # that all go before or all after a user's join its arrays at that end.
        self._ends: dict[int | str, tuple[tuple, tuple]] = {}
        self._keys: set[tuple] = set()  # the copy keys of the events held
        self.newest_ts: int | None = None

    def add(self, df: pl.DataFrame) -> int:
        """Add events (any users); returns how many were new."""
        if df.is_empty():
            return 0
        user = self.user
        df = df.select([c for c in self.keep if c in df.columns])
        df = df.unique(subset=self.copy_key, keep="first", maintain_order=True)
        if self.frame is not None:
            df = pl.concat([self.frame.head(0), df], how="vertical_relaxed")  # the frame's types
        # Only the copies of events held already are dropped, by the set of the keys held (a null
        # equals a null there): deduplicating the whole frame again at every add, or joining
        # against it, grew with the day's fresh events.
        keys = df.select(self.copy_key).rows()
        new = [k not in self._keys for k in keys]
        if not all(new):
            df = df.filter(pl.Series(new, dtype=pl.Boolean))
        self._keys.update(k for k, n in zip(keys, new) if n)
        added = df.height
        if added == 0:
            return 0
        merged = df if self.frame is None else pl.concat([self.frame, df], how="vertical_relaxed")
        if merged.n_chunks() > _MAX_CHUNKS:  # a chunk per add made every filter and join slow
            merged = merged.rechunk()
        self.frame = merged
        # The new events converted once (sorted by user first, so each user's rows are one run),
        # each user's run copied out (converting user by user cost a polars round trip per user and
        # column; views would keep every poll's arrays alive) and joined to the user's arrays at
        # the end it goes to. A user whose new events interleave with the ones held (late events,
        # ties, nulls in the order) is converted again whole from the fresh frame.
        redo = [uid for uid, run, ends in self._runs(df) if not self._join(uid, run, ends)]
        if redo:
            for uid, run, ends in self._runs(merged.filter(pl.col(user).is_in(pl.Series(redo).implode()))):
                self.by_user[uid] = run
                self._ends[uid] = ends
        ts_max = int(df.get_column(self.time).max())
        self.newest_ts = ts_max if self.newest_ts is None else max(self.newest_ts, ts_max)
        return added

    def _runs(self, df: pl.DataFrame):
        """``(user, events, ends)`` for each user of ``df``, in sequence order; ``ends`` is None when
        an order value at either end is null."""
        o = self.feature["ordering"]
        keys, desc = kernel.order_keys(self.feature, self.user)
        df = df.sort(keys, descending=desc)
        whole = frame_to_events(df, self.fields, self.widths)
        by, tie = pl.col(o["by"]), pl.col(o["tie_break"])
        runs = df.group_by(self.user, maintain_order=True).agg(
            pl.len().alias("_n"), by.first().alias("_fb"), tie.first().alias("_ft"),
            by.last().alias("_lb"), tie.last().alias("_lt"))
        start = 0
        for uid, n, fb, ft, lb, lt in runs.iter_rows():
            ends = None if None in (fb, ft, lb, lt) else ((fb, ft), (lb, lt))
            yield uid, _run_of(whole, start, start + n), ends
            start += n

    def _precedes(self, a: tuple, b: tuple) -> bool:
        """Whether order key ``a`` comes strictly before ``b`` in sequence order (``order_keys``)."""
        if a[0] != b[0]:
            return a[0] > b[0] if self.feature["ordering"]["descending"] else a[0] < b[0]
        return a[1] < b[1]

    def _join(self, uid, run: Events, ends: tuple | None) -> bool:
        """Put a user's new events before or after the ones held; False when they belong among them."""
        old, held = self.by_user.get(uid), self._ends.get(uid)
        if ends is None or (old is not None and held is None):
            return False
        if old is None:
            self.by_user[uid], self._ends[uid] = run, ends
            return True
        try:
            if self._precedes(ends[1], held[0]):
                joined, self._ends[uid] = Events.concat([run, old]), (ends[0], held[1])
            elif self._precedes(held[1], ends[0]):
                joined, self._ends[uid] = Events.concat([old, run]), (held[0], ends[1])
            else:
                return False
        except (TypeError, ValueError):  # values that do not compare, arrays of other widths
            return False
        self.by_user[uid] = joined
        return True

    def drop_held(self, snapshot: "Snapshot") -> None:
        """Forget events a newer snapshot now holds; late events it does not hold yet stay."""
        if self.frame is None or snapshot.day is None:
            return
        if self.event_id in snapshot.events.cols:
            ids = snapshot.events.cols[self.event_id]
            if self.event_id in snapshot.vocabs:
                ids = snapshot.vocabs[self.event_id][ids]
            held = pl.Series(self.event_id, ids, dtype=self.frame.schema[self.event_id])
            keep = self.frame.filter(~pl.col(self.event_id).is_in(held.implode()))
        else:  # the feature does not store its event id: the snapshot holds what happened before its end
            keep = self.frame.filter(pl.col(self.time) >= end_of_day_ms(snapshot.day))
        self.frame, self.by_user, self._ends, self._keys, self.newest_ts = None, {}, {}, set(), None
        self.add(keep)

    def get(self, user_id: int | str) -> Events | None:
        return self.by_user.get(user_id)


class FeatureStore:
    """Everything one feature serves from: the snapshot and the fresh events, swapped atomically."""

    def __init__(self, compiled: Compiled, table: str, lake: Lake, shard: Shard | None = None,
                 shared=None):
        """``shard``: hold and add only that shard's users; ``shared`` (a ``shared.SharedSnapshots``):
        map the snapshot from files the server's worker processes share instead of holding a copy."""
        self.compiled, self.table, self.lake = compiled, table, lake
        self.shard, self.shared = shard, shared
        self.feature = compiled.features[table]
        self.fields = compiled.stored_fields(self.feature)
        self.user, self.user_type = compiled.user_field(self.feature), compiled.user_type(self.feature)
        # The columns a request reads: the stored fields, and the ordering and dedup columns and the
        # keys of the feature's serving-time lookups, which a feature need not store (its snapshot is
        # then built from events/, see load_snapshot).
        o = self.feature["ordering"]
        keys = [e["key"] for e in compiled.lookups("serving") if set(e["columns"]) & set(self.feature["fields"])]
        self.columns = list(dict.fromkeys([*self.fields, o["by"], o["tie_break"], *self.feature["dedup_key"], *keys]))
        schema = compiled.sequence_schema(self.feature, self.columns)
        self.widths = list_widths(compiled)  # an all-null embedding slice still has the declared width
        self.snapshot = Snapshot.empty(self.columns, schema, self.widths, self.user)
        src = compiled.source_of(self.feature)
        self.sources = {compiled.event_types[et]["source"] for et in self.feature["event_types"]}
        self.fresh = FreshEvents(self.feature, self.columns, src["event_id_field"], src["time_field"], self.widths,
                                 self.user)
        self.lock = threading.Lock()

    def _read_snapshot(self, day: date) -> Snapshot:
        built = None
        if not set(self.columns) <= set(self.fields):  # the table lacks what a request reads
            built = Engine(self.compiled, self.lake).build_sequences_day(self.table, day, self.columns)
        keep = None if self.shard is None or self.shard.count == 1 else self.shard.mask
        return Snapshot.load(self.lake, self.table, day, self.columns, self.widths, self.user, built, keep)

    def load_snapshot(self, day: date) -> None:
        if self.shared is not None:
            snap = self.shared.snapshot(self.table, day, lambda: self._read_snapshot(day))
        else:
            snap = self._read_snapshot(day)
        with self.lock:
            self.snapshot = snap
            self.fresh.drop_held(snap)

    def add_fresh(self, events: pl.DataFrame) -> int:
        """Add indexed events of any event type; those of other features are ignored."""
        events = events.filter(kernel.in_scope(self.feature))
        if self.shard is not None:
            events = self.shard.keep(events, self.user)
        with self.lock:
            return self.fresh.add(events)

    def fetch(self, user_id: int | str) -> tuple[Events, Events | None]:
        """The user's snapshot slice (newest first) and fresh events (newest first, or None)."""
        with self.lock:
            return self.snapshot.slice(user_id), self.fresh.get(user_id)
