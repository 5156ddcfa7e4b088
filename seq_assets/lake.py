"""The lake: Delta tables under one root, each partitioned by an event-time ``date`` column.

Tables: ``raw/<source>``, ``enrichments/<name>``, ``events/<event_type>``,
``sequences/<feature>_v<version>``, ``dead_letter/<source>``. Every write is idempotent:
a partition write replaces exactly that partition; an insert adds only unseen keys.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import date
from typing import Iterable

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from seq_assets import config

KINDS = ("raw", "enrichments", "events", "sequences", "dead_letter", "metrics", "analysis")
_RETRIES = 8


@dataclass
class WriteInfo:
    rows: int
    version: int | None
    inserted: int | None = None


def _arrow(df: pl.DataFrame) -> pa.Table:
    # delta-rs cannot write string views or categoricals: hand it plain large strings.
    cast = {c: pl.String for c, t in df.schema.items() if t == pl.Categorical or isinstance(t, pl.Enum)}
    return (df.cast(cast) if cast else df).to_arrow(compat_level=pl.CompatLevel.oldest())


def _date_list(days: Iterable[date]) -> str:
    return ", ".join(f"'{d.isoformat()}'" for d in sorted(set(days)))


def with_retries(fn, *, what: str):
    """Retry Delta's optimistic-concurrency conflicts with jittered backoff; the write is idempotent."""
    for attempt in range(_RETRIES):
        try:
            return fn()
        except CommitFailedError:
            if attempt == _RETRIES - 1:
                raise
            time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError(what)


class Lake:
    def __init__(self, root: str | None = None, storage_options: dict | None = None):
        self.root = (root or config.lake_uri()).rstrip("/")
        self.storage_options = storage_options

    def uri(self, kind: str, name: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown table kind {kind!r}")
        return f"{self.root}/{kind}/{name}"

    def table(self, kind: str, name: str) -> DeltaTable | None:
        try:
            return DeltaTable(self.uri(kind, name), storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def exists(self, kind: str, name: str) -> bool:
        return self.table(kind, name) is not None

    # ---- writes ---------------------------------------------------------------------------

    def replace_partitions(self, kind: str, name: str, df: pl.DataFrame, days: Iterable[date],
                           extra_predicate: str | None = None) -> WriteInfo:
        """Replace exactly the given days with ``df`` (whose rows must lie in those days).

        ``extra_predicate`` narrows what is replaced inside those days, e.g. only batch deliveries.
        """
        days = sorted(set(days))
        uri = self.uri(kind, name)
        data = _arrow(df)
        predicate = f"date IN ({_date_list(days)})" + (f" AND {extra_predicate}" if extra_predicate else "")

        def write():
            write_deltalake(
                uri, data, mode="overwrite", partition_by=["date"], predicate=predicate,
                storage_options=self.storage_options, schema_mode="merge" if self.exists(kind, name) else None,
            )

        with_retries(write, what=f"replace {kind}/{name}")
        return WriteInfo(rows=df.height, version=self.table(kind, name).version())

    def append(self, kind: str, name: str, df: pl.DataFrame) -> WriteInfo:
        if df.is_empty():
            t = self.table(kind, name)
            return WriteInfo(rows=0, version=t.version() if t else None)
        uri, data = self.uri(kind, name), _arrow(df)
        with_retries(lambda: write_deltalake(uri, data, mode="append", partition_by=["date"],
                                             storage_options=self.storage_options), what=f"append {kind}/{name}")
        return WriteInfo(rows=df.height, version=self.table(kind, name).version())

    def insert_unseen(self, kind: str, name: str, df: pl.DataFrame, key: str = "event_id") -> WriteInfo:
        """Insert rows whose ``key`` is not in the table yet: a re-delivered batch changes nothing.

        The merge is pruned to the days the batch touches, and inserts only, so it adds files
        without rewriting the ones already there.
        """
        df = df.unique(subset=[key], keep="first", maintain_order=True)
        if df.is_empty():
            t = self.table(kind, name)
            return WriteInfo(rows=0, version=t.version() if t else None, inserted=0)
        if not self.exists(kind, name):
            try:
                info = self.append(kind, name, df)
                return WriteInfo(rows=df.height, version=info.version, inserted=df.height)
            except Exception:  # noqa: BLE001 - lost a race to create the table: merge below
                pass
        days = df.get_column("date").unique().to_list()
        data = _arrow(df)

        def merge():
            dt = self.table(kind, name)
            return dt.merge(
                data,
                predicate=f"t.{key} = s.{key} AND t.date IN ({_date_list(days)})",
                source_alias="s", target_alias="t", merge_schema=True,
            ).when_not_matched_insert_all().execute()

        metrics = with_retries(merge, what=f"merge into {kind}/{name}")
        return WriteInfo(rows=df.height, version=self.table(kind, name).version(),
                         inserted=int(metrics.get("num_target_rows_inserted", 0)))

    # ---- reads ----------------------------------------------------------------------------

    def scan(self, kind: str, name: str, days: Iterable[date] | None = None,
             start: date | None = None, end: date | None = None,
             columns: list[str] | None = None) -> pl.LazyFrame | None:
        """A lazy scan with partition pruning (``days`` or [start, end]) and column projection."""
        t = self.table(kind, name)
        if t is None:
            return None
        lf = pl.scan_delta(t)
        if days is not None:
            lf = lf.filter(pl.col("date").is_in(sorted(set(days))))
        if start is not None:
            lf = lf.filter(pl.col("date") >= start)
        if end is not None:
            lf = lf.filter(pl.col("date") <= end)
        if columns is not None:
            lf = lf.select(columns)
        return lf

    def read(self, kind: str, name: str, **kw) -> pl.DataFrame | None:
        lf = self.scan(kind, name, **kw)
        return None if lf is None else lf.collect()

    def stats(self, kind: str, name: str, day: date | None = None) -> dict:
        """Version, file count and bytes of a table (or of one day of it) for asset metadata."""
        t = self.table(kind, name)
        if t is None:
            return {"version": None, "files": 0, "bytes": 0}
        adds = pl.from_arrow(pa.table(t.get_add_actions(flatten=True)))
        if day is not None and "partition.date" in adds.columns:
            adds = adds.filter(pl.col("partition.date").cast(pl.String) == day.isoformat())
        return {"version": t.version(), "files": adds.height, "bytes": int(adds.get_column("size_bytes").sum() or 0)}
