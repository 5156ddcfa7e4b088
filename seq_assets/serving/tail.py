"""The serving process follows the stream itself, so an event is served about a second after it is
produced, before any micro-batch run has indexed it.

``KafkaTail`` reads every partition of each source's topic (assign, no group), decodes and indexes
small batches (on a shard, only the events of its users: ``serving.shards``) with the same engine and executors as the batch and stream paths, and hands the
events to the feature stores. It never writes the lake: the stream sensor path does that, and the
stores deduplicate the two copies of an event by its id.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

import polars as pl

from seq_assets.core.days import DAY_MS, day_start_ms, days_between
from seq_assets.core.engine import Engine, LakeContext
from seq_assets.core.enrichers import _pred_cols
from seq_assets.core.predicates import to_expr
from seq_assets.kafka.microbatch import decode_chunk
from seq_assets.storage.lake import Lake

log = logging.getLogger("seqplat.tail")


class TailContext(LakeContext):
    """Enrichment reads for the tail: the lake plus the raw rows the tail has seen but the lake may not.

    A tail batch is small and frequent, so counter history is not scanned from ``raw/`` per batch:
    the rows any counter of the source can count (the OR of their predicates) over the days a batch
    asks for are read once, kept in memory, widened when a late event reaches further back, and
    filtered per batch. The context is renewed every few minutes (``KafkaTail``), which re-reads them.
    """

    def __init__(self, lake: Lake, compiled, recent: pl.DataFrame | None = None):
        super().__init__(lake)
        self.cache = None  # small batches: enrichers ask for their users' history, not a shared one
        self.compiled = compiled
        self.recent = recent
        self._counted: dict[str, pl.DataFrame] = {}

    def _counted_history(self, source: dict, columns: list[str], start_ms: int, end_ms: int) -> pl.DataFrame:
        name = source["name"]
        days = days_between(start_ms, end_ms)
        cached = self._counted.get(name)
        if cached is not None and cached[0] <= days[0] and cached[1] >= days[-1]:
            return cached[2]
        if cached is not None:  # a late event reaches further back: widen the cached range
            days = days_between(min(start_ms, day_start_ms(cached[0])), max(end_ms, day_start_ms(cached[1])))
        counters = [e for e in self.compiled.enrichments.values() if e["kind"] == "counter" and e["source"] == name]
        ts, eid = source["time_field"], source["event_id_field"]
        cols = sorted({eid, ts, source["user_field"], *columns,
                       *(k for e in counters for k in e["keys"]), *(c for e in counters for c in _pred_cols(e["counts"]))})
        lf = self.lake.scan("raw", name, days=days, columns=cols)
        if lf is None or not counters:
            types = self.compiled.source_schema(name)  # the stored types: time as Int64, a derived id
            frame = pl.DataFrame(schema={c: types[c] for c in cols})
        else:
            expr = to_expr(counters[0]["counts"])
            for e in counters[1:]:
                expr = expr | to_expr(e["counts"])
            frame = lf.filter(expr).unique(subset=[eid], keep="first").collect()
        self._counted[name] = (days[0], days[-1], frame)
        return frame

    def history(self, source, columns, start_ms, end_ms, users):
        ts, eid = source["time_field"], source["event_id_field"]
        base = self._counted_history(source, columns, start_ms, end_ms)
        parts = [base]
        if self.recent is not None and not self.recent.is_empty():
            parts.append(self.recent.select(base.columns))
        frame = pl.concat(parts, how="vertical_relaxed").filter((pl.col(ts) >= start_ms) & (pl.col(ts) < end_ms))
        if users is not None:
            frame = frame.filter(pl.col(source["user_field"]).is_in(users.implode()))
        return frame.unique(subset=[eid], keep="first")


class KafkaTail:
    def __init__(self, service, bootstrap: str, poll_ms: int = 100, max_records: int = 5000,
                 keep_raw_days: int = 31):
        self.service, self.bootstrap = service, bootstrap
        self.engine = Engine(service.compiled, service.lake)
        self.poll_ms, self.max_records = poll_ms, max_records
        self.keep_ms = keep_raw_days * DAY_MS
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
            self._ctx, self._ctx_born = TailContext(self.service.lake, self.service.compiled), time.time()
        self._ctx.recent = self.recent[source]
        self.newest_ts[source] = max(self.newest_ts.get(source, 0), int(valid.get_column(src["time_field"]).max()))
        # A shard indexes only its users' events; every user's rows stay in ``recent``, the counters' history.
        shard = self.service.shard
        owned = valid if shard is None else shard.keep(valid, src["user_field"])
        if owned.is_empty():
            return 0
        result = self.engine.index(source, owned, self._ctx, ingested_at=now)
        added = 0
        for events in result.events.values():
            for store in self.service.stores.values():
                added += store.add_fresh(events)
        return added
