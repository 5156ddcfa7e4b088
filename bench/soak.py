"""Soak benchmark: a day of streaming compressed into minutes, with maintenance and without.

    .venv/bin/python bench/soak.py                  # 720 micro-batches: a whole day, one every 2 minutes
    .venv/bin/python bench/soak.py --batches 180    # a quick run (the day's first 6 hours)
    make soak SOAK_ARGS="--batches 180"

The default is one simulated UTC day, 00:00 to 24:00, in 720 micro-batches of ~200 records, one
every 2 simulated minutes: every maintenance tick of a day (288 of ``compact_streamed_days``, the
daily run at 01:30, ``compact_on_file_count`` after every batch, its 30 s being shorter than a
batch) and 720 stream commits into each table's day. ``make dev`` runs a micro-batch every 5 s of
~100 records (20 events/s): 17,280 commits a day, which at 0.25 s (idle) to 1.5 s (loaded) each
through the real write path is hours to replay. So this is the day's schedule, its maintenance and
a log of hundreds of commits per table, at 1/24 of its commits and 1/12 of its rows (~140,000
records; the 720 files a day has without maintenance are still 14 times the target);
``--batches 1440 --interval 60 --records 100`` is the same day in micro-batches of ``make dev``'s
size (about twice the time), ``--batches 17280 --interval 5`` the literal one. The stream is the
demo producer's live events (``LiveEvents``: sessions, ~2% duplicates, malformed records, late events
1-3 days back) with their event times on simulated time. Each batch is written by the stream's
own write path (``seq_assets.kafka.microbatch.index_records``: the insert-only merges into
``raw/``, ``dead_letter/``, ``metrics/`` and every ``events/`` table) into the lake **with
maintenance**, kept as ``make dev`` keeps it: the maintenance schedules of the code location
(``compact_streamed_days``, ``maintain_lake_daily``) at their cron ticks in simulated time, and the
``compact_on_file_count`` sensor every 30 simulated seconds (its own check,
``orchestration.maintenance.tables_past_trigger``, on the simulated day); each run asked for is done
with the function the ``maintain_lake`` job's op calls (``storage.maintenance.maintain_lake``, the
run config's scope, tables and ``today``, the wall clock as ``now_ms``,
``settings.vacuum_retention_hours()`` and ``settings.log_retention_hours()``, the definitions' late
horizon). At the end one more full run with vacuum and log retentions of 0 hours, so the bytes left
on disk can be set against the live bytes.

The lake **without maintenance** gets the very same stream commits: after each micro-batch, every
commit the stream made to the maintained lake is committed to it too (one append commit per table
and micro-batch, of the same data files, hard-linked, with their statistics), and the maintenance
commits are not. Its tables are then exactly what the stream alone would have written (an
insert-only merge adds the same rows whatever the compaction did, and nothing else ever reads
them), without paying its merges: a merge reads every file of the days it touches, so with 720
files a day each batch would take seconds and the run hours.

**Start and end hold the same amount of data**, so the end/start ratios measure what a long run
does to the lake (its log of every micro-batch commit, checkpoints, compactions, the files left),
not how much data it holds. Before the first micro-batch the day before the stream's is seeded with
as many rows as the stream will have put into its own day when it is read at the end (the distinct
valid rows of that day in the micro-batches before the last ``--poll-window``, counted beforehand): the same producer a day earlier (another seed, so no event id is
shared), written as the batch path writes a closed day, one replace of the day in ``raw/`` and one
per ``events/`` table (``Engine.index_batch_day``); its commits are replayed into the other lake.
The maintained lake then gets the daily maintenance run of the streamed day (the ``maintain_lake``
job's full scope: its table properties, a checkpoint of every table), as a lake the platform has
kept for days has had; the other lake is never maintained. Both lakes are then copied aside:
those copies are the *start* (one file per day; the maintained one opens from a checkpoint, the
other from its one commit). At the end each figure is read at one moment on the start copy and on the lake in turn
(``--repeat`` times, the median): the time to open ``raw/`` and every ``events/`` table
(``Lake.table``); a one-day scan of every ``events/`` table (``Lake.read(..., days=[day])``), of
the seeded day on the start copy and of the streamed day on the lake (the rows of both are printed;
the ratio per row read is printed too); then the serving poll (``SequenceService.refresh`` right
after a micro-batch lands, as ``seqctl serve`` polls every 2 s: the start copies are given the
stream's first ``--poll-window`` batches, the lakes its last ones, one each in turn; the first poll
of each catches up, untimed). Also: the most files of any day of ``raw/`` and ``events/`` at the
end and at their peak (followed commit by commit in the tables' logs), the bytes maintenance
rewrote, and after the final vacuum the bytes under the table folders (data and log) against the
live bytes of the current versions. Readings along the way (every ``--every`` batches, of the
streamed day as it grows) go to stderr. No timed assertions.

Compressed time: the stream's commits come many times faster than in ``make dev``, so maintenance
sees more commits per wall-clock minute (its replace-settling look-back is in wall-clock time), and
a run the sensor asks for is done at once (in ``make dev`` it starts within a second on a warm run
worker while the stream goes on). ``close_days`` (00:30 UTC, a batch recompute of the late-arrival
horizon) is not run: it is not maintenance, and it would rewrite the late days of ``events/`` on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl

SOURCE = "user_engagements"
TARGETS = {"files": 50, "open": 1.5, "scan": 1.5, "poll": 1.5, "bytes": 1.3}
SIDES = ("with", "without")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


class Clock:
    """Simulated time: batch ``i`` is taken at the end of its interval."""

    def __init__(self, a):
        day = date.fromisoformat(a.day)
        self.day = day
        self.day_ms = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000)
        self.start_ms = self.day_ms + int(a.start_hour * 3_600_000)
        self.interval_ms = int(a.interval * 1000)
        self.end_ms = self.start_ms + a.batches * self.interval_ms

    def batch_end(self, i: int) -> int:
        """The last millisecond of batch ``i``'s interval (a whole day's last batch stays in the day)."""
        return self.start_ms + (i + 1) * self.interval_ms - 1


def _hhmm(clock: Clock, ms: int) -> str:
    """The time of day of ``ms``; the end of the simulated day is 24:00."""
    return "24:00" if ms == clock.day_ms + 86_400_000 else f"{_utc(ms):%H:%M}"


# ---- the stream, the lookups, the schedules (in the parent) ---------------------------------


def make_batches(a, clock: Clock, partitions: int, shift_ms: int = 0, seed: int | None = None) -> pl.DataFrame:
    """The producer's live events over ``batches * interval`` simulated seconds, as Kafka records
    with a ``batch`` column: each record goes to the batch of the interval in which it is sent.
    ``shift_ms`` moves the whole stream in time (the seeded day is the same stream a day earlier)."""
    from seq_assets.devtools.produce import LiveEvents

    seed = a.seed if seed is None else seed
    live = LiveEvents(a.records / a.interval, a.batches * a.interval, seed=seed, users=a.users, items=a.items,
                      start_ms=clock.start_ms + shift_ms, pace=False)
    frame = pl.concat([live.segment_frame(*seg) for seg in live.segments])
    frame = frame.with_columns(
        batch=((pl.col("send_ms") - clock.start_ms - shift_ms) // clock.interval_ms).clip(0, a.batches - 1)
        .cast(pl.Int64),
        kafka_partition=(pl.col("key").hash(seed) % partitions).fill_null(0).cast(pl.Int32),
    ).with_columns(kafka_offset=pl.int_range(pl.len(), dtype=pl.Int64).over("kafka_partition"))
    return frame.select("batch", "value", "key", "kafka_partition", "kafka_offset", pl.col("send_ms").alias("kafka_ts"))


def write_enrichment_snapshots(a, compiled, landing: Path, day: date) -> None:
    """The demo lookup snapshots of the day and the 3 before it (late events reach back 3 days)."""
    from seq_assets.devtools.demo_data import DemoSpec, generate_enrichment_snapshots

    snaps = generate_enrichment_snapshots(DemoSpec(users=a.users, days=4, events=a.records, seed=a.seed,
                                                   end_date=day, items=a.items))
    for name, e in compiled.enrichments.items():
        for d, snap in snaps.get(name, {}).items() if e["kind"] == "lookup" else ():
            path = landing / e["snapshot_location"] / f"date={d.isoformat()}" / "snapshot.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            snap.write_parquet(path)


def seed_previous_day(a, side, clock: Clock, partitions: int, rows: int) -> dict:
    """The day before the stream's, written as the batch path writes a closed day: the same
    producer's stream a day earlier (another seed, so no event id is shared with the streamed day),
    decoded, its valid rows of that day deduplicated and cut to ``rows`` (the rows the soak streams
    into its own day), then one replace of the day in ``raw/`` and one per ``events/`` table
    (``Engine.index_batch_day``)."""
    from seq_assets.core.engine import BATCH_ORIGIN, first_per_key
    from seq_assets.kafka.microbatch import decode_chunk

    day = clock.day - timedelta(days=1)
    frame = make_batches(a, clock, partitions, shift_ms=-86_400_000, seed=a.seed + 1)
    decoded = decode_chunk(side.engine, SOURCE, frame.drop("batch"), _utc(clock.start_ms - 86_400_000))
    eid = side.compiled.sources[SOURCE]["event_id_field"]
    valid = (first_per_key(decoded.valid, eid).filter(pl.col("date") == day).head(rows)
             .with_columns(pl.lit(BATCH_ORIGIN).alias("origin")))
    side.lake.replace_partitions("raw", SOURCE, valid, [day])
    events = side.engine.index_batch_day(SOURCE, day)
    return {"day": day, "raw_rows": valid.height,
            "events_rows": sum(int(df.filter(pl.col("date") == day).height) for df in events.values())}


def streamed_day_rows(side, frame: pl.DataFrame, day: date) -> int:
    """The distinct valid rows of ``day`` in ``frame``'s records: what ``raw/`` holds of it once they are written."""
    from seq_assets.core.engine import first_per_key
    from seq_assets.kafka.microbatch import decode_chunk

    decoded = decode_chunk(side.engine, SOURCE, frame.drop("batch"), _utc(int(frame.get_column("kafka_ts").max())))
    eid = side.compiled.sources[SOURCE]["event_id_field"]
    return first_per_key(decoded.valid, eid).filter(pl.col("date") == day).height


