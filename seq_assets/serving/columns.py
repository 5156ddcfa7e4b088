"""The in-memory form a request's events take between stages: named numpy columns, newest first."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass
class Events:
    """Parallel numpy columns; ``valid[c]`` marks non-null rows of columns that can be null."""

    cols: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    def take(self, idx: np.ndarray | slice) -> "Events":
        return Events({k: v[idx] for k, v in self.cols.items()}, {k: v[idx] for k, v in self.valid.items()})

    @staticmethod
    def concat(parts: list["Events"]) -> "Events":
        parts = [p for p in parts if len(p)]
        if len(parts) == 1:
            return parts[0]
        keys = parts[0].cols.keys()
        cols = {k: np.concatenate([p.cols[k] for p in parts]) for k in keys}
        vkeys = set().union(*(p.valid.keys() for p in parts))
        valid = {k: np.concatenate([p.valid.get(k, np.ones(len(p), bool)) for p in parts]) for k in vkeys}
        return Events(cols, valid)


def column_to_numpy(s: pl.Series, width: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A polars column as numpy plus a validity mask (None when it has no nulls).

    Strings become object arrays whose entries share one Python object per distinct value, and
    embedding lists become a 2-D float array, so a million events cost megabytes, not gigabytes.
    ``width`` is the declared length of a fixed-size list column: without it the width is read off
    the data, which says 0 when every value is null.
    """
    valid = s.is_not_null().to_numpy() if s.null_count() else None
    dtype = s.dtype
    if dtype == pl.String:
        distinct = s.drop_nulls().unique()
        if 2 * len(distinct) > len(s):  # mostly distinct (ids): nothing to share, and sorting them costs
            return s.to_numpy().astype(object, copy=False), valid
        distinct = distinct.sort()
        codes = s.cast(pl.Enum(distinct)).to_physical().fill_null(len(distinct)).to_numpy().astype(np.int64)
        vocab = np.array(distinct.to_list() + [None], dtype=object)
        return vocab[codes], valid
    if isinstance(dtype, pl.List):
        width = width if width is not None else int(s.list.len().max() or 0)
        filled = s.fill_null(pl.lit([0.0] * width, dtype=dtype)) if valid is not None else s
        arr = filled.list.to_array(width).to_numpy() if width else np.zeros((len(s), 0), dtype=np.float32)
        return np.ascontiguousarray(arr), valid
    if dtype in (pl.Int64, pl.Int32, pl.UInt32, pl.UInt64):
        return s.fill_null(0).to_numpy(), valid
    if dtype in (pl.Float32, pl.Float64):
        return s.fill_null(float("nan")).to_numpy(), valid
    return s.to_numpy(), valid


def list_widths(compiled) -> dict[str, int]:
    """Declared lengths of the fixed-size list columns of enrichments (``list<float32>[32]`` -> 32)."""
    out = {}
    for e in compiled.enrichments.values():
        for c, t in (e.get("columns") or {}).items():
            m = re.fullmatch(r"list<\w+>\[(\d+)\]", str(t))
            if m:
                out[c] = int(m.group(1))
    return out


def frame_to_events(df: pl.DataFrame, fields: list[str], widths: dict[str, int] | None = None) -> Events:
    cols, valid = {}, {}
    for f in fields:
        arr, v = column_to_numpy(df.get_column(f), (widths or {}).get(f))
        cols[f] = arr
        if v is not None:
            valid[f] = v
    return Events(cols, valid)
