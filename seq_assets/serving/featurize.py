"""Stage 5, featurize: a list of named events (``json``) or fixed-length arrays with a mask (``arrays``)."""

from __future__ import annotations

import numpy as np

from seq_assets.serving.columns import Events


def _column_values(col: np.ndarray, valid: np.ndarray | None) -> list:
    """A column as Python values in one vectorized step; embeddings stay numpy rows (orjson
    writes them as float32, exactly as stored), missing values become None."""
    if col.ndim == 2:
        values = list(col)
    else:
        values = col.tolist()
    if valid is not None and not valid.all():
        for i in np.flatnonzero(~valid).tolist():
            values[i] = None
    return values


def to_json(events: Events, fields: list[str]) -> list[dict]:
    columns = [_column_values(events.cols[f], events.valid.get(f)) for f in fields]
    return [dict(zip(fields, row)) for row in zip(*columns)]


def to_arrays(events: Events, fields: list[str], n: int) -> dict:
    """Each field padded to ``n`` (zeros, or "" for text), plus ``mask`` (1 for a real event)."""
    k = len(events)
    out: dict = {"length": k, "mask": np.concatenate([np.ones(k, np.int8), np.zeros(n - k, np.int8)])}
    for f in fields:
        col = events.cols[f]
        valid = events.valid.get(f)
        if col.dtype == object:
            padded = np.empty(n, dtype=object)
            padded[:k] = col
            padded[k:] = ""
            if valid is not None:
                padded[:k][~valid] = ""
            out[f] = padded.tolist()
            continue
        shape = (n,) + col.shape[1:]
        padded = np.zeros(shape, dtype=col.dtype)
        padded[:k] = col
        if valid is not None:
            padded[:k][~valid] = 0
        out[f] = padded
    return out