def maintenance_ticks(compiled, start_ms: int, end_ms: int) -> list[tuple[int, str, dict]]:
    """(tick ms, schedule name, the ``maintain_tables`` config its run asks for) for every tick in
    [start_ms, end_ms] of every schedule of the code location's maintenance definitions."""
    import dagster as dg
    from dagster._utils.schedules import cron_string_iterator

    from seq_assets.orchestration.maintenance import maintenance_defs

    ticks = []
    for sched in maintenance_defs(compiled).schedules:
        crons = [sched.cron_schedule] if isinstance(sched.cron_schedule, str) else list(sched.cron_schedule)
        for cron in crons:
            for t in cron_string_iterator(start_ms / 1000, cron, sched.execution_timezone or "UTC"):
                ms = int(t.timestamp() * 1000)
                if ms > end_ms:
                    break
                data = sched.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=t))
                for req in data.run_requests or []:
                    ticks.append((ms, sched.name, req.run_config["ops"]["maintain_tables"]["config"]))
    return sorted(ticks, key=lambda x: x[0])


SENSOR_EVERY_MS = 30_000  # compact_on_file_count's minimum interval


def _log_commits(table_dir: Path, after: int) -> list[tuple[int, list[dict]]]:
    """The commits of a local table after version ``after``, oldest first, as their log actions."""
    out = []
    v = after + 1
    while (f := table_dir / "_delta_log" / f"{v:020d}.json").exists():
        out.append((v, [json.loads(line) for line in f.read_text().splitlines() if line.strip()]))
        v += 1
    return out


