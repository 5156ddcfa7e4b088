"""The shared execution engine: sources in, executors in the middle, the lake out.

Batch partitions, stream micro-batches and the serving tail all go through these functions with the
same compiled definitions, so the three runtimes cannot drift apart. Dagster code stays a thin shell
around them.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import polars as pl

from seq_assets.core import snapshots
from seq_assets.core.buckets import user_bucket
from seq_assets.core.compiled import Compiled, polars_type, source_types
from seq_assets.core.days import (
    day_start_ms,
    days_between,
    end_of_day_ms,
    event_time_ms,
)
from seq_assets.core.decode import Decoded, Lines, decode_records, split_lines
from seq_assets.core.executors import EXECUTORS
from seq_assets.core.kernel import (
    assemble_sequences,
    extend_sequences_changes,
    extendable,
    rule_columns,
)

if TYPE_CHECKING:  # the engine is handed its lake and landing area; core imports no storage
    from seq_assets.storage.lake import Lake, WriteInfo
    from seq_assets.storage.landing import Landing

BATCH_ORIGIN = "batch"


def first_per_key(df: pl.DataFrame, key: str) -> pl.DataFrame:
    """The first row of each ``key`` in frame order, like ``unique(keep="first",
    maintain_order=True)`` but one hash pass over the key, and no copy when it is already unique."""
    if df.get_column(key).n_unique() == df.height:
        return df
    return df.filter(pl.col(key).is_first_distinct())


def of_day(df: pl.DataFrame, day: date) -> pl.DataFrame:
    """The rows of ``df`` dated ``day``; ``df`` itself, not a copy, when every row is (a batch day's events)."""
    dates = df.get_column("date")
    if dates.null_count() == 0 and dates.min() == day and dates.max() == day:
        return df
    return df.filter(pl.col("date") == day)


def in_bucket(frame, user: str, bucket: tuple[int, int] | None):
    """The rows (of a DataFrame or LazyFrame) whose ``user`` is in bucket ``b`` of ``n``
    (``bucket=(b, n)``, ``core.buckets.user_bucket``); a null user is in bucket 0. None: every row."""
    if bucket is None:
        return frame
    b, n = bucket
    of = pl.col(user).map_batches(lambda s: user_bucket(s, n), return_dtype=pl.UInt32, is_elementwise=True)
    return frame.filter(of.fill_null(0) == b)


class LakeContext:
    """Backs enrichments with lake tables; caches what one run reads more than once."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self._snapshots: dict[tuple[str, date], pl.DataFrame | None] = {}
        self._history: dict[tuple, pl.DataFrame] = {}
        self._seeds: dict[tuple[str, date], pl.DataFrame] = {}
        self.cache: dict = {}  # prepared frames enrichers share within one run (e.g. counter history)

    def snapshot(self, enrichment: dict, day: date) -> pl.DataFrame | None:
        key = (enrichment["name"], day)
        if key not in self._snapshots:
            cols = [enrichment["key"], *enrichment["columns"]]
            lf = self.lake.scan("enrichments", enrichment["name"], end=day)
            snap = None
            if lf is not None:
                # The newest snapshot on or before the day: a missing day reuses the previous one.
                latest = lf.select(pl.col("date").max()).collect().item()
                if latest is not None:  # read from the same table version: one open, not two
                    snap = lf.filter(pl.col("date") == latest).select(cols).collect()
            self._snapshots[key] = snap
        return self._snapshots[key]

    def seed(self, source: str, day: date, raw: pl.DataFrame) -> None:
        """Hand over a whole day of ``raw/<source>`` (deduplicated on event id) that the caller has
        read anyway, so a history window that includes the day does not read it again. Only the
        newest seed is kept: a run walking many days does not hold them all."""
        self._seeds = {(source, day): raw}

    def history(self, source: dict, columns: list[str], start_ms: int, end_ms: int,
                users: pl.Series | None) -> pl.DataFrame:
        ts, eid = source["time_field"], source["event_id_field"]
        cols = tuple(sorted({*columns, eid}))
        days = tuple(days_between(start_ms, end_ms - 1))  # end is exclusive
        if users is not None:
            # A micro-batch: read only its users' rows, filtered inside the scan.
            lf = self.lake.scan("raw", source["name"], days=days, columns=list(cols))
            if lf is None:
                return pl.DataFrame(schema={c: source_types(source)[c] for c in cols})
            return (lf.filter(pl.col(source["user_field"]).is_in(users.implode())
                              & (pl.col(ts) >= start_ms) & (pl.col(ts) < end_ms))
                    .unique(subset=[eid], keep="first").collect())
        # Whole days are cached: the event types of one source share a single read, and a run that
        # walks consecutive days (a backfill) reads each day of raw/ once, not once per window.
        # (An event id lives in one day, so deduplicating day by day is deduplicating the window.)
        cached = {k: v for k, v in self._history.items() if k[0] == source["name"] and k[1] == cols and k[2] in days}
        missing = [d for d in days if (source["name"], cols, d) not in cached]
        for d in list(missing):
            seeded = self._seeds.pop((source["name"], d), None)
            if seeded is not None and set(cols) <= set(seeded.columns):
                cached[(source["name"], cols, d)] = seeded.select(cols)
                missing.remove(d)
        if missing:
            lf = self.lake.scan("raw", source["name"], days=missing, columns=[*cols, "date"])
            frame = (lf.unique(subset=[eid], keep="first").collect() if lf is not None
                     else pl.DataFrame(schema={**{c: source_types(source)[c] for c in cols}, "date": pl.Date}))
            parts = frame.partition_by("date", as_dict=True, include_key=False)
            for d in missing:
                part = parts.get((d,))
                cached[(source["name"], cols, d)] = part if part is not None else frame.head(0).drop("date")
        self._history = cached
        frame = pl.concat([cached[(source["name"], cols, d)] for d in days])
        return frame.filter((pl.col(ts) >= start_ms) & (pl.col(ts) < end_ms))


@dataclass
class _Built:
    """One day's sequences and the events files (per event type and day) they were built from."""

    day: date
    seqs: pl.DataFrame
    files: dict[tuple[str, date], frozenset[str]]
    extended: bool = False
    changed: pl.Series | None = None  # the users whose sequence changed since the day before (extended)


@dataclass
class SequencesWrite:
    """One day's write of ``sequences/``: its rows (every user on a full day, the changed ones
    between), the users whose sequence changed since the day before (every user of a full day
    built without the day before at hand), the bytes of the day's files, the Delta version."""

    rows: int
    version: int | None
    users: int
    changed_users: int
    bytes_written: int
    full_snapshot: bool
    rederived: bool = False  # a day after a rewritten one, written again against it


@dataclass
class IndexResult:
    """What one indexing pass produced, per event type, plus the days it touched."""

    events: dict[str, pl.DataFrame] = field(default_factory=dict)
    days: set[date] = field(default_factory=set)

    @property
    def rows(self) -> int:
        return sum(df.height for df in self.events.values())


class Engine:
    def __init__(self, compiled: Compiled, lake: Lake, landing: Landing | None = None):
        self.compiled = compiled
        self.lake = lake
        self.landing = landing  # only the batch path reads it
        # Landing files read by the day walked last (see _file_rows): a walk oldest first reads each once.
        self._landing_walk: tuple[date | None, dict[str, dict]] = (None, {})
        self.executors = {
            name: EXECUTORS[et["executor"]](et, compiled) for name, et in compiled.event_types.items()
        }

    # ---- sources ----------------------------------------------------------------------------

    def decode(self, source: str, values: pl.Series, meta: pl.DataFrame | None = None) -> Decoded:
        return decode_records(self.compiled.sources[source], values, meta)

    def landing_files(self, source: str, arrival_days: list[date]) -> list[str]:
        """The files of a file-format source (``jsonl``, ``csv``, ``parquet``) that arrived on those days."""
        src = self.compiled.sources[source]
        fmt = src.get("batch_format", "jsonl")
        return [f for d in arrival_days for f in self._landing().batch_files(src["batch_location"], d, fmt)]

    def _landing(self) -> Landing:
        if self.landing is None:
            raise ValueError("this engine was built without a landing area (SEQ_LANDING_DIR)")
        return self.landing

    def load_batch_day(self, source: str, day: date) -> tuple[Decoded, list[str]]:
        """Decode the batch records that can hold events of ``day``.

        Landing files: those that arrived on ``day`` and the late horizon after it. Valid rows keep
        only that day's events; dead letters keep the ones dated that day (by event time when it
        parses, else by arrival day), so each bad record is reported exactly once. A Delta source:
        the rows of its table whose event time falls on ``day``, all arriving that day.

        Every format goes through the one decoder: a CSV or Parquet row, or a Delta row, is handed
        to it as the JSON text of an object of its columns (CSV cells as strings), so a bad row's
        dead letter holds the row as received and the reasons are those of any other record. Each
        file is decoded on its own (with one ingest time), so a JSON lines file read whole is
        parsed from its bytes as read (:func:`decode.split_lines`).
        """
        src = self.compiled.sources[source]
        ingested_at = datetime.now(timezone.utc)

        def decoded(records: pl.DataFrame, lines: Lines | None) -> Decoded:
            meta = records.select(
                pl.lit(BATCH_ORIGIN).alias("origin"), pl.col("_arrival").alias("arrival_date"),
                pl.format("batch:{}:{}", pl.col("_file"), pl.col("_line")).alias("record_id"),
            )
            out = decode_records(src, records.get_column("value"), meta, ingested_at, lines)
            return Decoded(out.valid.filter(pl.col("date") == day), out.dead.filter(pl.col("date") == day))

        if src.get("batch_format", "jsonl") == "delta":
            records, files = self._delta_records(src, day)
            parts = [] if records is None else [decoded(records, None)]
        else:
            parts, files = self._file_records(source, src, day, then=decoded)
        if not parts:
            return self.decode(source, pl.Series("value", [], dtype=pl.String)), files
        return Decoded(valid=pl.concat([d.valid for d in parts]), dead=pl.concat([d.dead for d in parts])), files

    def _file_records(self, source: str, src: dict, day: date, then=None) -> tuple[list, list[str]]:
        """Per landing file that may hold records of ``day``: its records (``value``, ``_arrival``,
        ``_file``, ``_line``), with the bytes they were read from when they are the whole file;
        or what ``then(records, lines)`` makes of them, run for each file as it is read.

        A cheap pre-selection runs before the decode of a file that arrived after the day: only
        records whose event time is on the day and records whose time it cannot read are kept.
        (Every arrival of the day is kept: a record that fails to decode is dated by its arrival
        day even when a time was read from it.) In JSON lines the time field's value is read from
        the text (see :meth:`_file_rows`); in CSV and Parquet it is the column.

        A run that walks days oldest first reads each file once: a file serves the days of its
        horizon (see :meth:`_file_rows`), and is dropped once the run has passed its arrival day.
        A day that is not after the one before (a re-run, a step back) reads its files again.
        """
        fmt = src.get("batch_format", "jsonl")
        arrivals = [day + timedelta(days=i) for i in range(self.compiled.horizon_days(source) + 1)]
        files = self.landing_files(source, arrivals)
        walked, kept = self._landing_walk
        kept = {p: r for p, r in kept.items() if r["arrived"] >= day and p in files} if walked and walked < day else {}
        self._landing_walk = (day, kept)
        start, end = day_start_ms(day), end_of_day_ms(day)

        def one(path: str):
            # One file at a time: its arrival day and name are constants, its line number the index.
            name = "/".join(path.rsplit("/", 2)[-2:])
            arrived = date.fromisoformat(name.split("/")[0].split("=", 1)[1])
            got = self._file_rows(path, fmt, src, arrived, with_time=arrived != day)
            if got is None:
                return None
            rows, lines = got["rows"], got.get("lines") if arrived == day else None
            if arrived != day:
                rows = rows.filter(pl.col("_ms").is_between(start, end, closed="left") | pl.col("_ms").is_null())
            value = pl.col("value") if fmt == "jsonl" else pl.col("_row").struct.json_encode()
            part = (rows.select(value.alias("value"), "_line", pl.lit(arrived).alias("_arrival"),
                                pl.lit(name).alias("_file")), lines)
            if arrived == day:
                got.pop("lines", None)  # the file's own day is its last in a walk: its bytes are done with
            return then(*part) if then is not None else part

        # The files run side by side (polars works outside the GIL): the day's own file is parsed
        # while the later ones are read and pre-selected.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="landing-file") as pool:
            parts = [p for p in pool.map(one, files) if p is not None]
        return parts, files

    def _file_rows(self, path: str, fmt: str, src: dict, arrived: date, with_time: bool) -> dict | None:
        """One landing file's rows (``rows``: ``value`` or ``_row``, ``_line``; None when empty),
        kept for the run, with ``_ms``, the event time the pre-selection reads, once ``with_time``
        asks; and for JSON lines read as bytes, ``lines``, their place in the bytes."""
        kept = self._landing_walk[1]
        got = kept.get(path)
        if got is None:
            got = kept[path] = {"arrived": arrived}
            tf = src["time_field"]
            data = self._landing().read_batch_bytes(path) if fmt == "jsonl" else None
            if data is not None:
                rows, got["lines"] = split_lines(data)
            else:
                rows = self._landing().read_batch_file(path, fmt)
                if fmt == "jsonl":
                    rows = rows.with_row_index("_line").filter(pl.col("value").str.len_bytes() > 0)
                elif not rows.is_empty():
                    ms = event_time_ms(src, pl.col(tf), rows.schema[tf]) if tf in rows.columns else pl.lit(None, pl.Int64)
                    rows = rows.select(pl.struct(pl.all()).alias("_row"),
                                       pl.int_range(pl.len(), dtype=pl.UInt32).alias("_line"), ms.alias("_ms"))
            got["rows"] = rows
        if got["rows"].is_empty():
            return None
        if with_time and "_ms" not in got["rows"].columns:
            tf = src["time_field"]
            time_text = pl.col("value").str.extract(r'"' + re.escape(tf) + r'"\s*:\s*("[^"\\]*"|-?\d+)\s*[,}]')
            got["rows"] = got["rows"].with_columns(event_time_ms(src, time_text.str.strip_chars('"')).alias("_ms"))
        return got

    def _delta_records(self, src: dict, day: date) -> tuple[pl.DataFrame | None, list[str]]:
        """The rows of a Delta source whose event time falls on ``day``, as :meth:`_file_records`
        gives them (arrival day: ``day``; ``_file`` the table and version read, ``_line`` the row's
        place in the day's read). A row whose event time does not read as a time belongs to no day."""
        scan, label = self._landing().scan_delta(src["batch_location"])
        tf = src["time_field"]
        dtype = scan.collect_schema().get(tf)
        if dtype is None:
            raise ValueError(f"source {src['name']!r}: the Delta table {label} has no column {tf!r} (time_field)")
        start, end = day_start_ms(day), end_of_day_ms(day)
        rows = scan.filter(event_time_ms(src, pl.col(tf), dtype).is_between(start, end, closed="left"))
        # The same bounds on the column itself, a form the scan skips files and row groups with.
        column = pl.col(tf)
        if dtype.is_integer():
            per = pl.select(event_time_ms(src, pl.lit(10**6, pl.Int64), pl.Int64)).item()  # ms in 10^6 units
            rows = rows.filter((column >= start * 10**6 // per) & (column < end * 10**6 // per))
        elif isinstance(dtype, pl.Datetime):
            lo, hi = (datetime.fromtimestamp(t / 1000, timezone.utc) for t in (start, end))
            if dtype.time_zone is None:  # naive times are UTC
                lo, hi = lo.replace(tzinfo=None), hi.replace(tzinfo=None)
            rows = rows.filter(column.is_between(pl.lit(lo).cast(dtype), pl.lit(hi).cast(dtype), closed="left"))
        records = rows.select(
            pl.struct(pl.all()).struct.json_encode().alias("value"),
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("_line"),
            pl.lit(day).alias("_arrival"), pl.lit(label).alias("_file"),
        ).collect()
        return (records if records.height else None), [label]

    def write_raw_batch_day(self, source: str, day: date) -> dict:
        """Materialize one day of ``raw/<source>`` (and its dead letters) from the landing files."""
        decoded, files = self.load_batch_day(source, day)
        eid = self.compiled.sources[source]["event_id_field"]
        valid = first_per_key(decoded.valid, eid)
        only_batch = f"origin = '{BATCH_ORIGIN}'"
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dead-letters") as pool:  # independent tables
            dead_write = pool.submit(self.lake.replace_partitions, "dead_letter", source, decoded.dead, [day],
                                     extra_predicate=only_batch)
            info = self.lake.replace_partitions("raw", source, valid, [day], extra_predicate=only_batch)
            dead = dead_write.result()
        return {
            "rows": valid.height,
            "duplicates_dropped": decoded.valid.height - valid.height,
            "dead_letters": decoded.dead.height,
            "files": len(files),
            "version": info.version,
            "dead_letter_version": dead.version,
        }

    def write_enrichment_day(self, name: str, day: date) -> dict:
        """Copy the enrichment's landing snapshot for ``day`` into ``enrichments/<name>``.

        A day without a snapshot carries the newest earlier one forward, so events of that day
        are still enriched with the version that was valid then.
        """
        e = self.compiled.enrichments[name]
        days = self._landing().snapshot_days(e["snapshot_location"])
        usable = [d for d in days if d <= day]
        schema = {e["key"]: polars_type(e["key_type"]), **{c: polars_type(t) for c, t in e["columns"].items()}}
        if usable:
            src_day = usable[-1]
            snap = self._landing().read_snapshot(e["snapshot_location"], src_day)
            snap = snap.select([pl.col(c).cast(t) for c, t in schema.items()])
        else:
            src_day, snap = None, pl.DataFrame(schema=schema)
        snap = snap.unique(subset=[e["key"]], keep="first", maintain_order=True).with_columns(pl.lit(day).alias("date"))
        info = self.lake.replace_partitions("enrichments", name, snap, [day])
        return {"rows": snap.height, "snapshot_day": src_day, "version": info.version}

    # ---- indexing ---------------------------------------------------------------------------

    def index(self, source: str, raw: pl.DataFrame, ctx=None, event_types: list[str] | None = None,
              ingested_at: datetime | None = None, deduplicated: bool = False) -> IndexResult:
        """Run every event type of ``source`` over decoded raw rows (deduplicated on event id here
        unless the caller says it already is)."""
        src = self.compiled.sources[source]
        if not deduplicated:
            raw = first_per_key(raw, src["event_id_field"])
        ctx = ctx or LakeContext(self.lake)
        stamp = ingested_at or datetime.now(timezone.utc)
        result = IndexResult()
        for et in self.compiled.event_types_of(source):
            if event_types is not None and et["name"] not in event_types:
                continue
            events = self.executors[et["name"]].run(raw, ctx, stamp)
            result.events[et["name"]] = events
            result.days.update(events.get_column("date").unique().to_list())
        return result

    def raw_day(self, source: str, day: date) -> tuple[pl.DataFrame, int | None]:
        """Every delivery of ``day`` in ``raw/`` (batch and stream), and the table version read."""
        t = self.lake.table("raw", source)
        if t is None:
            schema = {**self.compiled.source_schema(source), "date": pl.Date}
            return pl.DataFrame(schema=schema), None
        df = pl.scan_delta(t).filter(pl.col("date") == day).collect()
        return df, t.version()

    def index_batch_day(self, source: str, day: date, event_types: list[str] | None = None,
                        ctx: LakeContext | None = None, max_catch_up: int = 20) -> dict[str, pl.DataFrame]:
        """Recompute ``events/<event_type>`` for one day from everything in ``raw/`` for that day.

        The stream may write the same day meanwhile. Its raw rows always commit before its events,
        so after replacing the day, any raw row that appeared since the version read is indexed
        and inserted (unseen ids only) until ``raw/`` holds still: no streamed event is lost to the
        overwrite, and none is doubled.
        """
        indexed = self._index_day(source, day, event_types, ctx or LakeContext(self.lake))
        return self._write_day(source, day, event_types, *indexed, max_catch_up=max_catch_up)

    def index_batch_days(self, source: str, days: list[date], event_types: list[str] | None = None,
                         ctx: LakeContext | None = None, max_catch_up: int = 20):
        """:meth:`index_batch_day` for each of ``days`` in order, yielding ``(day, events)`` as each
        day's writes land. A day's writes (and catch-up) run on a second thread while the next day
        is indexed: the next day reads only ``raw/`` and enrichments, never the events written."""
        ctx = ctx or LakeContext(self.lake)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="events-day") as pool:
            pending = None
            for day in sorted(days):
                indexed = self._index_day(source, day, event_types, ctx)
                if pending is not None:
                    yield pending[0], pending[1].result()
                pending = (day, pool.submit(self._write_day, source, day, event_types, *indexed,
                                            max_catch_up=max_catch_up))
            if pending is not None:
                yield pending[0], pending[1].result()

    def _index_day(self, source: str, day: date, event_types: list[str] | None,
                   ctx: LakeContext, bucket: tuple[int, int] | None = None) -> tuple[pl.DataFrame, int | None, IndexResult]:
        raw, version = self.raw_day(source, day)
        raw = first_per_key(raw, self.compiled.sources[source]["event_id_field"])
        ctx.seed(source, day, raw)  # the whole day: enrichments over other users' history stay exact
        raw = in_bucket(raw, self.compiled.sources[source]["user_field"], bucket)
        return raw, version, self.index(source, raw, ctx, event_types=event_types, deduplicated=True)

    def _write_day(self, source: str, day: date, event_types: list[str] | None, raw: pl.DataFrame,
                   version: int | None, result: IndexResult, max_catch_up: int) -> dict[str, pl.DataFrame]:
        eid = self.compiled.sources[source]["event_id_field"]
        # The event types' tables are independent: their writes run at once (outside the GIL).
        with ThreadPoolExecutor(max_workers=max(1, len(result.events)), thread_name_prefix="events-write") as pool:
            for f in [pool.submit(self.write_events_day, et, day, of_day(df, day))
                      for et, df in result.events.items()]:
                f.result()
        seen = raw.get_column(eid)  # the ids indexed (is_in hashes them only when raw/ moved on)
        for _ in range(max_catch_up):
            t = self.lake.table("raw", source)
            if t is None or t.version() == version:
                break
            now, version = self.raw_day(source, day)
            fresh = now.filter(~pl.col(eid).is_in(seen.implode()))
            if fresh.height:
                extra = self.index(source, fresh, LakeContext(self.lake), event_types=event_types)
                for et, df in extra.events.items():
                    self.lake.insert_unseen("events", et, df.filter(pl.col("date") == day), key=eid)
                    result.events[et] = pl.concat([result.events[et], df], how="vertical_relaxed")
            seen = now.get_column(eid)
        return result.events

    def write_events_day(self, event_type: str, day: date, events: pl.DataFrame) -> WriteInfo:
        return self.lake.replace_partitions("events", event_type, events, [day])

    def stage_events_days(self, source: str, days: list[date], event_types: list[str] | None,
                          bucket: tuple[int, int]) -> list[dict]:
        """One user bucket's part of :meth:`index_batch_days`: each day's events of the users in
        ``bucket``, written as Parquet files into ``events/`` but not committed (``Lake.stage_partitions``).
        Per day: ``{"day", "raw_version", "staged": {event_type: staged}}`` for
        :meth:`commit_events_days`."""
        ctx, out = LakeContext(self.lake), []
        for day in sorted(days):
            _, version, result = self._index_day(source, day, event_types, ctx, bucket=bucket)
            staged = {et: self.lake.stage_partitions("events", et, of_day(df, day))
                      for et, df in result.events.items()}
            out.append({"day": day.isoformat(), "raw_version": version, "staged": staged})
        return out

    def commit_events_days(self, source: str, parts: list[list[dict]], event_types: list[str],
                           max_catch_up: int = 20) -> dict[str, WriteInfo]:
        """Commit every bucket's staged events (``parts``: what :meth:`stage_events_days` returned
        for each bucket) in one Delta transaction per event type, replacing the days they cover.
        Raw rows the stream committed after a bucket read its day are then indexed and inserted
        (unseen ids only), as :meth:`index_batch_day` does after its replace."""
        days = sorted({date.fromisoformat(d["day"]) for p in parts for d in p})
        infos = {et: self.lake.commit_staged("events", et, [d["staged"][et] for p in parts for d in p], days)
                 for et in event_types}
        eid = self.compiled.sources[source]["event_id_field"]
        read = {}
        for p in parts:
            for d in p:
                read.setdefault(date.fromisoformat(d["day"]), set()).add(d["raw_version"])
        for day in days:
            for _ in range(max_catch_up):
                t = self.lake.table("raw", source)
                if t is None or read[day] == {t.version()}:
                    break
                now, version = self.raw_day(source, day)
                have = [self.lake.read("events", et, days=[day], columns=[eid]) for et in event_types]
                have = pl.concat([h for h in have if h is not None] or [now.select(eid).head(0)]).get_column(eid)
                fresh = now.filter(~pl.col(eid).is_in(have.implode()))
                if fresh.height:
                    extra = self.index(source, fresh, LakeContext(self.lake), event_types=event_types)
                    for et, df in extra.events.items():
                        self.lake.insert_unseen("events", et, df.filter(pl.col("date") == day), key=eid)
                read[day] = {version}
        return infos

    # ---- sequences --------------------------------------------------------------------------

    def build_sequences_day(self, feature_table: str, day: date, fields: list[str] | None = None) -> pl.DataFrame:
        """The feature's sequences as of the end of ``day``, from ``events/`` inside its window: its
        stored fields, or a list column per event column of ``fields``."""
        return self._build_sequences(feature_table, day, None, fields).seqs

    def _build_sequences(self, feature_table: str, day: date, previous: _Built | None,
                         fields: list[str] | None = None, bucket: tuple[int, int] | None = None) -> _Built:
        """Build one day, from the day before when ``previous`` holds it and is still current.

        ``previous`` is current when the events files of the days both windows share are exactly
        the ones it was built from (Delta data files are immutable, so the same files are the same
        rows): a backfill or a late stream insert in between changes them, and the day is then
        rebuilt from the whole window.
        """
        feature = self.compiled.features[feature_table]
        schema = self.compiled.sequence_schema(feature, fields)
        fields = self.compiled.stored_fields(feature) if fields is None else list(fields)
        end_ms = end_of_day_ms(day)
        first_day = day - timedelta(days=feature["window_days"] - 1)
        user = self.compiled.user_field(feature)
        cols = rule_columns(feature, fields, user)
        src = self.compiled.source_of(feature)
        extend = (previous is not None and previous.day == day - timedelta(days=1)
                  and extendable(feature, fields, src["event_id_field"], src["time_field"]))
        scans, files = [], {}
        for et in feature["event_types"]:
            got = self.lake.scan_with_files("events", et, first_day, day)
            if got is not None:
                scans.append(in_bucket(got[0], user, bucket))  # a user bucket builds its own users only
                files.update({(et, d): paths for d, paths in got[1].items()})
        if extend:
            shared = {k: v for k, v in files.items() if k[1] < day}
            extend = shared == {k: v for k, v in previous.files.items() if k[1] >= first_day}
        changed = None
        if not scans:
            seqs = pl.DataFrame(schema=schema)
        elif extend:
            today = pl.concat([lf.filter(pl.col("date") == day).select(cols) for lf in scans], how="vertical_relaxed")
            seqs, changed = extend_sequences_changes(feature, previous.seqs, today, end_ms, fields, day, user=user)
        else:
            window = pl.concat([lf.select(cols) for lf in scans], how="vertical_relaxed")
            seqs = assemble_sequences(feature, window, end_ms, fields, day, user=user)
        seqs = seqs.select([pl.col(c).cast(t) for c, t in schema.items()])
        return _Built(day, seqs, files, extended=bool(scans) and extend, changed=changed)

    def _stored_kinds(self, feature_table: str) -> dict[date, bool]:
        lf = self.lake.scan("sequences", feature_table)
        return {} if lf is None else snapshots.partition_kinds(lf)

    def write_sequences_day(self, feature_table: str, day: date, seqs: pl.DataFrame,
                            previous: pl.DataFrame | None = None, changed: pl.Series | None = None,
                            full: bool | None = None, kinds: dict[date, bool] | None = None,
                            bucket: tuple[int, int] | None = None, stage: bool = False) -> SequencesWrite | dict:
        """Write ``seqs`` (the day's whole state, one row per user) in the table's layout
        (:mod:`seq_assets.core.snapshots`): every user on a full day, else the users whose sequence
        changed since the day before, as ``changed`` names them or as found against ``previous``
        (the day before's state) or, without either, against what the table holds for the day
        before. ``bucket``: ``seqs`` holds that user bucket only; ``stage``: the files are written
        but not committed, and what ``Lake.commit_staged`` takes is returned."""
        feature = self.compiled.features[feature_table]
        user = self.compiled.user_field(feature)
        fields = [c for c in seqs.columns if c not in (user, "date")]
        kinds = self._stored_kinds(feature_table) if kinds is None else kinds
        full = snapshots.must_be_full(feature, kinds, day) if full is None else full
        if changed is None and (previous is not None or not full):
            if previous is None:
                previous = snapshots.sequences_as_of(self.lake, self.compiled, feature_table, day - timedelta(days=1),
                                                     built_only=False)
                previous = in_bucket(previous, user, bucket)
            changed = snapshots.changed_users(previous, seqs, user, fields)
        rows = snapshots.day_rows(seqs, None if full else changed, user, day)
        if stage:
            return self.lake.stage_partitions("sequences", feature_table, rows)
        info = self.lake.replace_partitions("sequences", feature_table, rows, [day])
        # The day's files are the ones the replace added; the delta-rs path (schema evolution) does
        # not report them, so the table is asked then.
        written = info.bytes_written
        if written is None:
            written = int(self.lake.stats("sequences", feature_table, day=day).get("bytes", 0))
        return SequencesWrite(rows=info.rows, version=info.version, users=seqs.height,
                              changed_users=seqs.height if changed is None else len(changed),
                              bytes_written=written, full_snapshot=full)

    def sequences_days(self, feature_table: str, days: list[date], bucket: tuple[int, int] | None = None,
                       stage: bool = False):
        """Build and write the feature's partitions of ``days`` in order, yielding ``(day, seqs, info)``
        as each write lands (``seqs`` the day's whole state, ``info`` a :class:`SequencesWrite`).

        A day that follows the one built before it extends that day's sequences with its own
        events (see :meth:`_build_sequences`) instead of reading the whole window again, and knows
        from that which users changed. The built days after a written one up to the next full
        snapshot were written against it: they are re-derived too (and yielded, ``rederived``),
        so every day reads as its events say. A day's write runs on a second thread while the next
        day is built (both spend their time in polars and Parquet code outside the GIL); at most one
        write is in flight, so memory holds two days at a time.

        ``bucket=(b, n)`` builds only the users of that bucket (``core.buckets``); ``stage`` writes
        each day's files without committing them and yields what ``Lake.commit_staged`` takes
        instead of a :class:`SequencesWrite`."""
        feature = self.compiled.features[feature_table]
        kinds = self._stored_kinds(feature_table)
        wanted = set(days)
        todo = set(days)
        for day in days:
            todo.update(snapshots.following_days(kinds, day))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="seq-write") as pool:
            pending, built = None, None
            for day in sorted(todo):
                before = built if built is not None and built.day == day - timedelta(days=1) else None
                built = self._build_sequences(feature_table, day, built, bucket=bucket)
                seqs = built.seqs
                full = snapshots.must_be_full(feature, kinds, day)
                changed = built.changed if built.extended else None
                if pending is not None:
                    yield self._landed(pending)
                kinds[day] = full
                pending = (day, seqs, day not in wanted,
                           pool.submit(self.write_sequences_day, feature_table, day, seqs,
                                       None if before is None else before.seqs, changed, full, dict(kinds),
                                       bucket, stage))
            if pending is not None:
                yield self._landed(pending)

    @staticmethod
    def _landed(pending):
        day, seqs, rederived, future = pending
        info = future.result()
        if isinstance(info, dict):  # staged
            info["rederived"] = rederived
        else:
            info.rederived = rederived
        return day, seqs, info
