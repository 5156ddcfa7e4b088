"""The lake: Delta tables under one root, each partitioned by an event-time ``date`` column.

Tables: ``raw/<source>``, ``enrichments/<name>``, ``events/<event_type>``,
``sequences/<feature>_v<version>``, ``dead_letter/<source>``. Every write is idempotent:
a partition write replaces exactly that partition; an insert adds only unseen keys.
"""

from __future__ import annotations

import io
import json
import os
import random
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Iterable

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import CommitProperties

from seq_assets.storage import objects

# Commit metadata of a partition replace: its id (so it finds its own commit), the days it
# replaced and the version it was built on; and, on the commit that drops the files another writer
# committed under it, the id it drops them for. Maintenance reads them (``storage.maintenance``).
WRITE_ID = "seqplat.write_id"
WRITE_DAYS = "seqplat.days"
READ_VERSION = "seqplat.read_version"
DROPS_FOR = "seqplat.drops_for"
KINDS = ("raw", "enrichments", "events", "sequences", "dead_letter", "metrics", "analysis")
_RETRIES = 8
# Remote stores the fast partition writer and the listings reach through pyarrow (storage.objects).
_FILE_SCHEMES = ("s3", "s3a")


@dataclass
class WriteInfo:
    rows: int
    version: int | None
    inserted: int | None = None
    bytes_written: int | None = None  # the sizes of the files a partition replace added (when it knows them)


@dataclass
class Compaction:
    """A compaction commit: the files it wrote hold exactly the rows of the files it replaced."""

    version: int
    read_version: int  # the version it was planned on
    wrote: set[str]
    replaced: pl.DataFrame  # their add actions (see add_actions), as the version before it listed them


def _arrow(df: pl.DataFrame) -> pa.Table:
    # delta-rs cannot write string views or categoricals: hand it plain large strings.
    cast = {c: pl.String for c, t in df.schema.items() if t == pl.Categorical or isinstance(t, pl.Enum)}
    return (df.cast(cast) if cast else df).to_arrow(compat_level=pl.CompatLevel.oldest())


def _stat_value(v, upper: bool):
    """A statistic as Delta writes it: dates ISO, timestamps to the millisecond (rounded outward)."""
    if isinstance(v, datetime):
        if v.tzinfo is not None:
            v = v.astimezone(timezone.utc).replace(tzinfo=None)
        if upper and v.microsecond % 1000:
            v = v + timedelta(microseconds=1000 - v.microsecond % 1000)
        return v.strftime("%Y-%m-%dT%H:%M:%S.") + f"{v.microsecond // 1000:03d}Z"
    if isinstance(v, date):
        return v.isoformat()
    return v


def _file_stats(df: pl.DataFrame) -> str:
    """Delta file statistics for every flat column: row count, null count, min and max.

    Readers build their file filters from these (pyarrow datasets from deltalake turn a missing
    min/max into a filter that matches nothing), so every flat column gets them, as delta-rs'
    writer does; nested columns get none. NaN is left out of float min/max.
    """
    flat = [c for c, t in df.schema.items() if not t.is_nested()]
    stats: dict = {"numRecords": df.height, "minValues": {}, "maxValues": {}, "nullCount": {}}
    if not flat or not df.height:
        return json.dumps(stats)

    def values(c):
        col = pl.col(c)
        return col.filter(~col.is_nan()) if df.schema[c].is_float() else col

    row = df.select(*[values(c).min().alias(f"min:{c}") for c in flat],
                    *[values(c).max().alias(f"max:{c}") for c in flat],
                    *[pl.col(c).null_count().alias(f"nul:{c}") for c in flat]).row(0, named=True)
    for c in flat:
        stats["nullCount"][c] = int(row[f"nul:{c}"])
        if row[f"min:{c}"] is not None:
            stats["minValues"][c] = _stat_value(row[f"min:{c}"], upper=False)
            stats["maxValues"][c] = _stat_value(row[f"max:{c}"], upper=True)
    return json.dumps(stats)


def _rows(adds: list) -> int:
    return sum(json.loads(a.stats)["numRecords"] for a in adds)


def add_actions(table: DeltaTable) -> pl.DataFrame:
    """The live data files of a table version, one row each (``path``, ``size_bytes``,
    ``modification_time``, ``partition.date``, statistics), as delta-rs lists them."""
    return pl.from_arrow(pa.table(table.get_add_actions(flatten=True)))


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


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p)


