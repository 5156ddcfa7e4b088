"""quality.sequence_invariants counts what a window per user counts, on a seeded mix of good and
broken sequences (ties, nulls, duplicated keys, a null user, the same user on two rows), for the
demo's newest-first feature and an oldest-first one with string users."""

from __future__ import annotations

import random
from datetime import date

import polars as pl
import pytest

from seq_assets.core import quality
from seq_assets.core.days import DAY_MS, end_of_day_ms
from seq_assets.core.kernel import window_bounds

DAY = date(2026, 3, 7)


def reference(feature: dict, seqs: pl.DataFrame, day: date, user: str) -> dict:
    """The counts as windows over the users and over the rows give them (the definition)."""
    o = feature["ordering"]
    start, end = window_bounds(feature, end_of_day_ms(day))
    newer = (lambda a, b: a > b) if o["descending"] else (lambda a, b: a < b)
    flat = seqs.select(user, pl.col(o["by"]).alias("_0"), pl.col(o["tie_break"]).alias("_1")).explode(
        ["_0", "_1"]).drop_nulls("_0").with_row_index("_i")
    t, prev_t = pl.col("_0"), pl.col("_0").shift(1).over(user, order_by="_i")
    bad = newer(t, prev_t) | ((t == prev_t) & (pl.col("_1") <= pl.col("_1").shift(1).over(user, order_by="_i")))
    keys = list(feature["dedup_key"])
    pairs = seqs.select(user, *keys).with_row_index("_row").explode(keys)
    return {"users": seqs.height, "out_of_order": flat.filter(bad).height,
            "too_long": seqs.filter(pl.col(o["by"]).list.len() > feature["max_length"]).height,
            "outside_window": flat.filter((t < start) | (t >= end)).height,
            "duplicated": pairs.filter(pl.struct(keys).is_duplicated().over("_row")).get_column("_row").n_unique()}


def sequences(rng: random.Random, users: list, descending: bool) -> pl.DataFrame:
    end = end_of_day_ms(DAY)
    rows = []
    for u in users:
        n = rng.choice([0, 1, 2, 5, 9])
        ts = sorted((end - rng.randrange(0, 4 * DAY_MS) for _ in range(n)), reverse=descending)
        if n > 2 and rng.random() < 0.2:
            ts[1] = ts[0]  # a tie
        if n > 2 and rng.random() < 0.1:
            ts[2] = None
        ids = [f"e{rng.randrange(0, 30)}" for _ in range(n)]
        if n > 1 and rng.random() < 0.2:
            ts.reverse()  # out of order
        rows.append({"u": u, "ts": ts, "eid": ids})
    return pl.DataFrame(rows, schema={"u": pl.String if isinstance(users[0], str) else pl.Int64,
                                      "ts": pl.List(pl.Int64), "eid": pl.List(pl.String)})


@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_counts_equal_the_window_per_user(seed, descending):
    rng = random.Random(seed)
    feature = {"ordering": {"by": "ts", "descending": descending, "tie_break": "eid"}, "dedup_key": ["eid"],
               "window_days": 2, "max_length": 6}
    users = [f"m{i}" for i in range(200)] if descending else list(range(200))
    seqs = sequences(rng, users, descending)
    unique_users = seqs.with_columns(pl.when(pl.col("u") == users[3]).then(None).otherwise(pl.col("u")).alias("u"))
    twice = pl.concat([seqs, seqs.sample(20, seed=seed)])  # a user on two rows takes the window path
    for frame in (seqs, unique_users, twice):
        got = quality.sequence_invariants(feature, frame, DAY, "u").metadata
        assert got == reference(feature, frame, DAY, "u")
    assert reference(feature, seqs, DAY, "u")["out_of_order"] > 0  # the mix holds broken sequences
