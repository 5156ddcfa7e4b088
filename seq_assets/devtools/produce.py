"""Publishing records to a source's Kafka topic, and ``seqctl produce``: live demo events.

* :func:`produce_events` sends ``(key, value)`` text pairs with one ``KafkaProducer``, rate limited
  per chunk of records (one sleep per ~50 ms of traffic, never per record).
* :class:`LiveEvents` turns :func:`seq_assets.demo_data.generate_event_lines` (which describes a
  *history*: whole days, in delivery order) into a *live* stream whose event times track the wall
  clock, with the generator's faults kept (see the class for how).
"""

from __future__ import annotations

import itertools
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import polars as pl

__all__ = ["produce_events", "LiveEvents"]

from seq_assets.core.days import DAY_MS


def _bytes(x) -> bytes | None:
    if x is None:
        return None
    if isinstance(x, bytes):
        return x
    return str(x).encode()


def produce_events(bootstrap: str, source: dict, lines: Iterable[tuple[str | None, str]],
                   rate: float | None = None, duration: float | None = None,
                   progress: Callable[[str], None] | None = None, *, producer=None,
                   producer_config: dict | None = None, progress_every: float = 2.0,
                   flush_timeout: float = 60.0) -> dict:
    """Send every ``(key, value)`` of ``lines`` to ``source['topic']``; returns counts.

    ``key`` is the Kafka key as text (for sources keyed by user: the user id, e.g. ``"42"``) or
    None (unkeyed; the producer spreads those over partitions); ``value`` is the record text.
    ``rate``: at most this many records per second on average (None: as fast as possible), enforced
    per chunk of ~50 ms of records. ``duration``: stop after this many seconds even if ``lines``
    has more. Ctrl-C stops early too; what was sent is flushed either way.

    ``lines`` is consumed lazily, so it can be an endless or self-paced generator.

    Returns ``{"topic", "sent", "failed", "keyed", "unkeyed", "bytes", "seconds", "rate",
    "stopped_by": "exhausted" | "duration" | "interrupted" | "error", "first_error"}``; ``sent``
    counts records the broker acknowledged (acks=1), ``failed`` those it did not or that were
    refused. "error": the topic does not exist (nothing is sent; Tansu would create it on the
    producer's first metadata request, with 4 partitions), or a send blocked ``max_block_ms`` (no
    broker). Create topics first (:func:`seq_assets.broker.create_topics`).
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError, KafkaTimeoutError

    from seq_assets.kafka.client import list_topics

    topic = source["topic"]
    started = time.monotonic()
    if topic not in list_topics(bootstrap):
        # Never let a producer ask for it: Tansu would create it (4 partitions, not the source's).
        return {"topic": topic, "sent": 0, "failed": 0, "keyed": 0, "unkeyed": 0, "bytes": 0,
                "seconds": round(time.monotonic() - started, 3), "rate": None, "stopped_by": "error",
                "first_error": f"topic {topic!r} does not exist at {bootstrap}; create it first"}
    own = producer is None
    if own:
        settings = dict(
            bootstrap_servers=bootstrap, client_id="seqctl-produce",
            acks=1, enable_idempotence=False,  # leader ack only: fast, fine for a demo stream
            linger_ms=5, batch_size=64 * 1024,  # bigger buys nothing: kafka-python tops out ~18k records/s
            max_request_size=max(1024 * 1024, 2 * int(source.get("max_record_bytes") or 0)),
            retries=5, max_block_ms=30_000, request_timeout_ms=30_000,
            allow_auto_create_topics=False,  # honoured by Kafka; Tansu ignores it (see above)
        )
        settings.update(producer_config or {})
        producer = KafkaProducer(**settings)

    failed = [0]
    first_error: list[str] = []

    def on_error(exc):  # runs on the producer's I/O thread; the only writer of failed[0]
        failed[0] += 1
        if not first_error:
            first_error.append(repr(exc))

    attempted = keyed = nbytes = refused = 0
    chunk = max(1, min(20_000, int(rate * 0.05))) if rate else 2_000
    it = iter(lines)
    stopped_by = "exhausted"
    t0 = time.monotonic()
    next_report = t0 + progress_every
    last_n, last_t = 0, t0
    send = producer.send
    try:
        while True:
            batch = list(itertools.islice(it, chunk))
            if not batch:
                break
            for key, value in batch:
                k, v = _bytes(key), _bytes(value)
                try:
                    send(topic, key=k, value=v).add_errback(on_error)
                except KafkaError as e:  # refused before sending: too large, or no broker / topic
                    refused += 1
                    if not first_error:
                        first_error.append(repr(e))
                    if isinstance(e, KafkaTimeoutError):  # blocked max_block_ms: nobody takes records
                        stopped_by = "error"
                        break
                    continue
                attempted += 1
                keyed += k is not None
                nbytes += len(v)
            if stopped_by == "error":
                break
            now = time.monotonic()
            if rate:
                due = t0 + (attempted + refused) / rate
                if due > now:
                    time.sleep(due - now)
                    now = time.monotonic()
            if progress and now >= next_report:
                progress(f"{topic}: sent {attempted:,} records, {(attempted - last_n) / (now - last_t):,.0f}/s "
                         f"(overall {attempted / (now - t0):,.0f}/s), failed {failed[0] + refused:,}")
                next_report = now + progress_every
                last_n, last_t = attempted, now
            if duration is not None and now - t0 >= duration:
                stopped_by = "duration"
                break
    except KeyboardInterrupt:
        stopped_by = "interrupted"
    finally:
        try:
            producer.flush(timeout=flush_timeout)
        finally:
            if own:
                producer.close(timeout=10)
    seconds = time.monotonic() - t0
    if progress:
        progress(f"{topic}: done, {attempted - failed[0]:,} records acknowledged in {seconds:.1f}s "
                 f"({attempted / seconds if seconds else 0:,.0f}/s), failed {failed[0] + refused:,} ({stopped_by})")
    return {
        "topic": topic,
        "sent": attempted - failed[0],
        "failed": failed[0] + refused,
        "keyed": keyed,
        "unkeyed": attempted - keyed,
        "bytes": nbytes,
        "seconds": round(seconds, 3),
        "rate": round(attempted / seconds, 1) if seconds else None,
        "stopped_by": stopped_by,
        "first_error": first_error[0] if first_error else None,
    }


# ---- live demo events ----------------------------------------------------------------------------

class LiveEvents:
    """Iterable of ``(key, value)``: ``rate * duration`` demo engagements whose event times track
    the wall clock, released in real time (each record no earlier than its own event time).

    ``generate_event_lines`` lays sessions of minutes over a window and clips them to its edges,
    so a window of seconds ending "now" piles about half of its events onto the window's last
    millisecond (measured: 54% for a 10 s window, 44% for 60 s). So each segment of the run
    (<= 5 min, fewer events at high rates) is generated over a *virtual* two-hour window and then
    mapped onto its real seconds:

    * event times are remapped monotonically (by rank) onto the segment's real window, so every
      user's order, ties, sessions and the out_of_order overtakes survive, compressed;
    * the ``"ts"`` field of the JSON is rewritten to the new time (rows the generator broke, i.e.
      truncated JSON, keep their text);
    * ``late`` records (and their byte-identical duplicates) get an event time 1-3 days before
      now (60/30/10%), which is what "delivered 1-3 days after its event day" means live;
    * records are released in the generator's delivery order, each once the wall clock passed the
      latest event time before it, so no record is sent before it happened. Records the generator
      delivers after the window (late ones, day-later duplicates) go out at the segment's end.

    ``fault_counts`` counts the records handed out so far per ``is_fault`` label. The next segment
    is generated in a background thread while the current one is sent. Event ids are
    ``live<seed>-<segment start ms>-<seed>-<n>``: unique across segments and runs (the generator
    numbers events from 0 in each call).
    """

    VIRTUAL_WINDOW_MS = 2 * 3_600_000
    MAX_SEGMENT_S = 300.0
    MAX_SEGMENT_EVENTS = 200_000
    TICK_MS = 50

    def __init__(self, rate: float, duration: float, *, seed: int = 7, users: int = 2000,
                 items: int | None = 10_000, start_ms: int | None = None, pace: bool = True):
        if rate <= 0 or duration <= 0:
            raise ValueError("rate and duration must be positive")
        self.rate, self.duration, self.seed, self.users, self.items = rate, duration, seed, users, items
        self.start_ms = int(time.time() * 1000) if start_ms is None else int(start_ms)
        self.pace = pace
        self.events = int(round(rate * duration))
        seg_s = min(duration, max(10.0, min(self.MAX_SEGMENT_S, self.MAX_SEGMENT_EVENTS / rate)))
        n_seg = max(1, math.ceil(duration / seg_s - 1e-9))
        bounds = [round(i * duration * 1000 / n_seg) for i in range(n_seg + 1)]
        counts = [self.events * (i + 1) // n_seg - self.events * i // n_seg for i in range(n_seg)]
        self.segments = [(self.start_ms + bounds[i], bounds[i + 1] - bounds[i], counts[i]) for i in range(n_seg)]
        self.fault_counts: dict[str, int] = {}
        self.records = 0

    def segment_frame(self, start_ms: int, length_ms: int, events: int) -> pl.DataFrame:
        """Columns key, value, is_fault, event_ts (the new event time) and send_ms, in send order."""
        from seq_assets.devtools.demo_data import DemoSpec, generate_event_lines

        if events <= 0:
            return pl.DataFrame(schema={"key": pl.String, "value": pl.String, "is_fault": pl.String,
                                        "event_ts": pl.Int64, "send_ms": pl.Int64})
        end = start_ms + length_ms
        spec = DemoSpec(users=self.users, events=events, seed=self.seed, items=self.items)
        raw = generate_event_lines(spec, start_ms=end - max(self.VIRTUAL_WINDOW_MS, length_ms), end_ms=end,
                                   id_prefix=f"live{self.seed}-{start_ms}-")
        n = raw["event_ts"].count()
        ts = pl.col("event_ts")
        real = (pl.lit(start_ms, pl.Int64)
                + ((ts.rank("min") - 1).cast(pl.Float64) * (length_ms / max(n, 1))).floor().cast(pl.Int64))
        late_values = raw.filter(pl.col("is_fault") == "late")["value"]
        bucket = pl.col("value").hash(self.seed) % 10
        late_days = pl.when(bucket < 6).then(1).when(bucket < 9).then(2).otherwise(3).cast(pl.Int64)
        frame = raw.with_columns(_real=real).with_columns(
            # release time: the latest (remapped) event time so far in delivery order
            send_ms=pl.col("_real").fill_null(strategy="forward").fill_null(start_ms).cum_max(),
            event_ts=pl.when(pl.col("value").is_in(late_values.implode()))
            .then(pl.col("_real") - late_days * DAY_MS).otherwise(pl.col("_real")),
        )
        return frame.with_columns(
            value=pl.when(pl.col("event_ts").is_not_null())
            .then(pl.col("value").str.replace(r'"ts":-?\d+', pl.concat_str(pl.lit('"ts":'),
                                                                             pl.col("event_ts").cast(pl.String))))
            .otherwise(pl.col("value")),
        ).select("key", "value", "is_fault", "event_ts", "send_ms")

    def __iter__(self) -> Iterator[tuple[str | None, str]]:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-events")
        try:
            futures = [pool.submit(self.segment_frame, *seg) for seg in self.segments[:1]]
            for i in range(len(self.segments)):
                frame = futures[i].result()
                if i + 1 < len(self.segments):  # generate the next segment while this one is sent
                    futures.append(pool.submit(self.segment_frame, *self.segments[i + 1]))
                yield from self._release(frame)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _release(self, frame: pl.DataFrame) -> Iterator[tuple[str | None, str]]:
        keys, values, faults = frame["key"].to_list(), frame["value"].to_list(), frame["is_fault"].to_list()
        ticks = (frame["send_ms"] // self.TICK_MS).rle().struct.unnest()
        offset = 0
        for tick, length in zip(ticks["value"].to_list(), ticks["len"].to_list()):
            if self.pace:  # one sleep per tick: everything in it happened before its end
                wait = (tick + 1) * self.TICK_MS / 1000 - time.time()
                if wait > 0:
                    time.sleep(wait)
            for j in range(offset, offset + length):
                f = faults[j]
                if f is not None:
                    self.fault_counts[f] = self.fault_counts.get(f, 0) + 1
                self.records += 1
                yield keys[j], values[j]
            offset += length
