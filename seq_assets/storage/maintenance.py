"""Keeping the lake fast and bounded: compaction, retention, vacuum and log checkpoints.

The stream adds a file and a log entry to every table and day it touches, each micro-batch;
replaced and deleted partitions leave their files on storage. These functions, run by the
``maintain_lake`` job and ``seqctl maintain``, bound all of it:

- **compaction** rewrites a day's small files into bigger ones (delta-rs optimize: one commit that
  removes them and adds the same rows back, in the same order). A day the stream still writes into
  (today and the late days inside the horizon) is compacted *incrementally*: only its smallest
  files, as many as add up to less than the next bigger file (:func:`compaction_target`), so a file
  is rewritten about log2(day / round) times over the day instead of at every round, and files at
  the target size are never touched. Once a day has closed it is compacted once more, whole, into
  files of about ``TARGET_FILE_BYTES``;
- **retention** drops the days older than the table's definition keeps;
- **vacuum** deletes the files the current version does not read once written longer ago than the
  vacuum retention, except those a version still in the log reads;
- **checkpoints** let a reader open a table from one Parquet file, and the log entries older than
  the log retention are deleted (``LOG_RETENTION_HOURS``: hours, for the log grows with every
  commit); checkpoints keep no record of removed files (vacuum finds them without).

Nothing here reads the clock but vacuum (it compares files' ages with it, as delta-rs does):
callers pass ``today`` (retention counts days back from it) and ``now_ms``. Every function takes
``dry_run``: it then computes what it would do and changes nothing.

Beside the other writers:

- A stream insert only adds files: a compaction that lands first makes the insert's merge retry,
  one that lands after it leaves the inserted files alone. Either way no row moves twice.
- A compaction conflicts with any commit that removed a file it read (a replace, a retention
  delete, another compaction) and is retried from a fresh snapshot; see ``Lake._drop_survivors``
  for the one case a replace lets through, which it undoes.
- A replace may have to drop files a stream insert committed under it, right after it lands;
  compacting those files first would mix their rows into new files the drop cannot tell apart, so
  a day is left alone while such a drop is due (:func:`replace_settling`).
- Vacuum deletes no file younger than the vacuum retention (a writer commits its files within
  minutes of writing them), and none a version still in the log reads.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING
from urllib.parse import unquote

import polars as pl
from deltalake import DeltaTable, WriterProperties

from seq_assets.core import snapshots
from seq_assets.storage.lake import (
    DROPS_FOR,
    READ_VERSION,
    WRITE_DAYS,
    WRITE_ID,
    Lake,
    _join,
    add_actions,
    with_retries,
)
from seq_assets.storage.sql import list_tables

if TYPE_CHECKING:  # handed compiled definitions
    from seq_assets.core.compiled import Compiled

TARGET_FILE_BYTES = 128 * 1024 * 1024  # what compaction writes (delta-rs' default is 100 MB)
COMPACT_MIN_FILES = 10  # a day with this many files smaller than the target is compacted
# A streamed day with this many files is compacted at once (the compact_on_file_count sensor), not
# at the next schedule tick: the stream adds a file a micro-batch, 12 a minute in make dev, and no
# day should ever pass the files_per_partition bound (50).
COMPACT_TRIGGER_FILES = 32
# How long a table's log keeps its commits (``delta.logRetentionDuration``): every version still
# in the log can be opened, and vacuum keeps the files each of them reads (:func:`vacuum`). Nothing
# the platform runs reads a version more than minutes old (the serving poll follows the versions
# since its last poll, seconds ago; a replace looks back ``REPLACE_SETTLE_MS``), so this is hours,
# not the vacuum's days: the stream commits every micro-batch (17,280 a day in ``make dev``) and
# the log holds every commit inside it. ``SEQ_LOG_RETENTION_HOURS`` sets it.
LOG_RETENTION_HOURS = 2
MIN_LOG_RETENTION_HOURS = 1
# Checkpoints keep no record of removed files (``delta.deletedFileRetentionDuration`` 0): an open
# reads the whole last checkpoint, and a streamed table removes a file or two a micro-batch (each
# compaction removes the files it packs), so records kept for the vacuum's 7 days made every
# checkpoint hold ~150,000 of them in ``make dev`` (~0.7 ms more per open per 1,000, and seconds to
# write one). Vacuum does not need them: it lists storage, and finds the recent removals in the
# log's commits itself.
TOMBSTONE_RETENTION = "interval 0 hours"
# Every writer (the stream's merges, replaces, compactions) writes a checkpoint after this many
# commits (delta-rs' post-commit hook; its default is 100). An open reads the last checkpoint and
# replays the JSON commits after it, ~1.7 ms each whatever they hold (a checkpoint of a streamed
# table opens in ~5 ms): with 10, opening a table at a random moment replayed 4.5 commits on
# average, 7-8 ms. Each checkpoint rewrites the table's live files (tens of kB for a streamed
# table: its days, compacted), so the log holds LOG_RETENTION_HOURS of them.
CHECKPOINT_INTERVAL = 2
# Below this, vacuum could delete files a long backfill or a serving snapshot load still reads.
MIN_RETENTION_HOURS = 24
# How long after a partition replace lands its drop of other writers' files may still be due.
REPLACE_SETTLE_MS = 10 * 60 * 1000
STREAMED_KINDS = ("raw", "dead_letter", "events", "metrics")  # kinds the stream writes today into
# A sequences/ day is written whole by its build, and the time of its files is when the snapshot
# was built (serving takes events indexed later as fresh): never rewritten.
NOT_COMPACTED = ("sequences",)
SCOPES = ("today", "full")
_WRITER = WriterProperties(compression="ZSTD", compression_level=1)  # as the lake's own writer


@dataclass(frozen=True)
class TableSpec:
    """A table to maintain; ``retention_days`` None keeps every day."""

    kind: str
    name: str
    retention_days: int | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class TableReport:
    """What one run did to a table (or, with ``dry_run``, would do). Files and bytes are the live
    data files of the table's current version; deleted and reclaimed are what vacuum removed from
    storage."""

    table: str
    dry_run: bool = False
    exists: bool = True  # False: no such table in the lake (yet), nothing to report
    files_before: int = 0
    bytes_before: int = 0
    files_after: int = 0
    bytes_after: int = 0
    max_partition_files_before: int = 0
    max_partition_files_after: int = 0
    partitions_compacted: int = 0
    files_compacted: int = 0  # small files rewritten
    files_written: int = 0  # the files they became
    bytes_compacted: int = 0  # the bytes of the small files rewritten
    partitions_dropped: int = 0
    rows_dropped: int = 0
    files_deleted: int = 0
    bytes_reclaimed: int = 0
    log_files_deleted: int = 0
    checkpoint_version: int = -1
    settling: list[str] = field(default_factory=list)  # days left alone while a replace settles

    def figures(self) -> dict[str, int]:
        """The numeric figures, for metadata and ``--json``."""
        return {k: v for k, v in asdict(self).items() if isinstance(v, int) and not isinstance(v, bool)}


# ---- which tables ---------------------------------------------------------------------------


def lake_tables(compiled: Compiled, lake: Lake | None = None) -> list[TableSpec]:
    """Every table of the compiled definitions, with the retention its definition gives: raw and
    dead letters by their source's ``retention_days``, events by their event type's, sequences by
    their feature's ``snapshot_retention_days``; lookup snapshots keep every day. Then, when a
    ``lake`` is given, the other tables it holds (``metrics/``, ``analysis/``, tables of
    definitions no longer compiled), kept without a retention."""
    specs: list[TableSpec] = []
    for source, s in compiled.sources.items():
        specs += [TableSpec("raw", source, s["retention_days"]), TableSpec("dead_letter", source, s["retention_days"])]
    specs += [TableSpec("enrichments", n) for n, e in compiled.enrichments.items() if e["kind"] == "lookup"]
    specs += [TableSpec("events", n, et["retention_days"]) for n, et in compiled.event_types.items()]
    specs += [TableSpec("sequences", t, f["snapshot_retention_days"]) for t, f in compiled.features.items()]
    if lake is not None:
        known = {(s.kind, s.name) for s in specs}
        specs += [TableSpec(k, n) for k, n in list_tables(lake) if (k, n) not in known]
    return specs


# ---- figures --------------------------------------------------------------------------------


def partition_files(table: DeltaTable, target_size: int = TARGET_FILE_BYTES) -> pl.DataFrame:
    """One row per day of the table's version: ``date``, ``files``, ``bytes``, ``rows``, and the
    ``small`` files (under ``target_size``) with their ``small_bytes``."""
    adds = add_actions(table)
    if adds.is_empty() or "partition.date" not in adds.columns:
        return pl.DataFrame(schema={"date": pl.Date, "files": pl.UInt32, "bytes": pl.Int64, "rows": pl.Int64,
                                    "small": pl.UInt32, "small_bytes": pl.Int64})
    small = pl.col("size_bytes") < target_size
    rows = pl.col("num_records") if "num_records" in adds.columns else pl.lit(0)
    return (adds.group_by(pl.col("partition.date").cast(pl.String).str.to_date().alias("date"))
            .agg(pl.len().alias("files"), pl.col("size_bytes").sum().cast(pl.Int64).alias("bytes"),
                 rows.sum().cast(pl.Int64).alias("rows"), small.sum().cast(pl.UInt32).alias("small"),
                 pl.col("size_bytes").filter(small).sum().cast(pl.Int64).alias("small_bytes"))
            .sort("date"))


def _totals(parts: pl.DataFrame) -> tuple[int, int, int]:
    """Files, bytes and the most files of any day."""
    if parts.is_empty():
        return 0, 0, 0
    return int(parts["files"].sum()), int(parts["bytes"].sum()), int(parts["files"].max())


def partition_file_counts(lake: Lake, kind: str, name: str) -> dict[date, int]:
    """Files per day of a table's current version (empty when there is no table)."""
    t = lake.table(kind, name)
    return {} if t is None else dict(partition_files(t).select("date", "files").iter_rows())