def local_path(uri: str) -> str | None:
    """The path of a local URI (a plain path or ``file://...``); None for any other scheme."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return None if "://" in uri else uri


class Lake:
    """The Delta tables under one root URI (a folder, ``file://``, ``s3://``...), with the storage
    options deltalake and polars need to reach it. Settings resolve both once (``seq_assets.settings``)."""

    def __init__(self, root: str, storage_options: dict | None = None):
        if not root:
            raise ValueError("a lake needs a root URI (SEQ_LAKE_URI)")
        self.root = str(root).rstrip("/")
        self.storage_options = storage_options or None

    @property
    def local_root(self) -> str | None:
        """The lake's folder when it is on the local file system, else None."""
        return local_path(self.root)

    @property
    def _files_writable(self) -> bool:
        """Whether the fast partition writer reaches the lake: a local folder or an S3-compatible
        store (``s3://``, ``s3a://``), which pyarrow's S3 client writes to (``storage.objects``).
        Other stores (``gs://``, ``az://``, ...) write through delta-rs."""
        return self.local_root is not None or self.root.split("://", 1)[0] in _FILE_SCHEMES

    def filesystem(self, kind: str | None = None, name: str | None = None) -> tuple[pafs.FileSystem, str]:
        """A pyarrow file system over the lake (or over one table's folder) and the path in it, for
        what is not Delta's business: listing tables and files, the SQL views' datasets. Local
        folders and ``s3://`` use pyarrow's own clients (``storage.objects``); other stores
        deltalake's, rooted at the URI (the path is then ``""``)."""
        uri = self.root if kind is None else self.uri(kind, name)
        try:
            return objects.filesystem(uri, self.storage_options)
        except ValueError:  # a store pyarrow's clients are not configured for here (gs://, az://)
            from deltalake.fs import DeltaStorageHandler

            return pafs.PyFileSystem(DeltaStorageHandler(uri, self.storage_options)), ""

    def table_names(self, kind: str) -> list[str]:
        """The names of the Delta tables of one kind (the folders under ``<root>/<kind>`` holding a
        ``_delta_log``), in order."""
        fs, base = self.filesystem()
        infos = fs.get_file_info(pafs.FileSelector(_join(base, kind), allow_not_found=True))
        names = [i.base_name for i in infos if i.type == pafs.FileType.Directory]
        logs = fs.get_file_info([_join(base, kind, n, "_delta_log") for n in names])
        return sorted(n for n, i in zip(names, logs) if i.type == pafs.FileType.Directory)

    def stored_files(self, kind: str, name: str) -> dict[str, int]:
        """Every object under a table's folder (data files, log, checkpoints; live or not) as its
        path relative to the table and its size in bytes."""
        fs, base = self.filesystem(kind, name)
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        cut = len(base.rstrip("/")) + 1 if base else 0
        return {i.path[cut:]: int(i.size) for i in infos if i.type == pafs.FileType.File}

    def _replace_by_files(self, kind: str, name: str, df: pl.DataFrame, days: list[date]) -> WriteInfo | None:
        """Replace whole partitions by writing the Parquet files with polars and committing them.

        delta-rs' writer spends most of a nested-column write (sequences: lists of lists of floats)
        encoding levels; polars writes the same files about 3x faster (zstd level 1, also smaller).
        The commit is one Delta transaction: remove every file of ``days``, add the new ones, with
        row counts and min/max statistics in the log for data skipping. Returns None when the
        frame's schema is not the table's (schema evolution), for the delta-rs writer to handle.
        """
        from deltalake import Schema

        uri = self.uri(kind, name)
        table = self.table(kind, name)
        schema = Schema.from_arrow(_arrow(df.head(0)).schema)
        if table is not None and table.schema().to_json() != schema.to_json():
            return None
        adds = self._write_files(uri, df)
        return self._commit_files(kind, name, schema, adds, days)

    def _write_files(self, uri: str, df: pl.DataFrame) -> list:
        """Write ``df``'s rows as one Parquet file per day under the table at ``uri`` (not committed);
        their add actions, with statistics."""
        from deltalake.transaction import AddAction

        adds = []
        dates = df.get_column("date").unique()
        if dates.len() == 1:  # one day (the usual write): no split, which would copy every column
            parts = {(dates[0],): df.drop("date")}
        else:
            parts = df.partition_by("date", as_dict=True, include_key=False, maintain_order=True)
        for (day,), part in parts.items():
            rel = f"date={day.isoformat()}/part-{uuid.uuid4().hex}-c000.zstd.parquet"
            if local_path(uri) is None:  # object storage: the file goes up whole, its size known
                buf = io.BytesIO()
                part.write_parquet(buf, compression="zstd", compression_level=1)
                size = objects.put_bytes(f"{uri}/{rel}", buf.getvalue(), self.storage_options)
            else:
                path = os.path.join(local_path(uri), rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                part.write_parquet(path, compression="zstd", compression_level=1)
                size = os.path.getsize(path)
            adds.append(AddAction(rel, size, {"date": day.isoformat()}, int(time.time() * 1000),
                                  True, _file_stats(part)))
        return adds

    def _commit_files(self, kind: str, name: str, schema, adds: list, days: list[date]) -> WriteInfo:
        """One Delta transaction that removes every file of ``days`` and adds ``adds`` (creating the
        table when there is none); conflicts retry, and files committed under it are dropped."""
        from deltalake.transaction import create_table_with_add_actions

        uri = self.uri(kind, name)
        table = self.table(kind, name)
        if table is None:
            try:
                create_table_with_add_actions(uri, schema, adds, mode="error", partition_by=["date"],
                                              storage_options=self.storage_options)
                return WriteInfo(rows=_rows(adds), version=self.table(kind, name).version(),
                                 bytes_written=sum(int(a.size) for a in adds))
            except Exception:  # noqa: BLE001 - another writer created it first: commit below
                table = self.table(kind, name)
                if table is None or table.schema().to_json() != schema.to_json():
                    raise
        filters = [("date", "in", [d.isoformat() for d in days])]
        write_id = uuid.uuid4().hex
        open_table = self._reopening(kind, name, table)

        def commit() -> int:
            t = open_table()
            meta = {WRITE_ID: write_id, WRITE_DAYS: ",".join(d.isoformat() for d in days),
                    READ_VERSION: str(t.version())}
            t.create_write_transaction(
                adds, mode="overwrite", schema=schema, partition_by=["date"], partition_filters=filters,
                commit_properties=CommitProperties(custom_metadata=meta))
            return t.version()  # the version the transaction was built on

        # Conflicts (a stream insert into the same day) retry the commit; the files stay written.
        base = with_retries(commit, what=f"replace {kind}/{name}")
        version = self._drop_survivors(kind, name, days, base, write_id, {a.path for a in adds})
        if version is None:
            version = self.table(kind, name).version()
        return WriteInfo(rows=_rows(adds), version=version, bytes_written=sum(int(a.size) for a in adds))

    def _drop_survivors(self, kind: str, name: str, days: list[date], base: int, write_id: str,
                        ours: set[str]) -> int | None:
        """Remove the files a replace should have removed but could not see. Returns the table's
        version when the replace's commit is its newest (nothing to drop), else None.

        The overwrite removes the days' files of the version it was built on; a writer that
        committed to those days after that version but before the overwrite landed (delta-rs'
        conflict check lets such a commit through) leaves its files beside the new ones, and its
        rows could be doubled. Those files are removed: the days then hold exactly what the
        replace wrote, as a replace promises. (``Engine.index_batch_day`` re-inserts any raw row
        it had not indexed.) A writer that commits after the replace saw it and is left alone.

        A compaction that read the table before the replace landed and committed after it can only
        have rewritten such files (it would conflict with the replace over any other file of the
        days): the files it wrote hold their rows alone and are removed with them. (A compaction
        that reads after the landing waits until this drop has committed, see
        ``storage.maintenance.replace_settling``.)
        """
        from deltalake.transaction import RemoveAction

        t = self.table(kind, name)
        if t.version() == base + 1:  # nothing landed between the version read and this commit
            return t.version()
        landed = next((h["version"] for h in t.history(limit=100) if h.get(WRITE_ID) == write_id), None)
        if landed is None or landed == base + 1:
            return
        wanted = {d.isoformat() for d in days}

        def day_files(table: DeltaTable) -> dict[str, dict]:
            adds = add_actions(table)
            adds = adds.with_columns(pl.col("partition.date").cast(pl.String))
            return {r["path"]: r for r in adds.filter(pl.col("partition.date").is_in(list(wanted))).iter_rows(named=True)}

        def at(version: int) -> dict[str, dict]:
            return day_files(DeltaTable(self.uri(kind, name), version=version, storage_options=self.storage_options))

        survivors = set(at(landed)) - ours
        if not survivors:
            return

        def compacted_from(files: set[str], table: DeltaTable) -> set[str]:
            """The files compactions that read before ``landed`` wrote from ``files`` (or from their output)."""
            out: set[str] = set()
            for c in self.compactions(kind, name, landed, table):
                if c.read_version < landed and set(c.replaced.get_column("path").to_list()) & (files | out):
                    out |= c.wrote
            return out

        def remove():
            table = self.table(kind, name)
            live = day_files(table)
            doomed = survivors if survivors <= set(live) else survivors | compacted_from(survivors, table)
            gone = [RemoveAction(p, True, int(time.time() * 1000), live[p]["size_bytes"], {"date": live[p]["partition.date"]})
                    for p in sorted(doomed & set(live))]
            if gone:
                table.create_write_transaction(gone, mode="append", schema=table.schema(), partition_by=["date"],
                                               commit_properties=CommitProperties(custom_metadata={DROPS_FOR: write_id}))

        with_retries(remove, what=f"replace {kind}/{name}: drop files committed under it")

    def compactions(self, kind: str, name: str, after: int, table: DeltaTable | None = None) -> list[Compaction]:
        """The compactions committed to a table after version ``after`` (up to ``table``'s version,
        default the current one), oldest first. A reader that follows the table's files can read
        the replaced files it has not read yet instead of what a compaction wrote."""
        table = table or self.table(kind, name)
        if table is None or table.version() <= after:
            return []
        out = []
        for h in sorted(table.history(limit=table.version() - after), key=lambda h: h["version"]):
            v = h["version"]
            if v <= after or h.get("operation") != "OPTIMIZE":
                continue
            before = add_actions(DeltaTable(self.uri(kind, name), version=v - 1, storage_options=self.storage_options))
            now = set(add_actions(DeltaTable(self.uri(kind, name), version=v, storage_options=self.storage_options))
                      .get_column("path").to_list())
            out.append(Compaction(v, int(h.get("readVersion", v - 1)), now - set(before.get_column("path").to_list()),
                                  before.filter(~pl.col("path").is_in(list(now)))))
        return out

    def uri(self, kind: str, name: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown table kind {kind!r}")
        return f"{self.root}/{kind}/{name}"

    def table(self, kind: str, name: str) -> DeltaTable | None:
        try:
            return DeltaTable(self.uri(kind, name), storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def _reopening(self, kind: str, name: str, table: DeltaTable | None):
        """A function that gives ``table`` (the open a writer just made) the first time it is called
        and opens the table afresh every time after: a writer's first attempt commits on the open it
        has, and a retry after a conflict reads the newest version. ``None``: open afresh each time."""
        first = [table] if table is not None else []
        return lambda: first.pop() if first else self.table(kind, name)

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
        if self._files_writable:
            info = (self._replace_by_files(kind, name, df, days) if extra_predicate is None
                    else self._replace_matching(kind, name, df, days, extra_predicate))
            if info is not None:
                return info
        data = _arrow(df)
        predicate = f"date IN ({_date_list(days)})" + (f" AND {extra_predicate}" if extra_predicate else "")

        def write():
            write_deltalake(
                uri, data, mode="overwrite", partition_by=["date"], predicate=predicate,
                storage_options=self.storage_options, schema_mode="merge" if self.exists(kind, name) else None,
            )

        with_retries(write, what=f"replace {kind}/{name}")
        return WriteInfo(rows=df.height, version=self.table(kind, name).version())

    def _replace_matching(self, kind: str, name: str, df: pl.DataFrame, days: list[date],
                          predicate: str) -> WriteInfo | None:
        """Replace the rows of ``days`` that match ``predicate`` (SQL, as delta-rs' predicate
        overwrite takes it) with ``df`` through the fast writer; the days' other rows stay.

        The rows the predicate does not match (a null counts as not matching, as in delta-rs) are
        read from the days' files at one table version and written again with ``df``'s rows (on a
        closed day of ``raw/`` usually none: a day's stream rows are the only ones kept). The
        commit removes exactly the files read: a writer that adds files to the days meanwhile (a
        stream insert) keeps them, since their rows were not read and are not replaced; one that
        removes any of them (another replace, a compaction) makes the commit conflict, and the
        whole replace runs again on the new version. Returns None when the frame's schema is not
        the table's (schema evolution), for the delta-rs writer to handle.
        """
        from deltalake import Schema
        from deltalake.transaction import RemoveAction, create_table_with_add_actions

        uri = self.uri(kind, name)
        schema = Schema.from_arrow(_arrow(df.head(0)).schema)
        replaced = pl.sql_expr(predicate).fill_null(False)
        wanted = [d.isoformat() for d in days]
        table = self.table(kind, name)
        if table is None:
            adds = self._write_files(uri, df)
            try:
                create_table_with_add_actions(uri, schema, adds, mode="error", partition_by=["date"],
                                              storage_options=self.storage_options)
                return WriteInfo(rows=df.height, version=self.table(kind, name).version())
            except Exception:  # another writer created it first: replace in it below
                if self.table(kind, name) is None:
                    raise
        open_table = self._reopening(kind, name, table)

        def replace() -> WriteInfo | None:
            table = open_table()
            if table.schema().to_json() != schema.to_json():
                return None
            files = add_actions(table).with_columns(pl.col("partition.date").cast(pl.String))
            files = files.filter(pl.col("partition.date").is_in(wanted))
            frame = df
            if files.height:
                kept = (pl.scan_delta(table).filter(pl.col("date").is_in(days) & ~replaced)
                        .select(df.columns).collect())
                if kept.height:
                    frame = pl.concat([df, kept], how="vertical_relaxed")
            if not files.height and not frame.height:
                return WriteInfo(rows=0, version=table.version())
            now = int(time.time() * 1000)
            gone = [RemoveAction(r["path"], True, now, r["size_bytes"], {"date": r["partition.date"]})
                    for r in files.select("path", "size_bytes", "partition.date").iter_rows(named=True)]
            adds = self._write_files(uri, frame)
            # Built on the version read: a commit since then that removed a file read conflicts.
            table.create_write_transaction([*gone, *adds], mode="append", schema=schema, partition_by=["date"])
            return WriteInfo(rows=df.height, version=self.table(kind, name).version())

        return with_retries(replace, what=f"replace {kind}/{name} where {predicate}")

    def stage_partitions(self, kind: str, name: str, df: pl.DataFrame) -> dict:
        """Write ``df``'s Parquet files into the table without committing them: one part of a
        replace that several processes write (user buckets). The returned description (JSON-able:
        the schema and the files' add actions) goes to :meth:`commit_staged`; files never
        committed are left for vacuum, like those of a failed write."""
        from deltalake import Schema

        schema = Schema.from_arrow(_arrow(df.head(0)).schema)
        adds = self._write_files(self.uri(kind, name), df)
        return {"schema": schema.to_json(), "rows": df.height,
                "adds": [{"path": a.path, "size": a.size, "partition_values": dict(a.partition_values),
                          "modification_time": a.modification_time, "stats": a.stats} for a in adds]}

    def commit_staged(self, kind: str, name: str, staged: list[dict], days: Iterable[date]) -> WriteInfo:
        """Replace exactly ``days`` with every staged part in ONE Delta transaction (the same
        commit as :meth:`replace_partitions`): readers see the days as they were or with every
        part, never some of them. Parts whose schema is not the table's (schema evolution), or not
        each other's, are read back and written through :meth:`replace_partitions` instead."""
        from deltalake import Schema
        from deltalake.transaction import AddAction

        days = sorted(set(days))
        table = self.table(kind, name)
        schemas = {p["schema"] for p in staged if p["adds"]} or {p["schema"] for p in staged[:1]}
        if table is not None:
            same = schemas <= {table.schema().to_json()}
        else:
            same = len(schemas) == 1
        if not same or not staged:
            frames = [pl.read_parquet(f"{self.uri(kind, name)}/{a['path']}", storage_options=self.storage_options)
                      .with_columns(pl.lit(date.fromisoformat(a["partition_values"]["date"])).alias("date"))
                      for p in staged for a in p["adds"]]
            if not frames:
                raise ValueError(f"commit_staged {kind}/{name}: nothing staged and no schema to write an empty day with")
            return self.replace_partitions(kind, name, pl.concat(frames, how="diagonal_relaxed"), days)
        schema = Schema.from_json(schemas.pop())
        adds = [AddAction(a["path"], a["size"], a["partition_values"], a["modification_time"], True, a["stats"])
                for p in staged for a in p["adds"]]
        return self._commit_files(kind, name, schema, adds, days)

    def append(self, kind: str, name: str, df: pl.DataFrame) -> WriteInfo:
        if df.is_empty():
            t = self.table(kind, name)
            return WriteInfo(rows=0, version=t.version() if t else None)
        uri, data = self.uri(kind, name), _arrow(df)
        with_retries(lambda: write_deltalake(uri, data, mode="append", partition_by=["date"],
                                             storage_options=self.storage_options), what=f"append {kind}/{name}")
        return WriteInfo(rows=df.height, version=self.table(kind, name).version())

    def insert_unseen(self, kind: str, name: str, df: pl.DataFrame, key: str) -> WriteInfo:
        """Insert rows whose ``key`` is not in the table yet: a re-delivered batch changes nothing.

        The merge is pruned to the days the batch touches, and inserts only, so it adds files
        without rewriting the ones already there.
        """
        df = df.unique(subset=[key], keep="first", maintain_order=True)
        table = self.table(kind, name)  # opened once: the merge runs on it, and its version is the merge's
        if df.is_empty():
            return WriteInfo(rows=0, version=table.version() if table else None, inserted=0)
        if table is None:
            # Create the table empty, then merge like any writer. Creating it with the rows instead
            # is not safe: a writer that loses the race to create it has its commit retried by
            # delta-rs as a plain append, which stores the keys both writers carry twice.
            try:
                DeltaTable.create(self.uri(kind, name), schema=_arrow(df.head(0)).schema, mode="ignore",
                                  partition_by=["date"], storage_options=self.storage_options)
            except Exception:  # noqa: BLE001 - another writer created it at the same moment
                if not self.exists(kind, name):
                    raise
        days = df.get_column("date").unique().to_list()
        data = _arrow(df)
        open_table = self._reopening(kind, name, table)

        def merge():
            dt = open_table()
            metrics = dt.merge(
                data,
                predicate=f"t.{key} = s.{key} AND t.date IN ({_date_list(days)})",
                source_alias="s", target_alias="t", merge_schema=True,
            ).when_not_matched_insert_all().execute()
            return metrics, dt.version()  # a retry opens the table afresh

        metrics, version = with_retries(merge, what=f"merge into {kind}/{name}")
        return WriteInfo(rows=df.height, version=version,
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

    def scan_with_files(self, kind: str, name: str, start: date,
                        end: date) -> tuple[pl.LazyFrame, dict[date, frozenset[str]]] | None:
        """:meth:`scan` of the days [start, end], and the data files of each of those days in the
        same table version. Data files never change, so equal file sets mean equal contents."""
        t = self.table(kind, name)
        if t is None:
            return None
        adds = add_actions(t).select(
            "path", pl.col("partition.date").cast(pl.String).str.to_date().alias("date"))
        adds = adds.filter(pl.col("date").is_between(start, end))
        files = {d: frozenset(g.get_column("path").to_list())
                 for (d,), g in adds.partition_by("date", as_dict=True).items()}
        return pl.scan_delta(t).filter(pl.col("date").is_between(start, end)), files

    def read(self, kind: str, name: str, **kw) -> pl.DataFrame | None:
        lf = self.scan(kind, name, **kw)
        return None if lf is None else lf.collect()

    def stats(self, kind: str, name: str, day: date | None = None) -> dict:
        """Version, file count and bytes of a table (or of one day of it) for asset metadata."""
        t = self.table(kind, name)
        if t is None:
            return {"version": None, "files": 0, "bytes": 0}
        adds = add_actions(t)
        if day is not None and "partition.date" in adds.columns:
            adds = adds.filter(pl.col("partition.date").cast(pl.String) == day.isoformat())
        return {"version": t.version(), "files": adds.height, "bytes": int(adds.get_column("size_bytes").sum() or 0)}