class Follower:
    """Follows the streamed tables of a maintained lake commit by commit: the live files of every
    day (for the peak), the bytes compactions rewrote, and, given a ``twin`` lake, the stream's
    commits replayed into it (the same files, hard-linked; no maintenance commit)."""

    STREAMED = ("raw", "dead_letter", "events", "metrics")

    def __init__(self, lake, twin=None):
        self.lake, self.twin = lake, twin
        self.version: dict[str, int] = {}
        self.live: dict[str, dict[str, str]] = {}  # table -> path -> day
        self.twin_files: dict[str, dict[str, int]] = {}  # table -> day -> files
        self.peak = {"files": 0, "table": None, "day": None}
        self.twin_peak = {"files": 0, "table": None, "day": None}
        self.rewritten = 0
        self.schemas: dict = {}  # table -> its schema, as of its last metadata change
        self.twin_tables: dict = {}  # table -> the twin's DeltaTable, kept up to date by its commits

    def tables(self) -> list[str]:
        root = Path(self.lake.root)
        return [f"{k}/{t.name}" for k in self.STREAMED if (root / k).is_dir()
                for t in sorted((root / k).iterdir()) if (t / "_delta_log").is_dir()]

    def follow(self) -> None:
        from deltalake import DeltaTable

        for label in self.tables():
            src = Path(self.lake.root) / label
            live = self.live.setdefault(label, {})
            for version, actions in _log_commits(src, self.version.get(label, -1)):
                self.version[label] = version
                info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
                adds = [a["add"] for a in actions if "add" in a]
                removes = [a["remove"] for a in actions if "remove" in a]
                for r in removes:
                    live.pop(r["path"], None)
                for a in adds:
                    live[a["path"]] = a["partitionValues"]["date"]
                if info.get("operation") == "OPTIMIZE":
                    self.rewritten += sum(int(r.get("size") or 0) for r in removes)
                elif self.twin is not None and adds and all(a.get("dataChange", True) for a in adds):
                    assert not removes, f"{label} v{version}: a stream commit that removes files"
                    if label not in self.schemas or any("metaData" in a for a in actions):
                        self.schemas[label] = DeltaTable(str(src), version=version).schema()
                    self._replay(label, self.schemas[label], adds)
            self.peak = _most(self.peak, label, live.values())

    def _replay(self, label: str, schema, adds: list[dict]) -> None:
        from deltalake.transaction import AddAction, create_table_with_add_actions

        src, dst = Path(self.lake.root) / label, Path(self.twin.root) / label
        actions = []
        for a in adds:
            (dst / a["path"]).parent.mkdir(parents=True, exist_ok=True)
            os.link(src / a["path"], dst / a["path"])
            actions.append(AddAction(a["path"], int(a["size"]), a["partitionValues"], int(a["modificationTime"]),
                                     True, a.get("stats")))
        kind, name = label.split("/", 1)
        table = self.twin_tables.get(label) or self.twin.table(kind, name)
        if table is None:
            create_table_with_add_actions(str(dst), schema, actions, mode="error", partition_by=["date"])
            self.twin_tables[label] = self.twin.table(kind, name)
        else:  # only this process writes the twin: its table object is its state
            self.twin_tables[label] = table
            table.create_write_transaction(actions, mode="append", schema=schema, partition_by=["date"])
            table.update_incremental()
        counts = self.twin_files.setdefault(label, {})
        for a in adds:
            day = a["partitionValues"]["date"]
            counts[day] = counts.get(day, 0) + 1
        self.twin_peak = _most(self.twin_peak, label, [d for d, n in counts.items() for _ in range(n)])