# ---- compaction -----------------------------------------------------------------------------


def _history_since(table: DeltaTable, since_ms: int) -> list[dict]:
    """The commits of the table from ``since_ms`` on, newest first."""
    limit = 64
    while True:
        hist = table.history(limit=limit)
        if len(hist) < limit or min(h.get("timestamp", 0) for h in hist) < since_ms:
            return [h for h in hist if h.get("timestamp", 0) >= since_ms]
        limit *= 4


def _day_paths(lake: Lake, kind: str, name: str, version: int, day: str) -> set[str]:
    t = DeltaTable(lake.uri(kind, name), version=version, storage_options=lake.storage_options)
    adds = add_actions(t)
    return set(adds.filter(pl.col("partition.date").cast(pl.String) == day).get_column("path").to_list())


def replace_settling(lake: Lake, kind: str, name: str, table: DeltaTable, day: date, now_ms: int,
                     recent: list[dict] | None = None) -> bool:
    """Whether a partition replace of ``day`` still has to drop files another writer committed
    between the version it was built on and its own commit (``Lake._drop_survivors``).

    It is due when the replace landed in the last ``REPLACE_SETTLE_MS``, was not built on the
    version just before its own, kept files of the version before it, and no commit drops them
    for it yet.
    """
    iso = day.isoformat()
    if recent is None:  # the table's commits of the look-back (a caller checking many days reads them once)
        recent = _history_since(table, now_ms - REPLACE_SETTLE_MS)
    dropped = {h[DROPS_FOR] for h in recent if DROPS_FOR in h}
    for h in recent:
        if WRITE_ID not in h or h[WRITE_ID] in dropped or iso not in h.get(WRITE_DAYS, "").split(","):
            continue
        v = h["version"]
        if int(h.get(READ_VERSION, v - 1)) == v - 1:
            continue  # nothing committed under it
        if _day_paths(lake, kind, name, v, iso) & _day_paths(lake, kind, name, v - 1, iso):
            return True
    return False


