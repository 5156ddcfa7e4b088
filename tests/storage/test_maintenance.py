"""Lake maintenance (seq_assets/storage/maintenance.py): compaction, retention, vacuum, checkpoints.

Compaction must leave every row and every reader's result as it was, also while the stream
inserts and a backfill replaces the same day; vacuum must delete only files removed longer ago than
the retention; retention follows each table's definition; a dry run changes nothing.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pyarrow.dataset as ds
import pytest
from deltalake import DeltaTable
from polars.testing import assert_frame_equal

from seq_assets.storage import maintenance
from seq_assets.storage.lake import Lake
from seq_assets.storage.sql import query

D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)
HOUR_MS = 3_600_000


def frame(day: date, ids: list[str], n0: int = 0) -> pl.DataFrame:
    k = len(ids)
    return pl.DataFrame({
        "event_id": ids,
        "n": list(range(n0, n0 + k)),
        "surface": ["search" if i % 3 == 0 else "home" for i in range(k)],
        "at": [datetime(2026, 3, 1, 12, tzinfo=timezone.utc) + timedelta(seconds=n0 + i) for i in range(k)],
        "emb": [[float(i), float(i) / 2] for i in range(k)],
        "date": [day] * k,
    })


def now_ms() -> int:
    return int(time.time() * 1000)


def stored(lake: Lake, kind: str = "events", name: str = "t") -> dict[str, int]:
    """Every file under the table's folder (data and log) with its size."""
    root = Path(lake.uri(kind, name))
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def rows(lake: Lake, kind: str = "events", name: str = "t") -> pl.DataFrame:
    return lake.read(kind, name).sort("event_id")


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def streamed(lake: Lake, day: date, batches: int, per_batch: int = 5, prefix: str = "s") -> None:
    """``batches`` micro-batches into one day, as the stream writes them: one small file each."""
    for b in range(batches):
        ids = [f"{prefix}{b}-{i}" for i in range(per_batch)]
        lake.insert_unseen("events", "t", frame(day, ids, n0=b * per_batch), key="event_id")


# ---- compaction -------------------------------------------------------------------------------


def test_compaction_turns_a_day_of_small_files_into_one_with_the_same_rows(lake):
    streamed(lake, D1, 60)
    for b in range(12):  # appends too, and a second day that stays under the file count
        lake.append("events", "t", frame(D2, [f"a{b}-{i}" for i in range(4)], n0=500 + 4 * b))
    before = rows(lake)
    t = lake.table("events", "t")
    counts = maintenance.partition_file_counts(lake, "events", "t")
    assert counts == {D1: 60, D2: 12}
    filters = [(ds.field("surface") == "search", pl.col("surface") == "search"),
               (ds.field("n") >= 250, pl.col("n") >= 250),
               (ds.field("date") == D2, pl.col("date") == D2)]
    sql = "SELECT date, surface, count(*) AS n, sum(n) AS s FROM events.t WHERE n < 100 GROUP BY ALL ORDER BY ALL"
    sql_before = query(sql, lake=lake)

    done = maintenance.compact(lake, "events", "t", {D1: maintenance.COMPACT_MIN_FILES, D2: 20}, now_ms=now_ms())
    after = maintenance.partition_file_counts(lake, "events", "t")
    print(f"\nevents/t {D1}: {counts[D1]} files -> {after[D1]}")  # the measured effect
    assert done.days == {D1: (60, 1)} and after == {D1: 1, D2: 12}
    assert_frame_equal(rows(lake), before)
    t2 = lake.table("events", "t")
    assert t2.version() == t.version() + 1 and t2.history(1)[0]["operation"] == "OPTIMIZE"
    for arrow_filter, polars_filter in filters:  # pyarrow datasets (DuckDB's views), polars, SQL
        want = before.filter(polars_filter).height
        assert t2.to_pyarrow_dataset().to_table(filter=arrow_filter).num_rows == want
        assert pl.scan_delta(t2).filter(polars_filter).collect().height == want
    assert_frame_equal(query(sql, lake=lake), sql_before)
    # Idempotent: nothing left to do.
    assert not maintenance.compact(lake, "events", "t", {D1: 2}, now_ms=now_ms()).days
    # The day after it closes: any two small files are compacted once more.
    full = maintenance.maintain_table(lake, maintenance.TableSpec("events", "t"), scope="full", today=D3,
                                      now_ms=now_ms(), retention_hours=0, enforce_retention_duration=False)
    assert maintenance.partition_file_counts(lake, "events", "t") == {D1: 1, D2: 1}
    assert full.files_compacted == 12 and full.files_before == 13 and full.files_after == 2
    assert_frame_equal(rows(lake), before)


