"""The fresh store converts each poll's touched users in one pass and cuts it per user: every user's
events must equal a conversion of that user's rows alone, over many adds, with copies, nulls,
strings and embeddings, and whatever the definitions' names are."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest

from seq_assets.core import kernel
from seq_assets.serving.columns import frame_to_events
from seq_assets.serving.fetch import FreshEvents

FEATURES = {
    # the demo's shape: int users, newest first, ties by event id
    "demo": ({"ordering": {"by": "ts", "descending": True, "tie_break": "event_id"}}, "user_id", "event_id", "ts",
             pl.Int64),
    # another shape: string users, oldest first, its own names
    "own": ({"ordering": {"by": "happened_at", "descending": False, "tie_break": "rid"}}, "uid", "rid",
            "happened_at", pl.String),
}


def batches(user: str, eid: str, time: str, user_type, seed: int, n: int = 12,
            in_order: bool = False) -> list[pl.DataFrame]:
    """Micro-batches of events; ``in_order``: each batch later than the one before, with a few late
    events and ties at the batch edges (most polls then join a user's arrays at one end)."""
    rng = random.Random(seed)
    out, sent = [], []
    for b in range(n):
        rows = []
        for i in range(rng.randint(0, 40)):
            if sent and rng.random() < 0.1:  # a copy of an event sent before
                rows.append(dict(rng.choice(sent)))
                continue
            u = rng.randint(0, 15)
            row = {user: u if user_type == pl.Int64 else f"u{u}", eid: f"e{b}-{i}",
                   time: (1_000 + 50 * b + rng.randint(0, 50) - (200 if rng.random() < 0.05 else 0)
                          if in_order else 1_000 + rng.randint(0, 50)),  # ties in time
                   "kind": rng.choice(["a", "b", None]), "count": rng.choice([1, 2, None]),
                   "emb": None if rng.random() < 0.3 else [rng.random() for _ in range(4)]}
            rows.append(row)
            sent.append(row)
        out.append(pl.DataFrame(rows, schema={user: user_type, eid: pl.String, time: pl.Int64, "kind": pl.String,
                                              "count": pl.Int64, "emb": pl.List(pl.Float32)}))
    return out


def same(a, b) -> None:
    assert a.cols.keys() == b.cols.keys()
    for k in a.cols:
        va, vb = a.valid.get(k), b.valid.get(k)
        mask = np.ones(len(a), bool) if va is None else va
        assert np.array_equal(mask, np.ones(len(b), bool) if vb is None else vb), k
        if a.cols[k].dtype == object:
            assert list(a.cols[k][mask]) == list(b.cols[k][mask]), k
        else:
            assert np.array_equal(a.cols[k][mask], b.cols[k][mask]), k


@pytest.mark.parametrize("in_order", [False, True], ids=["late", "in-order"])
@pytest.mark.parametrize("shape", sorted(FEATURES))
def test_every_users_fresh_events_equal_a_conversion_of_their_rows_alone(shape, in_order):
    feature, user, eid, time, user_type = FEATURES[shape]
    fields = [eid, time, "kind", "count", "emb"]
    fresh = FreshEvents(feature, fields, eid, time, widths={"emb": 4}, user=user)
    seen = []
    for df in batches(user, eid, time, user_type, seed=len(shape), n=30 if in_order else 12, in_order=in_order):
        fresh.add(df)
        seen.append(df)
        everything = pl.concat(seen).unique(subset=[eid, time], keep="first", maintain_order=True)
        keys, desc = kernel.order_keys(feature, user)
        for (uid,), rows in everything.sort(keys, descending=desc).group_by(user, maintain_order=True):
            same(fresh.get(uid), frame_to_events(rows, fields, {"emb": 4}))
        assert set(fresh.by_user) == set(everything.get_column(user).to_list())