def compaction_target(files: list[int] | list[tuple[int, int]], least: int, target_size: int = TARGET_FILE_BYTES,
                      whole: bool = False) -> int | None:
    """The ``target_size`` to hand delta-rs' optimize for a day whose files are ``files`` (their
    sizes, or ``(size, rows)`` pairs), or None when there is nothing worth doing (fewer than
    ``max(2, least)`` files under ``target_size``).

    delta-rs rewrites every file no bigger than the target size it is given, packed into files of
    up to that size: given ``T``, it takes exactly the files of size <= ``T``, and when they add up
    to no more than ``T`` they become one file.

    - Incremental (``whole`` False, a day the stream still writes into): the smallest files, by
      size, at least ``least`` of them, up to the first file bigger than all of them together and
      with more rows; ``T`` is their total, so they become one file and every other file of the day
      stays as it is. Files grow like a binary counter (new files join a bigger one once they hold
      as many rows), so a row is rewritten about log2(files of the day / files per round) times
      over the day, not once per round. (While files are so small that a file's own overhead
      outweighs its rows, a compacted file is smaller than the new files beside it and is taken
      with them; that stops once its rows outweigh the overhead.)
    - Whole (a closed day): every file under ``target_size`` into one when they add up to no more
      than it. Otherwise, in both modes, delta-rs packs the files under ``target_size`` into files
      of about that size.
    """
    pairs = sorted((f, f) if isinstance(f, int) else (int(f[0]), int(f[1] if f[1] is not None else f[0]))
                   for f in files)
    small = [p for p in pairs if p[0] < target_size]
    bigger = next((p[0] for p in pairs if p[0] >= target_size), None)
    need = max(2, least)
    if len(small) < need:
        return None
    total = sum(size for size, _ in small)
    if whole:
        if total <= target_size and (bigger is None or total < bigger):
            return max(total, small[-1][0])
        return target_size
    size_sum = sum(size for size, _ in small[:need - 1])
    rows_sum = sum(rows for _, rows in small[:need - 1])
    for k in range(need, len(small) + 1):
        size_sum += small[k - 1][0]
        rows_sum += small[k - 1][1]
        if size_sum > target_size:
            return target_size
        nxt = small[k][0] if k < len(small) else bigger
        if nxt is None or (nxt > size_sum and (k == len(small) or small[k][1] > rows_sum)):
            return size_sum
    return target_size


