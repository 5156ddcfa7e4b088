"""The stable user hash never drifts: fixed values for int and string ids, vector equal to scalar."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from seq_assets.core.buckets import user_bucket, user_bucket_of, user_hash, user_hash_of

# Pinned forever: a change here moves every user to another bucket and shard.
INT_IDS = [0, 1, 42, -7, 2**63 - 1, -(2**63)]
INT_HASHES = [13971339156589058860, 8950960187928269782, 9298553800152202476, 14653408367998106352,
              17706295798829109260, 7457733974575799346]
STR_IDS = ["", "a", "u1", "héllo", "42"]
STR_HASHES = [17280346270528514342, 9413272369427828315, 7185976944083972785, 13944623458183816781,
              9298553800152202476]


def test_fnv1a_then_fmix64_as_documented():
    # FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the published test vector); the rule mixes it with fmix64
    h = 0xAF63DC4C8601EC8C
    m = (1 << 64) - 1
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & m
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & m
    h ^= h >> 33
    assert user_hash_of("a") == h


def test_fixed_values_int_and_string():
    assert [user_hash_of(v) for v in INT_IDS] == INT_HASHES
    assert [user_hash_of(v) for v in STR_IDS] == STR_HASHES
    assert user_hash(pl.Series(INT_IDS, dtype=pl.Int64)).to_list() == INT_HASHES
    assert user_hash(pl.Series(STR_IDS, dtype=pl.String)).to_list() == STR_HASHES
    assert user_bucket(pl.Series(INT_IDS, dtype=pl.Int64), 16).to_list() == [h % 16 for h in INT_HASHES]
    assert [user_bucket_of(v, 7) for v in STR_IDS] == [h % 7 for h in STR_HASHES]
    # an integer id and its decimal text share a bucket
    assert user_bucket_of(42, 5) == user_bucket_of("42", 5)


def test_vector_equals_scalar_any_int_type_nulls_and_slices():
    rng = np.random.default_rng(1)
    ints = pl.Series("member_id", rng.integers(-(2**62), 2**62, 500), dtype=pl.Int64)
    got = user_bucket(ints, 8)
    assert got.dtype == pl.UInt32 and got.name == "member_id"
    assert got.to_list() == [user_bucket_of(v, 8) for v in ints]
    assert user_bucket(ints.cast(pl.Int32, strict=False).drop_nulls(), 3).to_list() == \
        [user_bucket_of(v, 3) for v in ints.cast(pl.Int32, strict=False).drop_nulls()]
    texts = pl.Series([f"u-{i}" for i in range(300)] + ["x" * 200, "ü"])
    assert user_bucket(texts, 4).to_list() == [user_bucket_of(v, 4) for v in texts]
    sliced = texts.slice(100, 50)
    assert user_bucket(sliced, 4).to_list() == [user_bucket_of(v, 4) for v in sliced]
    assert user_bucket(pl.Series([1, None, 3]), 2).to_list() == [user_bucket_of(1, 2), None, user_bucket_of(3, 2)]
    assert user_bucket(pl.Series([], dtype=pl.String), 2).to_list() == []


def test_spread_and_bad_input():
    counts = user_bucket(pl.Series(np.arange(100_000)), 4).value_counts()["count"].to_list()
    assert min(counts) > 24_000
    with pytest.raises(ValueError, match="buckets"):
        user_bucket_of(1, 0)
    with pytest.raises(TypeError, match="integer or a string"):
        user_bucket_of(1.5, 2)
    with pytest.raises(TypeError, match="Float64"):
        user_bucket(pl.Series([1.5]), 2)