def test_todays_scope_compacts_only_today_of_a_streamed_table(lake):
    streamed(lake, D1, 12)
    streamed(lake, D2, 12, prefix="x")
    lake.replace_partitions("sequences", "f_v1", frame(D1, ["u"]), [D1])
    spec = maintenance.TableSpec("events", "t")
    r = maintenance.maintain_table(lake, spec, scope="today", today=D2, now_ms=now_ms(), retention_hours=168)
    assert maintenance.partition_file_counts(lake, "events", "t") == {D1: 12, D2: 1}
    assert (r.files_before, r.files_after, r.partitions_compacted, r.files_deleted) == (24, 13, 1, 0)
    seq = maintenance.maintain_table(lake, maintenance.TableSpec("sequences", "f_v1"), scope="today", today=D1,
                                     now_ms=now_ms(), retention_hours=168)
    assert seq.files_compacted == 0 and seq.checkpoint_version == -1  # not a streamed table: untouched
    for i in range(3):
        lake.append("sequences", "f_v1", frame(D1, [f"u{i}"]))
    seq = maintenance.maintain_table(lake, maintenance.TableSpec("sequences", "f_v1"), scope="full", today=D2,
                                     now_ms=now_ms(), retention_hours=168)
    # A snapshot's files are never rewritten: their time is when it was built (serving relies on it).
    assert seq.files_compacted == 0 and maintenance.partition_file_counts(lake, "sequences", "f_v1") == {D1: 4}


def test_compaction_racing_stream_inserts_and_a_backfill_loses_and_doubles_nothing(lake):
    """Three writers on one day at once, as in production: the stream inserts new events, a
    backfill replaces the day (again and again) and compaction rewrites its small files. Then the
    backfill's catch-up inserts whatever stream rows it replaced away. Every row must be there
    exactly once with its own content."""
    batch = frame(D1, [f"b{i}" for i in range(30)], n0=10_000)
    lake.replace_partitions("events", "t", batch, [D1])
    streamed(lake, D2, 3, prefix="other")
    stream_ids = [[f"s{b}-{i}" for i in range(3)] for b in range(40)]
    stop, errors = threading.Event(), []

    def stream():
        try:
            for b, ids in enumerate(stream_ids):
                Lake(lake.root).insert_unseen("events", "t", frame(D1, ids, n0=3 * b), key="event_id")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def compactor():
        try:
            while not stop.is_set():
                maintenance.compact(Lake(lake.root), "events", "t", {D1: 2, D2: 2}, now_ms=now_ms())
                time.sleep(0.02)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=stream), threading.Thread(target=compactor)]
    for th in threads:
        th.start()
    for _ in range(8):
        lake.replace_partitions("events", "t", batch, [D1])
        time.sleep(0.05)
    threads[0].join()
    stop.set()
    threads[1].join()
    assert not errors, errors
    # The catch-up of Engine.index_batch_day: stream rows the replaces removed come back once.
    for b, ids in enumerate(stream_ids):
        lake.insert_unseen("events", "t", frame(D1, ids, n0=3 * b), key="event_id")
    want = pl.concat([batch, *(frame(D1, ids, n0=3 * b) for b, ids in enumerate(stream_ids))]).sort("event_id")
    got = lake.read("events", "t", days=[D1]).sort("event_id")
    assert got.height == want.height == 150 and got["event_id"].n_unique() == 150
    assert_frame_equal(got, want, check_column_order=False)
    assert lake.read("events", "t", days=[D2]).height == 15
    history = lake.table("events", "t").history()
    assert sum(h["operation"] == "OPTIMIZE" for h in history) >= 1