def _most(best: dict, label: str, days) -> dict:
    """``best`` or, when a day of ``days`` (one entry per file) has more files, that day."""
    from collections import Counter

    if not label.startswith(("raw/", "events/")):
        return best
    top = Counter(days).most_common(1)
    if top and top[0][1] > best["files"]:
        return {"files": top[0][1], "table": label, "day": top[0][0]}
    return best


class Lakeside:
    """A lake, its engine, the maintenance due on it and a serving service over it."""

    def __init__(self, root: Path, compiled, landing, ticks: list[tuple[int, str, dict]], maintained: bool):
        from seq_assets.core.engine import Engine
        from seq_assets.storage.lake import Lake

        self.root = root
        self.lake = Lake(str(root))
        self.engine = Engine(compiled, self.lake, landing)
        self.compiled = compiled
        self.ticks, self.next_tick = ticks, 0
        self.maintained = maintained
        self.next_sensor_ms: int | None = None
        self.service = None
        self.write_s: list[float] = []
        self.maint_s = 0.0
        self.maint_runs: dict[str, int] = {}
        self.polls: list[float] = []

    def tables(self) -> list[tuple[str, str]]:
        return [("raw", SOURCE), *(("events", et) for et in self.compiled.event_types)]

    def write(self, records: pl.DataFrame, batch_id: str, now_ms: int) -> None:
        """The stream's micro-batch, then the maintenance due by its simulated time."""
        from seq_assets.kafka.microbatch import index_records

        t = time.perf_counter()
        if records.height:
            index_records(self.engine, SOURCE, records, batch_id=batch_id, now=_utc(now_ms))
        self.write_s.append(time.perf_counter() - t)
        if not self.maintained:
            return
        while self.next_tick < len(self.ticks) and self.ticks[self.next_tick][0] <= now_ms:
            _, name, config = self.ticks[self.next_tick]
            self.next_tick += 1
            self.maintain(name, config)
        if self.next_sensor_ms is None or now_ms >= self.next_sensor_ms:
            self.next_sensor_ms = now_ms + SENSOR_EVERY_MS
            self.sense(_utc(now_ms).date())

    def sense(self, today: date) -> None:
        """One evaluation of compact_on_file_count on the simulated day, and the run it asks for."""
        from seq_assets.orchestration.maintenance import (
            count_triggered_config,
            tables_past_trigger,
        )

        t = time.perf_counter()
        over = tables_past_trigger(self.lake, self.compiled, today)
        self.maint_s += time.perf_counter() - t
        if over:
            self.maintain("compact_on_file_count", count_triggered_config(today, over))

    def maintain(self, trigger: str, config: dict, **override) -> list:
        """What the ``maintain_lake`` job's op does with this run config."""
        from seq_assets import settings
        from seq_assets.storage import maintenance

        t = time.perf_counter()
        specs = maintenance.select_tables(maintenance.lake_tables(self.compiled, self.lake), config.get("tables") or [])
        kw = {"retention_hours": settings.vacuum_retention_hours(),
              "log_retention_hours": settings.log_retention_hours(), **override}
        reports = maintenance.maintain_lake(self.lake, specs, scope=config.get("scope", "full"),
                                            today=date.fromisoformat(config["today"]), now_ms=int(time.time() * 1000),
                                            horizon_days=self.compiled.horizon_days(),
                                            dry_run=bool(config.get("dry_run", False)), **kw)
        self.maint_s += time.perf_counter() - t
        self.maint_runs[trigger] = self.maint_runs.get(trigger, 0) + 1
        return reports

    def serve(self) -> None:
        from seq_assets.serving.service import SequenceService

        self.service = SequenceService(self.compiled, self.lake)

    def poll(self, timed: bool) -> None:
        t = time.perf_counter()
        self.service.refresh()
        if timed:
            self.polls.append(time.perf_counter() - t)

    def take_polls(self) -> float | None:
        polls, self.polls = self.polls, []
        return statistics.median(polls) if polls else None

    def files(self) -> dict:
        """The most files of any day over raw/ and events/, where, and the most per day."""
        from seq_assets.storage.maintenance import partition_files

        worst = {"files": 0, "table": None, "day": None}
        by_day: dict[date, int] = {}
        for kind, name in self.tables():
            t = self.lake.table(kind, name)
            if t is None:
                continue
            for d, n in partition_files(t).select("date", "files").iter_rows():
                by_day[d] = max(by_day.get(d, 0), int(n))
                if n > worst["files"]:
                    worst = {"files": int(n), "table": f"{kind}/{name}", "day": d.isoformat()}
        return {**worst, "by_day": {d.isoformat(): n for d, n in sorted(by_day.items())}}

    def open_all(self) -> None:
        for kind, name in self.tables():
            self.lake.table(kind, name)

    def scan_day(self, day: date) -> int:
        """A one-day scan of every events/ table; returns the rows read."""
        return sum(self.lake.read("events", et, days=[day]).height for et in self.compiled.event_types)

    def disk_bytes(self) -> dict:
        """Bytes under every table folder (data files and log) against the live files' bytes."""
        from seq_assets.storage.lake import add_actions
        from seq_assets.storage.maintenance import lake_tables

        disk = live = log = 0
        for spec in lake_tables(self.compiled, self.lake):
            t = self.lake.table(spec.kind, spec.name)
            if t is None:
                continue
            live += int(add_actions(t).get_column("size_bytes").sum() or 0)
            for dirpath, _, names in os.walk(self.root / spec.kind / spec.name):
                size = sum(os.path.getsize(os.path.join(dirpath, n)) for n in names)
                disk += size
                log += size if "_delta_log" in dirpath else 0
        return {"disk": disk, "live": live, "log": log, "ratio": disk / live if live else None}


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _copy_lake(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)