@dataclass
class CompactionRun:
    """What :func:`compact` did (or, in a dry run, would do) to each day."""

    days: dict[date, tuple[int, int]] = field(default_factory=dict)  # day -> (files removed, files added)
    bytes_rewritten: dict[date, int] = field(default_factory=dict)  # day -> bytes of the files removed
    settling: list[str] = field(default_factory=list)

    @property
    def files_removed(self) -> int:
        return sum(r for r, _ in self.days.values())

    @property
    def files_added(self) -> int:
        return sum(a for _, a in self.days.values())


def _removed_bytes(metrics: dict) -> int:
    removed = metrics.get("filesRemoved") or {}
    if isinstance(removed, str):
        removed = json.loads(removed)
    return int(removed.get("totalSize", 0))


def compact(lake: Lake, kind: str, name: str, min_files: dict[date, int], *, now_ms: int,
            target_size: int = TARGET_FILE_BYTES, whole: Iterable[date] = (), dry_run: bool = False,
            table: DeltaTable | None = None) -> CompactionRun:
    """Compact each day of ``min_files`` that has at least that many files under ``target_size``:
    incrementally, or for the days of ``whole`` into files of ``target_size`` (see
    :func:`compaction_target`).

    Rows and their content stay the same; the order of the rows inside the day too. A commit
    conflict (another writer removed a file it read) re-plans the day from a fresh snapshot.
    ``table``: the table as just opened, to plan the first days on.
    """
    out = CompactionRun()
    whole = set(whole)
    history: dict[int, list[dict]] = {}  # the look-back's commits, per table version planned on
    # The snapshot the days are planned on, kept while nothing is committed: a day with nothing to
    # do hands it to the next (a commit, or a conflict, and the next attempt opens the table again).
    snapshot: list[DeltaTable] = [table] if table is not None else []
    for day, least in sorted(min_files.items()):
        def attempt(day: date = day, least: int = least) -> tuple[int, int, int] | None:
            table = snapshot.pop() if snapshot else lake.table(kind, name)
            if table is None:
                return None
            kept = [table]  # put back below when the day needs no commit
            adds = add_actions(table)
            if adds.is_empty() or "partition.date" not in adds.columns:
                return None
            day_adds = adds.filter(pl.col("partition.date").cast(pl.String) == day.isoformat())
            sizes = day_adds["size_bytes"].to_list()
            rows = day_adds["num_records"].to_list() if "num_records" in day_adds.columns else sizes
            size = compaction_target(list(zip(sizes, rows)), least, target_size, whole=day in whole)
            if size is None:
                snapshot.extend(kept)
                return None
            version = table.version()
            if version not in history:
                history.clear()
                history[version] = _history_since(table, now_ms - REPLACE_SETTLE_MS)
            if replace_settling(lake, kind, name, table, day, now_ms, history[version]):
                out.settling.append(day.isoformat())
                snapshot.extend(kept)
                return None
            if dry_run:
                snapshot.extend(kept)
                taken = [s for s in sizes if s <= size]
                return len(taken), max(1, math.ceil(sum(taken) / size)), sum(taken)
            # The plan was made on this snapshot, and optimize runs on it: the files <= size are
            # the ones planned (a conflict re-plans from a fresh one).
            m = table.optimize.compact(partition_filters=[("date", "=", day.isoformat())], target_size=size,
                                       writer_properties=_WRITER)
            return int(m["numFilesRemoved"]), int(m["numFilesAdded"]), _removed_bytes(m)

        done = with_retries(attempt, what=f"compact {kind}/{name} {day}")
        if done and done[0]:
            out.days[day] = done[:2]
            out.bytes_rewritten[day] = done[2]
    return out