def test_the_incremental_plan_takes_the_smallest_files_that_add_up_to_less_than_the_next():
    plan = maintenance.compaction_target
    assert plan([10] * 9, least=10, target_size=1000) is None  # too few
    assert plan([10] * 12, least=10, target_size=1000) == 120  # equal sizes: all of them
    # A compacted file of 120 stays while the new ones add up to less; joins them once they reach it.
    assert plan([120] + [10] * 11, least=10, target_size=1000) == 110
    assert plan([120] + [10] * 12, least=10, target_size=1000) == 240
    assert plan([500, 120] + [10] * 12, least=10, target_size=1000) == 240  # the 500 stays
    assert plan([1000, 2000] + [10] * 12, least=10, target_size=1000) == 120  # at the target: never taken
    assert plan([300] * 4, least=2, target_size=1000) == 1000  # no such set under the target: delta-rs packs
    # By rows, not bytes: a compacted file is smaller than its parts, and joins them when it holds
    # no more rows than they do together (else it stays, and they are packed under its size).
    assert plan([(25, 100)] * 12 + [(400, 1200)], least=10, target_size=1000) == 700
    assert plan([(25, 100)] * 12 + [(400, 2400)], least=10, target_size=1000) == 300
    assert plan([(25, 100)] * 12 + [(200, 2400)], least=10, target_size=1000) == 500  # not bigger: taken
    # A closed day: everything under the target into one file.
    assert plan([500, 120, 10], least=2, target_size=1000, whole=True) == 630
    assert plan([900, 300], least=2, target_size=1000, whole=True) == 1000
    assert plan([2000, 10], least=2, target_size=1000, whole=True) is None


def noisy(day: date, ids: list[str], rng) -> pl.DataFrame:
    """Rows that compress as little in a small file as in a big one (unlike ``frame``'s)."""
    return pl.DataFrame({"event_id": ids, "x": [rng.random() for _ in ids],
                         "emb": [[rng.random() for _ in range(4)] for _ in ids], "date": [day] * len(ids)})


def test_incremental_compaction_leaves_bigger_files_alone_and_rewrites_far_less_than_the_whole_day(lake):
    """Rounds of stream inserts, each followed by the five-minute compaction of the open day: the
    backfill's file (at the target size here) is never rewritten, the day stays at a few files,
    and the bytes rewritten are a fraction of rewriting the day's small files each round."""
    import random

    rng = random.Random(3)
    lake.replace_partitions("events", "t", noisy(D1, [f"b{i}" for i in range(30_000)], rng), [D1])
    (big,) = lake.table("events", "t").get_add_actions(flatten=True).column("path").to_pylist()
    target = lake.table("events", "t").get_add_actions(flatten=True).column("size_bytes")[0].as_py()
    rewritten = whole_day = 0
    counts = []
    for r in range(16):
        for b in range(12):
            lake.insert_unseen("events", "t", noisy(D1, [f"r{r}-{b}-{i}" for i in range(100)], rng), key="event_id")
        day = maintenance.partition_files(lake.table("events", "t")).row(0, named=True)
        whole_day += day["bytes"] - target  # what a compaction of every small file would rewrite
        before = lake.read("events", "t", days=[D1]).sort("event_id")
        done = maintenance.compact(lake, "events", "t", {D1: maintenance.COMPACT_MIN_FILES}, now_ms=now_ms(),
                                   target_size=target)
        assert_frame_equal(lake.read("events", "t", days=[D1]).sort("event_id"), before)
        rewritten += done.bytes_rewritten[D1]
        paths = lake.table("events", "t").get_add_actions(flatten=True).column("path").to_pylist()
        assert big in paths
        counts.append(len(paths))
    print(f"\nincremental: {rewritten:,} bytes rewritten over 16 rounds, against {whole_day:,} "
          f"rewriting the day's small files each round; files after each round {counts}")
    assert rewritten < whole_day / 2
    assert max(counts) <= 1 + 5  # the backfill's file and a binary counter's files
    # Once the day has closed, it is compacted whole.
    maintenance.compact(lake, "events", "t", {D1: 2}, now_ms=now_ms(), target_size=10 * target, whole=[D1])
    assert maintenance.partition_file_counts(lake, "events", "t") == {D1: 1}
    assert_frame_equal(lake.read("events", "t", days=[D1]).sort("event_id"), before)