def run_lakes(a, work: Path, ticks) -> dict:
    """Both lakes: the seeded day, the start copies, the stream batch by batch, then the readings
    at the end."""
    from seq_assets.settings import load_compiled
    from seq_assets.storage.landing import Landing

    compiled = load_compiled()
    clock = Clock(a)
    frame = pl.read_parquet(work / "batches.parquet")
    empty = frame.drop("batch").clear()
    parts = {k[0]: g.drop("batch") for k, g in frame.group_by("batch", maintain_order=True)}
    batches = [parts.get(i, empty) for i in range(a.batches)]
    del parts
    landing = Landing(str(work / "landing"))
    with_ = Lakeside(work / "with" / "lake", compiled, landing, ticks, maintained=True)
    without = Lakeside(work / "without" / "lake", compiled, landing, [], maintained=False)
    for side in (with_, without):
        for e, spec in compiled.enrichments.items():
            if spec["kind"] == "lookup":
                for d in (clock.day - timedelta(days=i) for i in range(3, -1, -1)):
                    side.engine.write_enrichment_day(e, d)
    follow = Follower(with_.lake, twin=without.lake)
    # The seeded day: written once into the maintained lake, its commits replayed into the other.
    rows = streamed_day_rows(with_, frame.filter(pl.col("batch") < a.batches - a.poll_window), clock.day)
    del frame
    seeded = seed_previous_day(a, with_, clock, int(compiled.sources[SOURCE].get("kafka_partitions") or 1), rows)
    follow.follow()
    _log(f"seeded {seeded['day']}: {seeded['raw_rows']:,} raw rows ({rows:,} will be streamed into {clock.day}), "
         f"{seeded['events_rows']:,} events")
    # The maintained lake starts as maintenance keeps it: the daily run of the streamed day (its
    # table properties, a checkpoint of every table) has gone over the seeded day, as it would
    # have on a lake running for days; the other lake was never maintained.
    with_.maintain("start", {"scope": "full", "today": clock.day.isoformat()})
    with_.maint_s, with_.maint_runs = 0.0, {}
    follow.follow()
    # The start: both lakes before the first micro-batch, copied aside.
    for name in SIDES:
        _copy_lake(work / name / "lake", work / name / "start")
    start_follow = {"version": dict(follow.version), "live": {k: dict(v) for k, v in follow.live.items()}}
    with_.serve()
    without.serve()
    W = a.poll_window
    last = a.batches - W  # the last W batches are written at the end, in turn with the start copies'
    points = sorted(set(range(a.every, last, a.every)))
    windows = {p - k for p in points for k in range(W)}
    trace = []
    # The twin follows on a thread of its own while the next micro-batch is written (it only reads
    # commits already in the log); it has caught up whenever either lake is read or copied.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="soak-follow")
    pending = pool.submit(follow.follow)
    for i in range(last):
        with_.write(batches[i], f"{SOURCE}@soak-{i}", clock.batch_end(i))
        pending.result()
        pending = pool.submit(follow.follow)
        n = i + 1
        if n in windows or n in points:
            pending.result()
        if n in windows:  # both poll right after a micro-batch lands
            for side in (with_, without):
                side.poll(timed=n - 1 in windows)  # the first of a window catches up, untimed
        if n in points:
            line = []
            for name, side in zip(SIDES, (with_, without)):
                f = side.files()
                open_s = statistics.median(_timed(side.open_all) for _ in range(a.repeat))
                scan_s = statistics.median(_timed(lambda side=side: side.scan_day(clock.day)) for _ in range(a.repeat))
                trace.append({"side": name, "batch": n, **f, "open_s": open_s, "scan_s": scan_s,
                              "poll_s": side.take_polls()})
                line.append(f"{name} {f['files']:>4} files ({f['table']} {f['day']}), open {open_s * 1e3:5.1f} ms, "
                            f"scan {scan_s * 1e3:6.1f} ms")
            _log(f"batch {n:>5} {_utc(clock.batch_end(i)):%H:%M}: " + "; ".join(line)
                 + f"; write {statistics.mean(with_.write_s[-a.every:]) * 1e3:4.0f} ms/batch, maintenance "
                   f"{with_.maint_s:5.1f} s, peak {follow.peak['files']} / {follow.twin_peak['files']} files")

    pending.result()
    pool.shutdown()
    # The end: the start copies and the lakes, read in turn. First the opens and the one-day scans
    # (the start copies as they were copied: the seeded day, one file per day; the lakes: the
    # streamed day after the whole stream), then the polls.
    start_with = Lakeside(work / "with" / "start", compiled, landing, ticks, maintained=True)
    start_without = Lakeside(work / "without" / "start", compiled, landing, [], maintained=False)
    start_follower = Follower(start_with.lake, twin=start_without.lake)
    start_follower.version, start_follower.live = start_follow["version"], start_follow["live"]
    pairs = {"with": (start_with, with_), "without": (start_without, without)}
    scan_days = (seeded["day"], clock.day)
    readings = {name: {"open_s": ([], []), "scan_s": ([], [])} for name in SIDES}
    for _ in range(a.repeat):
        for name, (s0, s1) in pairs.items():
            for slot, lk in enumerate((s0, s1)):
                readings[name]["open_s"][slot].append(_timed(lk.open_all))
                readings[name]["scan_s"][slot].append(_timed(lambda lk=lk, d=scan_days[slot]: lk.scan_day(d)))
    scanned = {name: (s0.scan_day(scan_days[0]), s1.scan_day(scan_days[1])) for name, (s0, s1) in pairs.items()}
    # The polls: the start copies go on with the first micro-batches, the lakes with the last ones.
    for side in (start_with, start_without):
        side.serve()
    for side in (with_, without):
        side.poll(timed=False)
    for k in range(W):
        j, i = k, last + k
        start_with.write(batches[j], f"{SOURCE}@soak-{j}", clock.batch_end(j))
        start_follower.follow()
        with_.write(batches[i], f"{SOURCE}@soak-{i}", clock.batch_end(i))
        follow.follow()
        for side in (start_with, with_, start_without, without):
            side.poll(timed=k > 0)
    results = {}
    for name, (s0, s1) in pairs.items():
        r = readings[name]
        results[name] = {
            "start": {"open_s": statistics.median(r["open_s"][0]), "scan_s": statistics.median(r["scan_s"][0]),
                      "poll_s": s0.take_polls(), "rows": scanned[name][0], "day": scan_days[0].isoformat()},
            "end": {"open_s": statistics.median(r["open_s"][1]), "scan_s": statistics.median(r["scan_s"][1]),
                    "poll_s": s1.take_polls(), "rows": scanned[name][1], "day": scan_days[1].isoformat(),
                    "versions": {f"{k}/{n}": s1.lake.table(k, n).version() for k, n in s1.tables()}},
            "files": s1.files(), "write_s_first": statistics.mean(with_.write_s[:a.every]),
            "write_s_last": statistics.mean(with_.write_s[-a.every:]), "write_s_total": sum(with_.write_s),
            "trace": [t for t in trace if t["side"] == name],
        }
    for name, side in pairs.items():
        results[name]["bytes_before_vacuum"] = side[1].disk_bytes()
    t = time.perf_counter()
    reports = with_.maintain("final (vacuum and log retention 0 h)", {"scope": "full", "today": clock.day.isoformat()},
                             retention_hours=0, enforce_retention_duration=False, log_retention_hours=0)
    final_s = time.perf_counter() - t
    follow.follow()
    for name, side in pairs.items():
        results[name]["bytes"] = side[1].disk_bytes()
        results[name]["after_final"] = side[1].files()
    results["with"].update(
        peak=follow.peak, rewritten=follow.rewritten, maint_s=with_.maint_s - final_s, final_s=final_s,
        maint_runs={k: v for k, v in with_.maint_runs.items() if not k.startswith("final")},
        final={"files_deleted": sum(r.files_deleted for r in reports),
               "bytes_reclaimed": sum(r.bytes_reclaimed for r in reports)})
    results["without"].update(peak=follow.twin_peak, rewritten=0, maint_s=0.0, final_s=0.0, maint_runs={}, final={})
    return results