def open_days(today: date, horizon_days: int) -> list[date]:
    """The days the stream still writes into: today and the late days inside the horizon."""
    return [today - timedelta(days=i) for i in range(horizon_days + 1)]


def compaction_days(parts: pl.DataFrame, today: date, scope: str, horizon_days: int = 0) -> dict[date, int]:
    """The days to compact and the small files each needs. Scope ``today``: today and the late days
    inside the horizon, past ``COMPACT_MIN_FILES``. Scope ``full``: every day past it, and
    yesterday, closed now, with any two (compacted whole: see :func:`compact`)."""
    if scope == "today":
        return {d: COMPACT_MIN_FILES for d in open_days(today, horizon_days)}
    days = {d: COMPACT_MIN_FILES for d in parts.filter(pl.col("small") >= COMPACT_MIN_FILES).get_column("date")}
    days[today - timedelta(days=1)] = 2
    return days


def days_past_trigger(lake: Lake, kind: str, name: str, today: date, horizon_days: int,
                      trigger: int = COMPACT_TRIGGER_FILES) -> dict[date, int]:
    """The open days (:func:`open_days`) of a streamed table with at least ``trigger`` files, and
    their file counts: what the count-triggered compaction looks at (one read of the table's log)."""
    if kind not in STREAMED_KINDS:
        return {}
    counts = partition_file_counts(lake, kind, name)
    return {d: counts[d] for d in open_days(today, horizon_days) if counts.get(d, 0) >= trigger}


# ---- retention, vacuum, log -----------------------------------------------------------------


def drop_expired(lake: Lake, kind: str, name: str, retention_days: int, today: date,
                 dry_run: bool = False) -> tuple[int, int]:
    """Delete the days more than ``retention_days`` before ``today`` (whole files: the predicate is
    on the partition column). Returns the days and rows dropped."""
    cutoff = today - timedelta(days=retention_days)
    table = lake.table(kind, name)
    if table is None:
        return 0, 0
    if kind == "sequences":  # a kept day of changes is read over the full snapshot under it: keep that
        cutoff = snapshots.retention_cutoff(lake.scan(kind, name), cutoff)
    old = partition_files(table).filter(pl.col("date") < cutoff)
    if old.is_empty():
        return 0, 0
    if not dry_run:
        with_retries(lambda: lake.table(kind, name).delete(f"date < '{cutoff.isoformat()}'"),
                     what=f"retention {kind}/{name}")
    return old.height, int(old["rows"].sum())


