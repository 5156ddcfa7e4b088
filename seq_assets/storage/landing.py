"""The landing area: where batch sources and enrichment snapshots arrive as files.

Layout under the landing root (``SEQ_LANDING_DIR``): a source's records in
``<batch_location>/arrival_date=YYYY-MM-DD/*.jsonl``, a lookup enrichment's snapshots in
``<snapshot_location>/date=YYYY-MM-DD/*.parquet``. This module lists and reads those files; what
the records mean is the engine's business.
"""

from __future__ import annotations

import glob
import os
from datetime import date

import polars as pl


class Landing:
    def __init__(self, root: str, storage_options: dict | None = None):
        if not root:
            raise ValueError("a landing area needs a root (SEQ_LANDING_DIR)")
        self.root = str(root).rstrip("/")
        self.storage_options = storage_options or None

    def _dir(self, location: str, part: str) -> str:
        return os.path.join(self.root, location, part)

    def batch_files(self, location: str, arrival_day: date, pattern: str = "*.jsonl") -> list[str]:
        """The files that arrived on ``arrival_day`` at a source's batch location, in name order."""
        return sorted(glob.glob(os.path.join(self._dir(location, f"arrival_date={arrival_day.isoformat()}"), pattern)))

    def snapshot_days(self, location: str) -> list[date]:
        """The days an enrichment has a snapshot (a ``date=`` folder holding Parquet files) for, in order."""
        base = os.path.join(self.root, location)
        return sorted(
            date.fromisoformat(os.path.basename(p).split("=", 1)[1])
            for p in glob.glob(os.path.join(base, "date=*")) if glob.glob(os.path.join(p, "*.parquet"))
        )

    def read_snapshot(self, location: str, day: date) -> pl.DataFrame:
        return pl.read_parquet(os.path.join(self._dir(location, f"date={day.isoformat()}"), "*.parquet"))