# ---- the run and the summary ----------------------------------------------------------------


def run(a) -> dict:
    from seq_assets.settings import load_compiled

    compiled = load_compiled()
    src = compiled.sources[SOURCE]
    clock = Clock(a)
    if clock.end_ms > clock.day_ms + 86_400_000:
        raise SystemExit(f"{a.batches} batches of {a.interval:g} s from {a.start_hour:g}h do not fit in {clock.day}: "
                         "fewer batches or an earlier --start-hour")
    work = Path(a.workdir)
    for old in (*SIDES, "landing", "batches.parquet"):
        shutil.rmtree(work / old, ignore_errors=True) if (work / old).is_dir() else (work / old).unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    _log(f"generating {a.batches:,} micro-batches of ~{a.records} records: {a.batches * a.interval / 3600:.2f} h of "
         f"stream on {clock.day}, {_utc(clock.start_ms):%H:%M} to {_hhmm(clock, clock.end_ms)} UTC")
    frame = make_batches(a, clock, int(src.get("kafka_partitions") or 1))
    frame.write_parquet(work / "batches.parquet")
    write_enrichment_snapshots(a, compiled, work / "landing", clock.day)
    ticks = maintenance_ticks(compiled, clock.start_ms, clock.end_ms)
    _log("maintenance due on the lake with it (and compact_on_file_count every 30 s): " + ", ".join(
        f"{n} x{sum(1 for t in ticks if t[1] == n)}" for n in dict.fromkeys(t[1] for t in ticks)))
    t = time.perf_counter()
    results = run_lakes(a, work, ticks)
    return {"batches": a.batches, "records": frame.height, "day": clock.day.isoformat(),
            "stream": f"{_utc(clock.start_ms):%H:%M}-{_hhmm(clock, clock.end_ms)} UTC", "seconds": time.perf_counter() - t,
            "every": a.every, "sides": results}