def retention_properties(log_retention_hours: int = LOG_RETENTION_HOURS) -> dict[str, str]:
    """The table properties maintenance keeps: log entries for ``log_retention_hours`` (see
    ``LOG_RETENTION_HOURS``), no removed-file records in checkpoints (``TOMBSTONE_RETENTION``),
    statistics on every column, as the lake's own writer writes them (delta-rs' default is the first
    32: a reader's filter on a later column would skip the compacted files), and a checkpoint every
    ``CHECKPOINT_INTERVAL`` commits."""
    return {
        "delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
        "delta.deletedFileRetentionDuration": TOMBSTONE_RETENTION,
        "delta.logRetentionDuration": f"interval {log_retention_hours} hours",
        "delta.dataSkippingNumIndexedCols": "-1",
    }


def keep_properties(lake: Lake, kind: str, name: str, log_retention_hours: int = LOG_RETENTION_HOURS,
                    dry_run: bool = False, table: DeltaTable | None = None) -> bool:
    """Set :func:`retention_properties` on the table (``table``: as just opened) when they differ
    (one metadata commit); True when they did."""
    want = retention_properties(log_retention_hours)
    table = table if table is not None else lake.table(kind, name)
    if table is None or all(table.metadata().configuration.get(k) == v for k, v in want.items()):
        return False
    if not dry_run:
        with_retries(lambda: lake.table(kind, name).alter.set_table_properties(want),
                     what=f"properties of {kind}/{name}")
    return True


def _stored(lake: Lake, kind: str, name: str) -> dict[str, int]:
    """Every object under the table's folder (data files and log), path relative to it -> bytes."""
    return lake.stored_files(kind, name)


def _commits(stored: dict[str, int]) -> list[str]:
    """The JSON commits of the log among a table's stored objects (:func:`_stored`)."""
    return [p for p in stored if p.startswith("_delta_log/") and p.endswith(".json") and p[11:-5].isdigit()]


def _removed_by_log(lake: Lake, kind: str, name: str, stored: dict[str, int], paths: set[str],
                    since_ms: int) -> dict[str, int]:
    """Of ``paths``, those a commit in the table's log (among ``stored``, its objects) removed at
    ``since_ms`` or later, with that commit's version (each JSON commit is read once)."""
    fs, base = lake.filesystem(kind, name)

    def removals(commit: str) -> list[tuple[str, int]]:
        with fs.open_input_stream(_join(base, commit)) as f:
            text = f.read().decode()
        if '"remove"' not in text:
            return []
        version = int(commit[11:-5])
        out = []
        for line in text.splitlines():
            if line.startswith('{"remove"'):
                remove = json.loads(line)["remove"]
                path = unquote(remove["path"])
                if path in paths and (remove.get("deletionTimestamp") or 0) >= since_ms:
                    out.append((path, version))
        return out

    with ThreadPoolExecutor(8) as pool:
        return {p: v for found in pool.map(removals, _commits(stored)) for p, v in found}


def _opens(lake: Lake, kind: str, name: str, version: int) -> bool:
    """Whether the log still holds ``version`` (the commit before the oldest left may be gone)."""
    try:
        DeltaTable(lake.uri(kind, name), version=version, storage_options=lake.storage_options)
        return True
    except Exception:  # noqa: BLE001 - delta-rs raises its kernel's errors for a version it cannot rebuild
        return False


