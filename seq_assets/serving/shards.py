"""Serving shards: ``seqctl serve --shard I/N`` holds and follows only the users whose stable bucket
(:func:`seq_assets.core.buckets.user_bucket`, the same hash as the batch user buckets) is ``I`` of
``N``. A request for another user is answered 421 (Misdirected Request) naming the owner shard, and
its URL when the shard map (``--shard-urls`` / ``SEQ_SERVE_SHARDS``) is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from seq_assets.core.buckets import user_bucket, user_bucket_of


class ShardError(ValueError):
    pass


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``; ``urls[i]`` is where shard ``i`` answers (empty: not known)."""

    index: int
    count: int
    urls: tuple[str, ...] = ()

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise ShardError(f"shard {self.index}/{self.count}: the index must be between 0 and {self.count - 1}")
        if self.urls and len(self.urls) != self.count:
            raise ShardError(f"the shard map names {len(self.urls)} URL(s) for {self.count} shards")

    @classmethod
    def parse(cls, text: str, urls: list[str] | tuple[str, ...] = ()) -> Shard:
        """``"I/N"`` (``"0/2"``), with the shard map ``urls`` (one per shard, in shard order)."""
        try:
            i, n = (int(x) for x in text.strip().split("/"))
        except ValueError:
            raise ShardError(f"--shard must read I/N (such as 0/2), got {text!r}") from None
        if n < 1:
            raise ShardError(f"--shard {text}: N must be at least 1")
        return cls(i, n, tuple(u.rstrip("/") for u in urls))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owner(self, user_id: int | str) -> int:
        return user_bucket_of(user_id, self.count)

    def owns(self, user_id: int | str) -> bool:
        return self.owner(user_id) == self.index

    def url(self, index: int) -> str | None:
        return self.urls[index] if self.urls else None

    def mask(self, users: pl.Series) -> pl.Series:
        """True for the rows of ``users`` this shard owns."""
        return user_bucket(users, self.count) == self.index

    def keep(self, df: pl.DataFrame, user: str) -> pl.DataFrame:
        """The rows of ``df`` whose ``user`` this shard owns."""
        if self.count == 1 or df.is_empty():
            return df
        return df.filter(self.mask(df.get_column(user)))