def test_incremental_compaction_racing_stream_inserts_and_a_backfill_loses_and_doubles_nothing(lake):
    """As the race above, on a day that already holds a compacted file and the backfill's: each
    incremental compaction takes a different handful of the newest files while the stream adds
    more and the backfill replaces the day."""
    batch = frame(D1, [f"b{i}" for i in range(400)], n0=10_000)
    lake.replace_partitions("events", "t", batch, [D1])
    target = lake.table("events", "t").get_add_actions(flatten=True).column("size_bytes")[0].as_py()
    early = [[f"e{b}-{i}" for i in range(3)] for b in range(12)]
    for b, ids in enumerate(early):
        lake.insert_unseen("events", "t", frame(D1, ids, n0=5000 + 3 * b), key="event_id")
    maintenance.compact(lake, "events", "t", {D1: 2}, now_ms=now_ms(), target_size=target)
    stream_ids = [[f"s{b}-{i}" for i in range(3)] for b in range(30)]
    stop, errors, rounds = threading.Event(), [], []

    def stream():
        try:
            for b, ids in enumerate(stream_ids):
                Lake(lake.root).insert_unseen("events", "t", frame(D1, ids, n0=3 * b), key="event_id")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def compactor():
        try:
            while not stop.is_set():
                rounds.append(maintenance.compact(Lake(lake.root), "events", "t", {D1: 2}, now_ms=now_ms(),
                                                  target_size=target))
                time.sleep(0.02)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=stream), threading.Thread(target=compactor)]
    for th in threads:
        th.start()
    for _ in range(4):
        lake.replace_partitions("events", "t", batch, [D1])
        time.sleep(0.1)
    threads[0].join()
    stop.set()
    threads[1].join()
    assert not errors, errors
    for b, ids in enumerate(stream_ids):  # the catch-up, as in the race above
        lake.insert_unseen("events", "t", frame(D1, ids, n0=3 * b), key="event_id")
    want = pl.concat([batch, *(frame(D1, ids, n0=3 * b) for b, ids in enumerate(stream_ids))]).sort("event_id")
    got = lake.read("events", "t", days=[D1]).sort("event_id")
    assert got.height == want.height == 490 and got["event_id"].n_unique() == 490
    assert_frame_equal(got, want, check_column_order=False)
    assert sum(1 for r in rounds if r.days) >= 1


