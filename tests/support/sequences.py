"""What readers see in ``sequences/``: a day's sequences resolved over the table's layout (a full
snapshot and the changes since, see ``seq_assets.core.snapshots``), without the row kinds."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl

from seq_assets.analysis.compare import day_sequences
from seq_assets.core import snapshots
from seq_assets.storage.lake import Lake


def _lake(lake) -> Lake:
    return lake if isinstance(lake, Lake) else Lake(str(lake))


def _user(lf: pl.LazyFrame) -> str:
    schema = lf.collect_schema()
    (user,) = [c for c, t in schema.items() if c not in ("date", snapshots.ROW_KIND) and not isinstance(t, pl.List)]
    return user


def sequences_day(lake: Lake | str | Path, table: str, day: date) -> pl.DataFrame:
    """The table's sequences as of ``day``, one row per user, sorted by user."""
    lf = _lake(lake).scan("sequences", table)
    return day_sequences(lf, day, _user(lf))


def sequences_table(lake: Lake | str | Path, table: str) -> pl.DataFrame | None:
    """Every built day's sequences, one row per user and day (None: no table)."""
    lf = _lake(lake).scan("sequences", table)
    if lf is None:
        return None
    days = sorted(snapshots.partition_kinds(lf))
    user = _user(lf)
    return pl.concat([day_sequences(lf, d, user) for d in days]) if days else \
        lf.head(0).drop(snapshots.ROW_KIND, strict=False).collect()