def summary(res: dict) -> None:
    w, wo = res["sides"]["with"], res["sides"]["without"]

    def ratio(side, key):
        s, e = side["start"][key], side["end"][key]
        return e / s if s and e is not None else None

    def per_row(side):  # the scan's time per row read (the seeded and streamed days differ by a few rows)
        r = ratio(side, "scan_s")
        return r and r * side["start"]["rows"] / side["end"]["rows"]

    def verdict(v, target):
        return "-" if v is None else ("met" if v <= target else "MISSED")

    def fmt(v, spec):
        return "-" if v is None else spec.format(v)

    rows = [("most files of a day (raw/, events/), end", w["files"]["files"], wo["files"]["files"], "files", "{:,}"),
            ("most files of a day, peak (after any commit)", w["peak"]["files"], wo["peak"]["files"], "files", "{:,}"),
            ("open raw/ + events/ tables, end/start", ratio(w, "open_s"), ratio(wo, "open_s"), "open", "{:.2f}"),
            ("one-day events/ scan, end/start", ratio(w, "scan_s"), ratio(wo, "scan_s"), "scan", "{:.2f}"),
            ("  the same per row read", per_row(w), per_row(wo), "scan", "{:.2f}"),
            ("serving poll (refresh), end/start", ratio(w, "poll_s"), ratio(wo, "poll_s"), "poll", "{:.2f}"),
            ("bytes on disk / live, after vacuum", w["bytes"]["ratio"], wo["bytes"]["ratio"], "bytes", "{:.2f}")]
    print(f"\n== soak benchmark: {res['batches']:,} micro-batches, {res['records']:,} records, {res['day']} "
          f"{res['stream']}, {res['seconds'] / 60:.1f} min ==")
    print(f"{'figure':<50} {'with maint.':>11} {'without':>9}  {'target':>7}  with / without")
    for label, a, b, target, spec in rows:
        print(f"{label:<50} {fmt(a, spec):>11} {fmt(b, spec):>9}  {'<= ' + str(TARGETS[target]):>7}  "
              f"{verdict(a, TARGETS[target])} / {verdict(b, TARGETS[target])}")
    print("\nreadings, start -> end:")
    for name, side in (("with", w), ("without", wo)):
        s, e = side["start"], side["end"]
        ms = lambda v: fmt(v and v * 1e3, "{:.1f}")
        print(f"  {name:>7}: open {ms(s['open_s'])} -> {ms(e['open_s'])} ms, scan {ms(s['scan_s'])} -> "
              f"{ms(e['scan_s'])} ms ({s['day']} seeded, {s['rows']:,} rows -> {e['day']} streamed, {e['rows']:,} rows), poll {ms(s['poll_s'])} -> {ms(e['poll_s'])} ms"
              + (f"; write {side['write_s_first'] * 1e3:.0f} -> {side['write_s_last'] * 1e3:.0f} ms/batch "
                 f"(first and last {res['every']})" if name == "with" else "; the same stream commits"))
        f = side["files"]
        print(f"           most files at the end {f['files']:,} ({f['table']} {f['day']}), per day "
              + ", ".join(f"{d} {n:,}" for d, n in f["by_day"].items())
              + f"; peak {side['peak']['files']:,} ({side['peak']['table']}); "
                f"after the final run {side['after_final']['files']:,}"
              + (f"; compaction rewrote {side['rewritten'] / 1e6:.1f} MB" if name == "with" else ""))
        b0, b1 = side["bytes_before_vacuum"], side["bytes"]
        print(f"           on disk {b1['disk'] / 1e6:.1f} MB (log {b1['log'] / 1e6:.1f} MB), live {b1['live'] / 1e6:.1f} MB"
              f"; before the final run {b0['disk'] / 1e6:.1f} MB ({b0['ratio']:.2f}x)")
        if side["maint_runs"]:
            runs = ", ".join(f"{k} x{v}" for k, v in side["maint_runs"].items())
            print(f"           maintenance {runs}: {side['maint_s']:.1f} s during the stream "
                  f"({side['maint_s'] / side['write_s_total'] * 100:.0f}% of its {side['write_s_total']:.0f} s of "
                  f"writes), final run {side['final_s']:.1f} s: {side['final']['files_deleted']:,} files, "
                  f"{side['final']['bytes_reclaimed'] / 1e6:.1f} MB reclaimed")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, default=720, help="micro-batches (default 720: one every 2 minutes, a whole day)")
    p.add_argument("--records", type=int, default=200, help="records per micro-batch (make dev's: 100, 20/s x 5 s)")
    p.add_argument("--interval", type=float, default=120.0, help="simulated seconds per micro-batch")
    p.add_argument("--day", default="2026-03-10", help="the simulated UTC day")
    p.add_argument("--start-hour", type=float, default=0.0, help="simulated UTC hour of the first batch")
    p.add_argument("--every", type=int, default=180, help="batches between readings along the way")
    p.add_argument("--poll-window", type=int, default=6, help="polls per reading (the first catches up, untimed)")
    p.add_argument("--repeat", type=int, default=11, help="readings of open and scan times (the median)")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--workdir", default=None)
    a = p.parse_args()
    if not (a.poll_window >= 2 and 2 * a.poll_window <= a.batches):
        raise SystemExit("need --poll-window >= 2 and --batches >= 2 x --poll-window")
    a.workdir = a.workdir or tempfile.mkdtemp(prefix="seqbench-soak-")
    _log(f"workdir {a.workdir}")
    res = run(a)
    summary(res)
    print(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
