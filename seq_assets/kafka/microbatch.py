"""The streaming path: read an exact Kafka offset range and index it with the shared engine.

A micro-batch is defined by its offset ranges alone, so re-running it reads the same records.
Delivery is at least once; rows are exactly once because every write inserts only unseen keys
(the source's ``event_id_field`` for raw and events, the Kafka coordinates for dead letters). The order of writes is
dead letters, the late-arrival metric, raw, then events: a run killed in between is simply run again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import polars as pl

from seq_assets.core.decode import Decoded
from seq_assets.core.engine import Engine, LakeContext, first_per_key

STREAM_ORIGIN = "kafka"


@dataclass(frozen=True)
class OffsetRange:
    partition: int
    start: int  # inclusive
    end: int  # exclusive

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)


def ranges_key(source: str, ranges: list[OffsetRange], epoch: str | None = None) -> str:
    """A deterministic name for a micro-batch: the sensor's run_key and the batch id in the lake.

    ``epoch`` names the incarnation of the topic the offsets belong to (its topic id, or the epoch the
    sensor counts when the broker gives none): a recreated topic (an in-memory broker restarted)
    numbers its records from 0 again, and its batches must not take the names of the old ones, or
    Dagster would skip them as runs it already had."""
    parts = ",".join(f"{r.partition}:{r.start}-{r.end}" for r in sorted(ranges, key=lambda r: r.partition))
    return f"{source}@{epoch}/{parts}" if epoch else f"{source}@{parts}"


def iter_range(bootstrap: str, topic: str, ranges: list[OffsetRange], timeout_s: float = 30.0,
               client_id: str = "seqplat-microbatch", chunk_records: int = 20_000) -> Iterator[pl.DataFrame]:
    """Exactly the records of ``ranges``, in chunks: assign + seek, no consumer group, no rebalances.

    Chunks have columns value (text), key, kafka_partition, kafka_offset, kafka_ts. A non-UTF-8
    value is kept with its undecodable bytes replaced; the JSON decoder then dead-letters it.
    Records are decoded by the lean reader (seq_assets/kafka_read.py) and put into columns with
    one list comprehension per field, not a Python statement per record and field.
    """
    from kafka import TopicPartition

    from seq_assets.kafka.reader import as_tuple, lean_consumer

    todo = {r.partition: r for r in ranges if r.count > 0}
    if not todo:
        return
    consumer = lean_consumer(bootstrap_servers=bootstrap, client_id=client_id, enable_auto_commit=False,
                             group_id=None, fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024,
                             request_timeout_ms=max(int(timeout_s * 1000), 31_000))
    pending: list[tuple[int, list]] = []  # (partition, records) fetched but not yet in a chunk
    pending_n = 0
    try:
        tps = {p: TopicPartition(topic, p) for p in todo}
        consumer.assign(list(tps.values()))
        for p, r in todo.items():
            consumer.seek(tps[p], r.start)
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(todo):
            if time.monotonic() > deadline:
                missing = {p: consumer.position(tps[p]) for p in todo if p not in done}
                raise TimeoutError(f"topic {topic!r}: range not fully readable in {timeout_s}s (positions {missing}, ranges {list(todo.values())})")
            batch = consumer.poll(timeout_ms=500, max_records=chunk_records)
            for tp, records in batch.items():
                if not consumer.lean:
                    records = [as_tuple(rec) for rec in records]
                pending.append((tp.partition, records))
                pending_n += len(records)
            for p, r in todo.items():
                if p not in done and consumer.position(tps[p]) >= r.end:
                    done.add(p)
                    consumer.pause(tps[p])
            if pending_n >= chunk_records:
                yield _records_frame(pending, todo)
                pending, pending_n = [], 0
        if pending_n:
            yield _records_frame(pending, todo)
    finally:
        consumer.close(autocommit=False)


def _records_frame(pending: list[tuple[int, list]], todo: dict[int, OffsetRange]) -> pl.DataFrame:
    """Fetched ``(offset, ts, key, value)`` tuples as a frame, cut to the ranges."""
    frames = []
    for partition, recs in pending:
        if not recs:
            continue
        r = todo[partition]
        frames.append(pl.DataFrame({
            "value": pl.Series([rec[3] for rec in recs], dtype=pl.Binary),
            "key": pl.Series([rec[2] for rec in recs], dtype=pl.Binary),
            "kafka_partition": pl.Series([partition] * len(recs), dtype=pl.Int32),
            "kafka_offset": pl.Series([rec[0] for rec in recs], dtype=pl.Int64),
            "kafka_ts": pl.Series([rec[1] for rec in recs], dtype=pl.Int64),
        }).filter(pl.col("kafka_offset").is_between(r.start, r.end, closed="left")))
    if not frames:
        return pl.DataFrame(schema=_RECORD_SCHEMA)
    df = pl.concat(frames)
    return df.with_columns(value=_utf8(df.get_column("value")).fill_null(""), key=_utf8(df.get_column("key")))


def _utf8(col: pl.Series) -> pl.Series:
    """Bytes as text. A chunk holding invalid UTF-8 (rare: a bad producer) is decoded record by
    record, keeping the readable parts with replacement characters, as bytes.decode does."""
    try:
        return col.cast(pl.String)
    except pl.exceptions.ComputeError:
        return pl.Series(col.name, [None if v is None else v.decode("utf-8", errors="replace") for v in col.to_list()],
                         dtype=pl.String)


def read_range(bootstrap: str, topic: str, ranges: list[OffsetRange], timeout_s: float = 30.0) -> pl.DataFrame:
    """All records of ``ranges`` in one frame (see :func:`iter_range`)."""
    chunks = list(iter_range(bootstrap, topic, ranges, timeout_s))
    return pl.concat(chunks) if chunks else pl.DataFrame(schema=_RECORD_SCHEMA)


_RECORD_SCHEMA = {"value": pl.String, "key": pl.String, "kafka_partition": pl.Int32, "kafka_offset": pl.Int64,
                  "kafka_ts": pl.Int64}


@dataclass
class MicroBatchResult:
    batch_id: str
    records: int = 0
    raw_inserted: int = 0
    dead_letters: int = 0
    events_inserted: dict[str, int] = field(default_factory=dict)
    days: dict[str, list[date]] = field(default_factory=dict)  # table -> touched days
    late_by_day: dict[date, int] = field(default_factory=dict)
    seconds: float = 0.0


def decode_chunk(engine: Engine, source: str, records: pl.DataFrame, now: datetime) -> Decoded:
    """Decode Kafka records, keeping their coordinates (``record_id`` = topic:partition:offset)."""
    topic = engine.compiled.sources[source]["topic"]
    meta = records.select(
        "kafka_partition", "kafka_offset", pl.lit(STREAM_ORIGIN).alias("origin"),
        pl.format("{}:{}:{}", pl.lit(topic), pl.col("kafka_partition"), pl.col("kafka_offset")).alias("record_id"),
        pl.from_epoch(pl.col("kafka_ts"), time_unit="ms").dt.date().fill_null(now.date()).alias("arrival_date"),
        pl.from_epoch(pl.col("kafka_ts"), time_unit="ms").dt.replace_time_zone("UTC").alias("arrived_at"),
    )
    return engine.decode(source, records.get_column("value"), meta)


def index_records(engine: Engine, source: str, records: pl.DataFrame, batch_id: str,
                  now: datetime | None = None) -> MicroBatchResult:
    """Decode, dead-letter, archive and index one micro-batch of records (see module docstring)."""
    now = now or datetime.now(timezone.utc)
    return index_decoded(engine, source, decode_chunk(engine, source, records, now), records.height, batch_id, now)


def index_decoded(engine: Engine, source: str, decoded: Decoded, records: int, batch_id: str,
                  now: datetime) -> MicroBatchResult:
    """Write one decoded micro-batch. Writes that do not depend on each other run at once (each is
    a Delta commit that spends most of its time outside the GIL): dead letters beside the late
    metric and raw, then the event types together, after raw."""
    t0 = time.perf_counter()
    lake, src = engine.lake, engine.compiled.sources[source]
    res = MicroBatchResult(batch_id=batch_id, records=records)
    eid = src["event_id_field"]
    valid = first_per_key(decoded.valid, eid)
    dead = decoded.dead
    for kind, frame in (("dead_letter", dead), ("raw", valid)):
        if frame.height:
            create_if_missing(lake, kind, source, frame)
    with ThreadPoolExecutor(max_workers=4) as pool:
        dead_write = pool.submit(lake.insert_unseen, "dead_letter", source, dead, key="record_id") if dead.height else None
        if dead.height:
            res.days["dead_letter/" + source] = sorted(dead.get_column("date").unique().to_list())
        if valid.height:
            # A closed day is any day before today (UTC): its events are late and are counted, not
            # dropped. Only events raw/ does not hold yet are late arrivals (a re-delivery is not),
            # so the metric is recorded before raw/ is written: a re-run finds it under the same id.
            late = _not_in_raw(lake, source, eid, valid.filter(pl.col("date") < now.date())).group_by("date").len()
            res.late_by_day = {d: int(n) for d, n in late.iter_rows()}
            if res.late_by_day:
                record_late_arrivals(engine, source, batch_id, res.late_by_day, now)
            res.raw_inserted = lake.insert_unseen("raw", source, valid, key=eid).inserted or 0
            res.days["raw/" + source] = sorted(valid.get_column("date").unique().to_list())

        result = engine.index(source, valid, LakeContext(lake), ingested_at=now)
        for et, events in result.events.items():
            if events.height:
                create_if_missing(lake, "events", et, events)
        writes = {et: pool.submit(lake.insert_unseen, "events", et, events, key=eid)
                  for et, events in result.events.items()}
        for et, events in result.events.items():
            res.events_inserted[et] = writes[et].result().inserted or 0
            if events.height:
                res.days["events/" + et] = sorted(events.get_column("date").unique().to_list())
        if dead_write is not None:
            res.dead_letters = dead_write.result().inserted or 0
    res.seconds = time.perf_counter() - t0
    return res


def create_if_missing(lake, kind: str, name: str, frame: pl.DataFrame) -> None:
    """Create ``kind/name`` empty, with ``frame``'s columns, when there is no such table yet.

    Runs of several partition groups write the same tables at once. Into a table that does not
    exist, ``Lake.insert_unseen`` appends, and an append that loses the race to create the table is
    committed after the winner's: a key both batches carry (one event delivered to two partitions)
    would be stored twice. Into a table that exists, it merges, and Delta finds and retries the
    conflicting merges. Losing the race to create an empty table loses nothing.
    """
    if lake.exists(kind, name):
        return
    from deltalake import write_deltalake
    from deltalake.exceptions import CommitFailedError

    empty = frame.head(0)
    views = {c: pl.String for c, t in empty.schema.items() if t == pl.Categorical or isinstance(t, pl.Enum)}
    try:
        write_deltalake(lake.uri(kind, name), empty.cast(views).to_arrow(compat_level=pl.CompatLevel.oldest()),
                        mode="append", partition_by=["date"], storage_options=lake.storage_options)
    except CommitFailedError:  # another run created it first
        pass


def _not_in_raw(lake, source: str, eid: str, rows: pl.DataFrame) -> pl.DataFrame:
    """The rows whose event id ``raw/<source>`` does not hold yet (looked up in their days only)."""
    if rows.is_empty():
        return rows
    lf = lake.scan("raw", source, days=rows.get_column("date").unique().to_list(), columns=[eid])
    if lf is None:
        return rows
    known = lf.filter(pl.col(eid).is_in(rows.get_column(eid).implode())).collect().get_column(eid)
    return rows.filter(~pl.col(eid).is_in(known.implode()))


LATE_TABLE = "late_arrivals"


def record_late_arrivals(engine: Engine, source: str, batch_id: str, late_by_day: dict[date, int], now: datetime) -> None:
    """One row per (micro-batch, closed day): the late-arrival metric per source and day."""
    df = pl.DataFrame({
        "metric_id": [f"{batch_id}|{d.isoformat()}" for d in late_by_day],
        "source": [source] * len(late_by_day),
        "date": list(late_by_day),
        "late_events": list(late_by_day.values()),
        "batch_id": [batch_id] * len(late_by_day),
        "recorded_at": [now] * len(late_by_day),
    }, schema={"metric_id": pl.String, "source": pl.String, "date": pl.Date, "late_events": pl.Int64,
               "batch_id": pl.String, "recorded_at": pl.Datetime("us", "UTC")})
    engine.lake.insert_unseen("metrics", LATE_TABLE, df, key="metric_id")


def late_arrivals(engine: Engine, source: str | None = None) -> pl.DataFrame:
    """Late events per source and day, summed over micro-batches."""
    df = engine.lake.read("metrics", LATE_TABLE)
    if df is None:
        return pl.DataFrame(schema={"source": pl.String, "date": pl.Date, "late_events": pl.Int64})
    if source:
        df = df.filter(pl.col("source") == source)
    return df.group_by("source", "date").agg(pl.col("late_events").sum()).sort("source", "date")


def run_micro_batch(engine: Engine, source: str, bootstrap: str, ranges: list[OffsetRange],
                    timeout_s: float = 60.0, epoch: str | None = None) -> MicroBatchResult:
    """Read the ranges and index them. Chunks are decoded on a second thread while the next chunk is
    fetched (the Kafka client holds the GIL, polars mostly does not), then written in one pass.
    ``epoch``: the topic's incarnation, part of the batch id (see :func:`ranges_key`)."""
    t0 = time.perf_counter()
    src = engine.compiled.sources[source]
    now = datetime.now(timezone.utc)
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures, records = [], 0
        for chunk in iter_range(bootstrap, src["topic"], ranges, timeout_s=timeout_s):
            records += chunk.height
            futures.append(pool.submit(decode_chunk, engine, source, chunk, now))
        parts = [f.result() for f in futures]
    if parts:
        decoded = Decoded(valid=pl.concat([p.valid for p in parts]), dead=pl.concat([p.dead for p in parts]))
    else:
        decoded = engine.decode(source, pl.Series("value", [], dtype=pl.String))
    res = index_decoded(engine, source, decoded, records, ranges_key(source, ranges, epoch), now)
    res.seconds = time.perf_counter() - t0
    return res
