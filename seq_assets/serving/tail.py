"""The serving process follows the stream itself, so an event is served about a second after it is
produced, before any micro-batch run has indexed it.

``KafkaTail`` reads every partition of each source's topic (assign, no group), decodes and indexes
small batches with the same engine and executors as the batch and stream paths, and hands the
events to the feature stores. It never writes the lake: the stream sensor path does that, and the
stores deduplicate the two copies of an event by its id.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

import polars as pl

from seq_assets.engine import Engine, LakeContext
from seq_assets.lake import Lake
from seq_assets.stream import decode_chunk

log = logging.getLogger("seqplat.tail")


class TailContext(LakeContext):
    """Enrichment reads for the tail: the lake plus the raw rows the tail has seen but the lake may not."""

    def __init__(self, lake: Lake, recent: pl.DataFrame | None):
        super().__init__(lake)
        self.recent = recent

    def history(self, source, columns, start_ms, end_ms, users):
        base = super().history(source, columns, start_ms, end_ms, users)
        if self.recent is None or self.recent.is_empty():
            return base
        ts, eid = source["time_field"], source["event_id_field"]
        extra = self.recent.filter((pl.col(ts) >= start_ms) & (pl.col(ts) < end_ms))
        if users is not None:
            extra = extra.filter(pl.col(source["user_field"]).is_in(users.implode()))
        return pl.concat([base, extra.select(base.columns)], how="vertical_relaxed").unique(subset=[eid], keep="first")


class KafkaTail:
    def __init__(self, service, bootstrap: str, poll_ms: int = 100, max_records: int = 5000,
                 keep_raw_days: int = 31):
        self.service, self.bootstrap = service, bootstrap
        self.engine = Engine(service.compiled, service.lake)
        self.poll_ms, self.max_records = poll_ms, max_records
        self.keep_ms = keep_raw_days * 86_400_000
        self.recent: dict[str, pl.DataFrame] = {}
        self.newest_ts: dict[str, int] = {}
        self.records = 0
        self.errors = 0
        self.last_error: str | None = None
        self._ctx: TailContext | None = None
        self._ctx_born = 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> "KafkaTail":
        for source in self.service.compiled.sources:
            t = threading.Thread(target=self._run, args=(source,), name=f"tail-{source}", daemon=True)
            t.start()
            self._threads.append(t)
        self.service.tail = self
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _run(self, source: str) -> None:
        """Follow the topic; reconnect after errors (broker down, restarted) without dying."""
        while not self._stop.is_set():
            try:
                self._follow(source)
            except Exception as e:  # noqa: BLE001 - the server keeps serving what it has
                self.errors += 1
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("stream tail of %s: %s; retrying", source, self.last_error)
                self._stop.wait(2.0)

    def _follow(self, source: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        topic = self.service.compiled.sources[source]["topic"]
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                 client_id="seqplat-serving-tail", fetch_max_wait_ms=50,
                                 auto_offset_reset="earliest")
        try:
            parts = None
            while parts is None and not self._stop.is_set():
                parts = consumer.partitions_for_topic(topic)
                if parts is None:
                    self._stop.wait(1.0)
            if parts is None:
                return
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            while not self._stop.is_set():
                batch = consumer.poll(timeout_ms=self.poll_ms, max_records=self.max_records)
                rows = {"value": [], "key": [], "kafka_partition": [], "kafka_offset": [], "kafka_ts": []}
                for tp, recs in batch.items():
                    for r in recs:
                        rows["value"].append(r.value.decode("utf-8", errors="replace") if r.value is not None else "")
                        rows["key"].append(None)
                        rows["kafka_partition"].append(tp.partition)
                        rows["kafka_offset"].append(r.offset)
                        rows["kafka_ts"].append(r.timestamp)
                if rows["value"]:
                    self.ingest(source, pl.DataFrame(rows, schema={"value": pl.String, "key": pl.String,
                                                                   "kafka_partition": pl.Int32, "kafka_offset": pl.Int64,
                                                                   "kafka_ts": pl.Int64}))
        finally:
            consumer.close(autocommit=False)

    def ingest(self, source: str, records: pl.DataFrame) -> int:
        """Index a batch of records and give the events to the stores; returns events added."""
        now = datetime.now(timezone.utc)
        decoded = decode_chunk(self.engine, source, records, now)
        valid = decoded.valid
        self.records += records.height
        if valid.is_empty():
            return 0
        src = self.service.compiled.sources[source]
        cutoff = int(now.timestamp() * 1000) - self.keep_ms
        recent = self.recent.get(source)
        recent = valid if recent is None else pl.concat([recent, valid], how="vertical_relaxed")
        self.recent[source] = recent.filter(pl.col(src["time_field"]) >= cutoff)
        if self._ctx is None or time.time() - self._ctx_born > 600:
            # Snapshots are cached between batches; a fresh context now and then picks up new ones.
            self._ctx, self._ctx_born = TailContext(self.service.lake, None), time.time()
        self._ctx.recent = self.recent[source]
        result = self.engine.index(source, valid, self._ctx, ingested_at=now)
        added = 0
        for events in result.events.values():
            for store in self.service.stores.values():
                added += store.add_fresh(events)
        self.newest_ts[source] = max(self.newest_ts.get(source, 0), int(valid.get_column(src["time_field"]).max()))
        return added
