"""Stage 5, featurize: a list of named events (``json``) or fixed-length arrays with a mask (``arrays``)."""

from __future__ import annotations

import numpy as np

from seq_assets.serving.columns import Events


def _value(col: np.ndarray, valid: np.ndarray | None, i: int):
    if valid is not None and not valid[i]:
        return None
    v = col[i]
    return v if isinstance(v, (str, np.ndarray)) else v.item()


def to_json(events: Events, fields: list[str]) -> list[dict]:
    cols = [(f, events.cols[f], events.valid.get(f)) for f in fields]
    return [{f: _value(c, v, i) for f, c, v in cols} for i in range(len(events))]


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