def vacuum(lake: Lake, kind: str, name: str, retention_hours: int, *, enforce_retention_duration: bool = True,
           dry_run: bool = False, log_retention_hours: int = LOG_RETENTION_HOURS,
           now_ms: int | None = None) -> tuple[int, int]:
    """Delete the files the current version does not read that were written more than
    ``retention_hours`` ago, except those a version inside the log retention reads (removed less
    than ``log_retention_hours`` before ``now_ms``, default the clock). Returns the files deleted
    and their bytes. So a file stays at least ``retention_hours`` after it was written (a writer's
    files before its commit, a long backfill's or a snapshot load's reads of the version it opened)
    and the log retention after it was removed (time travel, a reader of an older version).
    ``enforce_retention_duration`` refuses a retention under ``MIN_RETENTION_HOURS``.

    delta-rs' full mode: it lists the table's storage, so files of writes that never committed go
    too, and the checkpoints need no record of removed files (``TOMBSTONE_RETENTION``). The files
    of the versions before each commit in the log that removed a file old enough to go are kept
    (its ``keep_versions``); recently written files are kept by their age.
    """
    if retention_hours < 0 or (enforce_retention_duration and retention_hours < MIN_RETENTION_HOURS):
        raise ValueError(f"a vacuum retention of {retention_hours} hours is below the minimum of "
                         f"{MIN_RETENTION_HOURS} hours (pass enforce_retention_duration=False to allow it)")
    table = lake.table(kind, name)
    if table is None:
        return 0, 0
    # The table's own minimum (its deletedFileRetentionDuration) is not enforced. delta-rs lists
    # the removals the log records, deleted already or not, and every old file it does not name.
    kw = {"retention_hours": retention_hours, "enforce_retention_duration": False, "full": True}
    doomed = table.vacuum(dry_run=True, **kw)
    if not doomed:
        return 0, 0
    stored = _stored(lake, kind, name)
    since_ms = (int(time.time() * 1000) if now_ms is None else now_ms) - log_retention_hours * 3_600_000
    removed = _removed_by_log(lake, kind, name, stored, {p for p in doomed if p in stored}, since_ms) if log_retention_hours else {}
    keep = [v for v in sorted({v - 1 for v in removed.values()}) if _opens(lake, kind, name, v)]
    if keep:
        kw["keep_versions"] = keep
        doomed = table.vacuum(dry_run=True, **kw)
    present = [p for p in doomed if p in stored]
    if present and not dry_run:
        with_retries(lambda: lake.table(kind, name).vacuum(dry_run=False, **kw), what=f"vacuum {kind}/{name}")
    return len(present), sum(stored[p] for p in present)


def _log_entries(lake: Lake, kind: str, name: str) -> int:
    return len(_commits(_stored(lake, kind, name)))


def checkpoint(lake: Lake, kind: str, name: str, dry_run: bool = False,
               since: tuple[int, int] | None = None) -> tuple[int, int]:
    """Write a checkpoint of the current version and delete the log entries older than the table's
    log retention (:func:`retention_properties`). Returns the version and the log entries deleted:
    since ``since`` (the table's version and log entries then) when given, for the writers'
    own checkpoints clean the log up too (delta-rs' post-commit hook), else by this call."""
    table = lake.table(kind, name)
    if table is None:
        return -1, 0
    if dry_run:
        return table.version(), 0
    version0, entries0 = since if since is not None else (table.version(), _log_entries(lake, kind, name))
    table.create_checkpoint()
    table.cleanup_metadata()
    version = table.version()
    return version, max(0, entries0 + (version - version0) - _log_entries(lake, kind, name))


# ---- one table, the lake --------------------------------------------------------------------


