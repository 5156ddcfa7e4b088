"""Stage 4, size: keep the newest ``n`` events."""

from __future__ import annotations

from seq_assets.serving.columns import Events


def apply(events: Events, n: int) -> Events:
    return events if len(events) <= n else events.take(slice(0, n))
