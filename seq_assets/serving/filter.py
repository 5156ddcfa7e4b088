"""Stage 2, filter: merge fresh events into the snapshot slice, dedup, window and event types.

The ordering is the one the batch path uses (``seq_assets.sequences.order_events``): event time
newest first, ties broken by the tie-break field ascending, duplicates keep the newest copy.
"""

from __future__ import annotations

import numpy as np

from seq_assets.core.days import DAY_MS
from seq_assets.serving.columns import Events


def order_and_dedup(events: Events, feature: dict) -> Events:
    o = feature["ordering"]
    ts, tie = events.cols[o["by"]], events.cols[o["tie_break"]]
    # lexsort: last key is primary. Newest first, then tie-break ascending.
    order = np.lexsort((tie, -ts if o["descending"] else ts))
    events = events.take(order)
    keys = feature["dedup_key"]
    if len(keys) == 1:
        _, first = np.unique(events.cols[keys[0]], return_index=True)
    else:
        stacked = np.rec.fromarrays([events.cols[k] for k in keys])
        _, first = np.unique(stacked, return_index=True)
    if len(first) == len(events):
        return events
    return events.take(np.sort(first))


def apply(snapshot: Events, fresh: Events | None, feature: dict, start_ms: int, end_ms: int | None) -> Events:
    """Events of the feature's types with ``start_ms <= ts < end_ms`` (no upper bound if None)."""
    events = snapshot if fresh is None or not len(fresh) else order_and_dedup(Events.concat([fresh, snapshot]), feature)
    ts = events.cols["ts"]
    # Rows are newest first, so the window is a contiguous run: two binary searches on -ts.
    neg = -ts
    lo = 0 if end_ms is None else int(np.searchsorted(neg, -end_ms, side="right"))
    hi = int(np.searchsorted(neg, -start_ms, side="right"))
    if lo != 0 or hi != len(events):
        events = events.take(slice(lo, hi))
    if fresh is not None:
        keep = np.isin(events.cols["event_type"], feature["event_types"])
        if not keep.all():
            events = events.take(keep)
    return events


def window_start(feature: dict, now_ms: int, since_ms: int | None) -> int:
    start = now_ms - feature["window_days"] * DAY_MS
    return start if since_ms is None else max(start, since_ms)