def maintain_table(lake: Lake, spec: TableSpec, *, scope: str, today: date, now_ms: int, retention_hours: int,
                   horizon_days: int = 0, enforce_retention_duration: bool = True, dry_run: bool = False,
                   log_retention_hours: int = LOG_RETENTION_HOURS) -> TableReport:
    """Scope ``today``: compact, incrementally, today's day of a table the stream writes and its
    late days inside ``horizon_days``. Scope ``full``: drop the days past the table's retention,
    compact (yesterday whole, once it has closed), vacuum and checkpoint. Both keep the table's
    :func:`retention_properties`."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r} (one of: {', '.join(SCOPES)})")
    kind, name = spec.kind, spec.name
    report = TableReport(spec.label, dry_run=dry_run)
    table = lake.table(kind, name)
    if table is None:
        report.exists = False
        return report
    parts = partition_files(table)
    report.files_before, report.bytes_before, report.max_partition_files_before = _totals(parts)
    if scope == "today" and kind not in STREAMED_KINDS:
        report.files_after, report.bytes_after, report.max_partition_files_after = _totals(parts)
        return report
    since = (table.version(), _log_entries(lake, kind, name)) if scope == "full" and not dry_run else None
    # Before compaction: statistics on every column.
    changed = keep_properties(lake, kind, name, log_retention_hours, dry_run, table=table)
    if scope == "full" and spec.retention_days is not None:
        report.partitions_dropped, report.rows_dropped = drop_expired(lake, kind, name, spec.retention_days,
                                                                      today, dry_run)
        parts = parts.filter(pl.col("date") >= today - timedelta(days=spec.retention_days)) if dry_run else parts
        changed = changed or bool(report.partitions_dropped)
    if changed and not dry_run:  # this run committed: plan on the table as it is now
        table = lake.table(kind, name)
        parts = partition_files(table)
    wanted = {} if kind in NOT_COMPACTED else compaction_days(parts, today, scope, horizon_days)
    whole = [today - timedelta(days=1)] if scope == "full" else []
    done = compact(lake, kind, name, wanted, now_ms=now_ms, whole=whole, dry_run=dry_run, table=table)
    report.partitions_compacted, report.files_compacted, report.files_written = len(done.days), done.files_removed, done.files_added
    report.bytes_compacted = sum(done.bytes_rewritten.values())
    report.settling = done.settling
    if scope == "full":
        report.files_deleted, report.bytes_reclaimed = vacuum(
            lake, kind, name, retention_hours, enforce_retention_duration=enforce_retention_duration, dry_run=dry_run,
            log_retention_hours=log_retention_hours, now_ms=now_ms)
        report.checkpoint_version, report.log_files_deleted = checkpoint(lake, kind, name, dry_run, since)
    if dry_run:
        # What the table would hold: the days kept, with the planned compactions done.
        planned = pl.DataFrame({"date": list(done.days), "change": [a - r for r, a in done.days.values()]},
                               schema={"date": pl.Date, "change": pl.Int64})
        after = parts.join(planned, on="date", how="left").select(pl.col("files") + pl.col("change").fill_null(0))
        report.files_after = int(after.to_series().sum()) if after.height else 0
        report.bytes_after = _totals(parts)[1]
        report.max_partition_files_after = int(after.to_series().max()) if after.height else 0
    else:
        after = parts if scope == "today" and not done.days else partition_files(lake.table(kind, name))
        report.files_after, report.bytes_after, report.max_partition_files_after = _totals(after)
    return report


def maintain_lake(lake: Lake, specs: list[TableSpec], *, scope: str, today: date, now_ms: int, retention_hours: int,
                  horizon_days: int = 0, enforce_retention_duration: bool = True, dry_run: bool = False,
                  log_retention_hours: int = LOG_RETENTION_HOURS) -> list[TableReport]:
    """:func:`maintain_table` for every table of ``specs`` the lake holds, in order."""
    reports = [maintain_table(lake, s, scope=scope, today=today, now_ms=now_ms, retention_hours=retention_hours,
                              horizon_days=horizon_days, enforce_retention_duration=enforce_retention_duration,
                              dry_run=dry_run, log_retention_hours=log_retention_hours) for s in specs]
    return [r for r in reports if r.exists]


def report_frame(reports: list[TableReport]) -> pl.DataFrame:
    """The figures of a run, one row per table, for the terminal and the run log."""
    return pl.DataFrame([{"table": r.table, **r.figures()} for r in reports]).select(
        "table", "files_before", "files_after", "bytes_before", "bytes_after", "max_partition_files_after",
        "files_compacted", "files_written", "bytes_compacted", "partitions_dropped", "files_deleted", "bytes_reclaimed",
        "log_files_deleted") if reports else pl.DataFrame()


def select_tables(specs: list[TableSpec], wanted: list[str] | None) -> list[TableSpec]:
    """The specs named ``KIND/NAME`` in ``wanted`` (all of them when it is empty); an unknown name
    is refused with the known ones."""
    if not wanted:
        return specs
    by_label = {s.label: s for s in specs}
    unknown = [w for w in wanted if w not in by_label]
    if unknown:
        raise ValueError(f"unknown table(s) {', '.join(unknown)}; tables: {', '.join(by_label)}")
    return [by_label[w] for w in wanted]
