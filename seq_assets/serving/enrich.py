"""Stage 3, enrich: serving-time enrichments, joined when the sequence is served.

A serving enricher is registered per enrichment *kind*; the compiled definitions say which
enrichments run at serving time. A lookup enricher holds the newest snapshot of its table as a
sorted key array, so a join is one vectorized binary search.
"""

from __future__ import annotations

import threading
from datetime import date

import numpy as np
import polars as pl

from seq_assets.serving.columns import Events, column_to_numpy
from seq_assets.storage.lake import Lake


class LookupEnricher:
    def __init__(self, enrichment: dict, lake: Lake):
        self.enrichment, self.lake = enrichment, lake
        self.day: date | None = None
        self.keys = np.zeros(0, dtype=np.int64)
        self.values: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        self.lock = threading.Lock()

    def refresh(self, today: date) -> None:
        """Load the newest snapshot on or before today, if it changed."""
        lf = self.lake.scan("enrichments", self.enrichment["name"], end=today)
        if lf is None:
            return
        latest = lf.select(pl.col("date").max()).collect().item()
        if latest is None or latest == self.day:
            return
        cols = list(self.enrichment["columns"])
        snap = self.lake.read("enrichments", self.enrichment["name"], days=[latest],
                              columns=[self.enrichment["key"], *cols]).sort(self.enrichment["key"])
        values = {c: column_to_numpy(snap.get_column(c)) for c in cols}
        with self.lock:
            self.keys, self.values, self.day = snap.get_column(self.enrichment["key"]).to_numpy(), values, latest

    def apply(self, events: Events, wanted: list[str]) -> Events:
        cols = [c for c in self.enrichment["columns"] if c in wanted]
        if not cols:
            return events
        with self.lock:
            keys, values = self.keys, self.values
        probe = events.cols[self.enrichment["key"]]
        idx = np.searchsorted(keys, probe)
        idx_c = np.minimum(idx, max(len(keys) - 1, 0))
        found = (idx < len(keys)) & (keys[idx_c] == probe) if len(keys) else np.zeros(len(probe), bool)
        out = Events(dict(events.cols), dict(events.valid))
        for c in cols:
            arr, valid = values.get(c, (np.zeros(0), None))
            if len(arr):
                out.cols[c] = arr[idx_c]
                out.valid[c] = found & (valid[idx_c] if valid is not None else True)
            else:
                out.cols[c] = np.zeros(len(probe))
                out.valid[c] = np.zeros(len(probe), bool)
        return out


SERVING_ENRICHERS = {"lookup": LookupEnricher}


def build(compiled, lake: Lake) -> dict[str, LookupEnricher]:
    """One enricher per serving-time enrichment the compiled definitions declare."""
    out = {}
    for name, e in compiled.enrichments.items():
        if e["stage"] == "serving":
            out[name] = SERVING_ENRICHERS[e["kind"]](e, lake)
    return out


def apply(events: Events, enrichers: dict, fields: list[str]) -> Events:
    for enricher in enrichers.values():
        events = enricher.apply(events, fields)
    return events
