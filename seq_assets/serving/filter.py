"""Stage 2, filter: merge fresh events into the snapshot slice, then the feature's event types,
window, order and dedup, all by the rules of :mod:`seq_assets.core.kernel` (its numpy form)."""

from __future__ import annotations

from seq_assets.core import kernel
from seq_assets.serving.columns import Events


def apply(snapshot: Events, fresh: Events | None, feature: dict, start_ms: int, end_ms: int | None) -> Events:
    """The user's events that count in ``start_ms <= by < end_ms`` (no upper bound if None), in
    sequence order, deduplicated; the first N are taken by the size stage."""
    if fresh is None or not len(fresh):
        # A snapshot slice is a built sequence, already in order: its window is a contiguous run.
        part = kernel.window_slice(feature, snapshot.cols, start_ms, end_ms)
        return snapshot if part.start == 0 and part.stop == len(snapshot) else snapshot.take(part)
    events = Events.concat([fresh, snapshot])
    return events.take(kernel.sequence_rows(feature, events.cols, start_ms, end_ms))


def window_start(feature: dict, now_ms: int, since_ms: int | None) -> int:
    """Where a request's window starts: the feature's window back from ``now_ms``, or ``since_ms``
    when that is later."""
    start, _ = kernel.window_bounds(feature, now_ms)
    return start if since_ms is None else max(start, since_ms)