def _slip_in(monkeypatch, during_overwrite):
    """Run ``during_overwrite(real_commit)`` in place of the next overwrite commit: another writer
    commits between the version the replace read and its own commit."""
    real = DeltaTable.create_write_transaction
    calls: list[int] = []

    def commit(self, actions, mode, *args, **kwargs):
        if mode == "overwrite" and not calls:
            calls.append(1)
            return during_overwrite(lambda: real(self, actions, mode, *args, **kwargs))
        return real(self, actions, mode, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", commit)
    return calls


def test_a_day_whose_replace_still_has_to_drop_files_is_not_compacted(lake, monkeypatch):
    lake.replace_partitions("events", "t", frame(D1, ["a"]), [D1])
    other = Lake(lake.root)
    held: list[tuple] = []
    real_drop = Lake._drop_survivors

    def slipped(commit):
        for b in range(3):  # stream inserts land under the replace, with rows it also wrote
            other.insert_unseen("events", "t", frame(D1, [f"r{b}"], n0=100 + b), key="event_id")
        return commit()

    _slip_in(monkeypatch, slipped)
    monkeypatch.setattr(Lake, "_drop_survivors", lambda self, *a: held.append(a))  # the drop is late
    replace = frame(D1, ["a", "r0", "r1", "r2"])
    lake.replace_partitions("events", "t", replace, [D1])
    assert held and maintenance.partition_file_counts(lake, "events", "t") == {D1: 4}

    t = lake.table("events", "t")
    assert maintenance.replace_settling(lake, "events", "t", t, D1, now_ms())
    done = maintenance.compact(lake, "events", "t", {D1: 2}, now_ms=now_ms())
    assert not done.days and done.settling == [D1.isoformat()]
    # Later than REPLACE_SETTLE_MS a missing drop is no longer waited for.
    assert not maintenance.replace_settling(lake, "events", "t", t, D1, now_ms() + maintenance.REPLACE_SETTLE_MS + 1)

    real_drop(lake, *held[0])  # the drop lands: the day is what the replace wrote, and settled
    assert_frame_equal(rows(lake), replace.sort("event_id"))
    assert not maintenance.replace_settling(lake, "events", "t", lake.table("events", "t"), D1, now_ms())
    assert maintenance.compact(lake, "events", "t", {D1: 1}, now_ms=now_ms()).settling == []


def test_a_compaction_that_read_before_a_replace_landed_has_its_files_dropped_with_the_rows_it_moved(
        lake, monkeypatch):
    """The one compaction a replace lets through: it read the files committed under the replace
    (into a day that had none before it) and committed after the replace landed. The drop follows
    those rows into the compaction's file."""
    lake.replace_partitions("events", "t", frame(D2, ["other-day"]), [D2])
    other = Lake(lake.root)

    def slipped(commit):
        for b in range(3):
            other.insert_unseen("events", "t", frame(D1, [f"r{b}"], n0=100 + b), key="event_id")
        stale = other.table("events", "t")  # the compaction reads before the replace lands ...
        out = commit()
        stale.optimize.compact(partition_filters=[("date", "=", D1.isoformat())])  # ... and commits after
        return out

    calls = _slip_in(monkeypatch, slipped)
    replace = frame(D1, ["a", "r0", "r1", "r2"])
    lake.replace_partitions("events", "t", replace, [D1])
    assert calls
    ops = [h["operation"] for h in lake.table("events", "t").history(3)]
    assert "OPTIMIZE" in ops
    assert_frame_equal(lake.read("events", "t", days=[D1]).sort("event_id"), replace.sort("event_id"))
    assert lake.read("events", "t", days=[D2])["event_id"].to_list() == ["other-day"]


# ---- vacuum, checkpoints ----------------------------------------------------------------------


def _remove_with_time(lake: Lake, paths: list[str], deleted_ms: int) -> None:
    """Remove files from the table as if it had happened at ``deleted_ms``."""
    from deltalake.transaction import RemoveAction

    from seq_assets.storage.lake import add_actions

    t = lake.table("events", "t")
    live = {r["path"]: r for r in add_actions(t).iter_rows(named=True)}
    gone = [RemoveAction(p, True, deleted_ms, live[p]["size_bytes"], {"date": str(live[p]["partition.date"])})
            for p in paths]
    t.create_write_transaction(gone, mode="append", schema=t.schema(), partition_by=["date"])


def _written_at(lake: Lake, paths: list[str], ms: int) -> None:
    """Give data files of the table the modification time ``ms`` (as if written then)."""
    for path in paths:
        os.utime(Path(lake.uri("events", "t")) / path, (ms / 1000, ms / 1000))


def test_vacuum_deletes_old_files_no_version_in_the_log_retention_reads_and_keeps_the_rest(lake):
    lake.replace_partitions("events", "t", frame(D2, ["keep"]), [D2])
    streamed(lake, D1, 4)
    t = lake.table("events", "t")
    old = sorted(p for p in t.get_add_actions(flatten=True).column("path").to_pylist() if p.startswith(f"date={D1}"))
    _written_at(lake, old[:3], now_ms() - 200 * HOUR_MS)  # written before the retention; old[3] just now
    _remove_with_time(lake, old[:1], now_ms() - (maintenance.LOG_RETENTION_HOURS + 1) * HOUR_MS)
    _remove_with_time(lake, old[1:2], now_ms())
    version_before_removal = lake.table("events", "t").version() - 1
    maintenance.keep_properties(lake, "events", "t")
    maintenance.checkpoint(lake, "events", "t")  # its removal records dropped: vacuum lists storage
    on_disk = stored(lake)
    with pytest.raises(ValueError, match="minimum"):
        maintenance.vacuum(lake, "events", "t", 0)
    # old[0]: removed before the log retention; old[1]: a version inside it still reads it.
    assert maintenance.vacuum(lake, "events", "t", 168, dry_run=True) == (1, on_disk[old[0]])
    assert stored(lake) == on_disk
    assert maintenance.vacuum(lake, "events", "t", 168) == (1, on_disk[old[0]])
    left = stored(lake)
    assert old[0] not in left and all(p in left for p in old[1:])
    then = DeltaTable(lake.uri("events", "t"), version=version_before_removal)
    assert pl.scan_delta(then).collect().height == 3 * 5 + 1
    assert maintenance.vacuum(lake, "events", "t", 168) == (0, 0)  # a second run has nothing to delete
    # Hours later (a log retention of 0 here) old[1] goes too.
    assert maintenance.vacuum(lake, "events", "t", 168, log_retention_hours=0) == (1, on_disk[old[1]])
    assert lake.read("events", "t").height == 2 * 5 + 1
    # A compaction removes the other two: the one written just now stays by its age alone.
    maintenance.compact(lake, "events", "t", {D1: 2}, now_ms=now_ms())
    maintenance.checkpoint(lake, "events", "t")
    assert maintenance.vacuum(lake, "events", "t", 168, log_retention_hours=0)[0] == 1
    left = stored(lake)
    assert old[2] not in left and old[3] in left
    # Retentions of 0 (tests only) delete the recent one too.
    assert maintenance.vacuum(lake, "events", "t", 0, enforce_retention_duration=False, log_retention_hours=0)[0] == 1
    assert lake.read("events", "t").height == 2 * 5 + 1


def test_checkpoints_keep_no_removal_records_and_the_log_keeps_its_retention(lake):
    """Opening a table reads its whole last checkpoint: checkpoints keep no record of removed files,
    however recent, and the log keeps its commits for the log retention (hours)."""
    streamed(lake, D1, 3)
    paths = sorted(lake.table("events", "t").get_add_actions(flatten=True).column("path").to_pylist())
    assert maintenance.keep_properties(lake, "events", "t")
    assert not maintenance.keep_properties(lake, "events", "t")  # already set: no commit
    conf = lake.table("events", "t").metadata().configuration
    assert conf["delta.deletedFileRetentionDuration"] == maintenance.TOMBSTONE_RETENTION
    assert conf["delta.logRetentionDuration"] == f"interval {maintenance.LOG_RETENTION_HOURS} hours"
    _remove_with_time(lake, paths[:2], now_ms())
    version = maintenance.checkpoint(lake, "events", "t")[0]
    log = Path(lake.uri("events", "t")) / "_delta_log"
    assert pl.read_parquet(log / f"{version:020d}.checkpoint.parquet").get_column("remove").drop_nulls().len() == 0
    assert len(list(log.glob("*.json"))) == version + 1  # nothing older than two hours to clean up
    assert lake.read("events", "t").height == 5
    assert maintenance.vacuum(lake, "events", "t", 168) == (0, 0)  # written just now: kept


def test_a_file_no_commit_names_is_vacuumed_once_older_than_the_retention(lake):
    """A write that never committed (a writer killed between its files and its commit) leaves
    files no version reads: vacuum deletes them, but only once older than the retention, for a
    writer's commit may still be coming."""
    streamed(lake, D1, 1)
    orphan = Path(lake.uri("events", "t")) / f"date={D1}" / "part-never-committed.parquet"
    frame(D1, ["x"]).write_parquet(orphan)
    assert maintenance.vacuum(lake, "events", "t", 168) == (0, 0)
    os.utime(orphan, (time.time() - 169 * 3600,) * 2)
    assert maintenance.vacuum(lake, "events", "t", 168)[0] == 1
    assert not orphan.exists() and lake.read("events", "t").height == 5


def test_once_maintained_a_streamed_table_is_checkpointed_every_few_commits(lake):
    """The stream's own merges write a checkpoint every CHECKPOINT_INTERVAL commits once
    maintenance has set the property, so opening the table never replays more than that many."""
    streamed(lake, D1, 1)
    assert maintenance.keep_properties(lake, "events", "t")
    assert lake.table("events", "t").metadata().configuration["delta.checkpointInterval"] == \
        str(maintenance.CHECKPOINT_INTERVAL)
    before = rows(lake)
    streamed(lake, D1, 2 * maintenance.CHECKPOINT_INTERVAL, prefix="more")
    log = Path(lake.uri("events", "t")) / "_delta_log"
    version = lake.table("events", "t").version()
    checkpoints = sorted(int(p.name.split(".")[0]) for p in log.glob("*.checkpoint.parquet"))
    assert len(checkpoints) == 2 and checkpoints[1] - checkpoints[0] == maintenance.CHECKPOINT_INTERVAL
    assert version - checkpoints[-1] < maintenance.CHECKPOINT_INTERVAL
    assert rows(lake).height == before.height + 2 * maintenance.CHECKPOINT_INTERVAL * 5


def test_checkpoints_are_written_and_old_log_entries_cleaned(lake):
    streamed(lake, D1, 15)
    log = Path(lake.uri("events", "t")) / "_delta_log"
    assert len(list(log.glob("*.json"))) == 1 + 15 and not list(log.glob("*.checkpoint.parquet"))  # the create, the merges
    before = rows(lake)
    r = maintenance.maintain_table(lake, maintenance.TableSpec("events", "t"), scope="full", today=D2,
                                   now_ms=now_ms(), retention_hours=0, enforce_retention_duration=False,
                                   log_retention_hours=0)  # tests only: the setting's minimum is an hour
    version = lake.table("events", "t").version()
    assert r.checkpoint_version == version
    assert (log / f"{version:020d}.checkpoint.parquet").exists() and (log / "_last_checkpoint").exists()
    assert [p.name for p in log.glob("*.json")] == [f"{version:020d}.json"]  # the rest is cleaned up
    assert r.log_files_deleted >= 15
    assert_frame_equal(rows(lake), before)
    assert_frame_equal(rows(Lake(lake.root)), before)  # a fresh reader opens it from the checkpoint


# ---- retention --------------------------------------------------------------------------------


def test_retention_drops_the_days_each_definition_no_longer_keeps(lake, compiled):
    today = date(2027, 6, 30)
    specs = {s.label: s for s in maintenance.lake_tables(compiled)}
    raw, dead = specs["raw/user_engagements"], specs["dead_letter/user_engagements"]
    events, seqs = specs["events/pin_click"], specs["sequences/engagements_v1"]
    assert raw.retention_days == dead.retention_days == compiled.sources["user_engagements"]["retention_days"] == 400
    assert events.retention_days == compiled.event_types["pin_click"]["retention_days"]
    assert seqs.retention_days == compiled.features["engagements_v1"]["snapshot_retention_days"] == 35
    assert specs["enrichments/item_category"].retention_days is None
    ages = (0, 1, 35, 36, 400, 401, 500)
    for spec in (raw, dead, events, seqs):
        for age in ages:
            day = today - timedelta(days=age)
            lake.replace_partitions(spec.kind, spec.name, frame(day, [f"{spec.kind}-{age}"]), [day])
    lake.replace_partitions("metrics", "late_arrivals", frame(today - timedelta(days=900), ["m"]),
                            [today - timedelta(days=900)])
    all_specs = maintenance.lake_tables(compiled, lake)
    assert [s.label for s in all_specs if s.label not in specs] == ["metrics/late_arrivals"]
    reports = {r.table: r for r in maintenance.maintain_lake(
        lake, [s for s in all_specs if s.label in ("metrics/late_arrivals", raw.label, dead.label, events.label,
                                                   seqs.label)],
        scope="full", today=today, now_ms=now_ms(), retention_hours=168)}

    def kept(spec):
        return sorted((today - d).days for d in lake.read(spec.kind, spec.name)["date"].to_list())

    for spec in (raw, dead, events):
        assert kept(spec) == [a for a in ages if a <= spec.retention_days]
        assert reports[spec.label].partitions_dropped == len([a for a in ages if a > spec.retention_days])
    assert kept(seqs) == [0, 1, 35]
    assert reports[seqs.label].partitions_dropped == 4 and reports[seqs.label].rows_dropped == 4
    assert lake.read("metrics", "late_arrivals").height == 1  # no retention defined: kept


# ---- dry run ----------------------------------------------------------------------------------


def test_a_dry_run_changes_nothing_and_says_what_a_run_would_do(lake):
    streamed(lake, D1, 20)
    lake.replace_partitions("events", "t", frame(D1 - timedelta(days=30), ["old"]), [D1 - timedelta(days=30)])
    maintenance.compact(lake, "events", "t", {D1: 100}, now_ms=now_ms())  # nothing
    spec = maintenance.TableSpec("events", "t", retention_days=10)
    files, version = stored(lake), lake.table("events", "t").version()
    mtimes = {p: os.stat(Path(lake.uri("events", "t")) / p).st_mtime_ns for p in files}
    dry = maintenance.maintain_table(lake, spec, scope="full", today=D2, now_ms=now_ms(), retention_hours=0,
                                     enforce_retention_duration=False, dry_run=True, log_retention_hours=0)
    assert stored(lake) == files and lake.table("events", "t").version() == version
    assert {p: os.stat(Path(lake.uri("events", "t")) / p).st_mtime_ns for p in files} == mtimes
    assert dry.dry_run and dry.files_before == 21 and dry.partitions_dropped == 1
    assert (dry.partitions_compacted, dry.files_compacted, dry.files_written) == (1, 20, 1)
    assert dry.files_after == 1 and dry.max_partition_files_after == 1
    real = maintenance.maintain_table(lake, spec, scope="full", today=D2, now_ms=now_ms(), retention_hours=0,
                                      enforce_retention_duration=False, log_retention_hours=0)
    for k in ("files_before", "files_after", "partitions_dropped", "partitions_compacted", "files_compacted",
              "files_written", "max_partition_files_after"):
        assert getattr(real, k) == getattr(dry, k), k
    assert real.files_deleted == 21 and real.bytes_reclaimed > 0


def test_select_tables_refuses_an_unknown_name(compiled):
    specs = maintenance.lake_tables(compiled)
    assert [s.label for s in maintenance.select_tables(specs, ["events/pin_save"])] == ["events/pin_save"]
    with pytest.raises(ValueError, match="unknown table.*events/nope"):
        maintenance.select_tables(specs, ["events/nope"])
