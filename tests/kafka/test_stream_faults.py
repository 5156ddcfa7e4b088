"""The streaming path under faults: a run killed half way, the broker going away (and coming back
empty), bad records, and a stream micro-batch racing a batch backfill of the same day.

Acceptance items covered here: 3 (killed micro-batch), 4 (broker down), 5 (bad records) and
6 (concurrency). Real broker, real Delta tables, real Dagster (see tests/conftest_stream.py).
"""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import date, timedelta

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from seq_assets import settings
from seq_assets.core.engine import Engine
from seq_assets.devtools.broker import BrokerError, EmbeddedBroker, free_port
from seq_assets.kafka.client import ensure_source_topics
from seq_assets.kafka.microbatch import index_records
from seq_assets.orchestration.sensors import KafkaResource
from seq_assets.settings import load_compiled
from seq_assets.storage.lake import Lake
from tests.support.stream import (
    EVENT_COLS_BASE,
    EVENT_TYPES,
    PARTITIONS,
    SOURCE,
    TOPIC,
    StreamOracle,
    assert_unique_ids,
    avoid_midnight,
    cursor_at_end,
    day_start_ms,
    drain,
    dumps,
    event,
    execute,
    keyed,
    produce,
    read_table,
    snapshot_lake,
    stream_pair,
    tick,
    utc_today,
)

pytestmark = pytest.mark.timeout(120)


def assert_events_match(lake_root, oracle: StreamOracle, days: set[date] | None = None) -> None:
    """events/<et> holds exactly the oracle's events (of ``days``), each once, with the right values."""
    for et in EVENT_TYPES:
        want = [e for e in oracle.events(et) if days is None or e["date"] in days]
        got = read_table(lake_root, "events", et)
        if got is None:
            assert want == [], et
            continue
        if days is not None:
            got = got.filter(pl.col("date").is_in(sorted(days)))
        assert_unique_ids(got)
        assert sorted(got["event_id"]) == sorted(e["event_id"] for e in want), et
        cols = [c for c in EVENT_COLS_BASE if c != "user_item_count_30d"]
        want_df = pl.DataFrame([{c: e[c] for c in cols} for e in want] or None,
                               schema={c: got.schema[c] for c in cols}).sort("event_id")
        assert_frame_equal(got.select(cols).sort("event_id"), want_df)


def nothing_in(df: pl.DataFrame | None) -> bool:
    """No table, or an empty one (a micro-batch creates the tables it writes before writing them)."""
    return df is None or df.is_empty()


def mixed_events(prefix: str, today: date, n: int = 40) -> list[dict]:
    rng = random.Random(prefix)
    d1 = today - timedelta(days=1)
    return [event(f"{prefix}{i:03d}", rng.randint(1, 6), rng.choice(["click", "save", "closeup", "impression", "hide"]),
                  rng.randint(1, 5), day_start_ms(rng.choice([today, today, d1])) + rng.randint(0, 60) * 1000,
                  dwell=rng.choice([None, 400, 2500]), bot=rng.random() < 0.1) for i in range(n)]


# ---- a micro-batch killed half way (item 3) ------------------------------------------------------

KILL_POINTS = ["raw_write", "after_raw_before_events", "between_event_tables"]


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_killed_micro_batch_is_rerun_without_loss_or_double(kill_at, kbroker, kafka_res, dg_instance, stream_lake,
                                                           monkeypatch):
    avoid_midnight()
    today = utc_today()
    evs = mixed_events(f"k{KILL_POINTS.index(kill_at)}-", today)
    bad = '{"event_id":"broken",'
    job, sensor = stream_pair()
    cursor = cursor_at_end(kafka_res)
    produce(kbroker.bootstrap, keyed(evs) + keyed(evs[:5]) + [(None, bad)])
    t = tick(sensor, dg_instance, kafka_res, cursor)
    assert len(t.run_requests) == 1
    rr = t.run_requests[0]

    killed = []
    if kill_at == "after_raw_before_events":
        real_index = Engine.index

        def index(self, *a, **kw):  # the stream's call of the engine, after raw/ was written
            if not killed:
                killed.append(True)
                raise RuntimeError("killed after raw/, before events/")
            return real_index(self, *a, **kw)

        monkeypatch.setattr(Engine, "index", index)
    else:
        real_insert = Lake.insert_unseen
        target = ("raw", SOURCE) if kill_at == "raw_write" else ("events", "pin_save")

        def insert_unseen(self, kind, name, df, key="event_id"):
            if (kind, name) == target and not killed:
                killed.append(True)
                raise RuntimeError(f"killed while writing {kind}/{name}")
            return real_insert(self, kind, name, df, key=key)

        monkeypatch.setattr(Lake, "insert_unseen", insert_unseen)

    first = execute(job, dg_instance, kafka_res, rr, raise_on_error=False)
    assert killed and not first.success
    raw = read_table(stream_lake, "raw", SOURCE)
    if kill_at == "raw_write":  # no rows (the run creates the tables it writes empty first)
        assert raw is None or raw.is_empty()
    else:
        assert raw.height == len(evs)  # raw/ was written before the kill
    if kill_at == "after_raw_before_events":
        assert all(nothing_in(read_table(stream_lake, "events", et)) for et in EVENT_TYPES)
    if kill_at == "between_event_tables":  # pin_click made it, pin_save did not
        assert read_table(stream_lake, "events", "pin_click") is not None
        assert nothing_in(read_table(stream_lake, "events", "pin_save"))

    second = execute(job, dg_instance, kafka_res, rr)  # the same run again (Dagster's retry)
    assert second.success
    oracle = StreamOracle(evs)
    raw = read_table(stream_lake, "raw", SOURCE)
    assert_unique_ids(raw)
    assert set(raw["event_id"]) == oracle.raw_ids()
    assert_events_match(stream_lake, oracle)
    dead = read_table(stream_lake, "dead_letter", SOURCE)
    assert dead["value"].to_list() == [bad]
    metric = read_table(stream_lake, "metrics", "late_arrivals")
    late = oracle.late_by_day(today)
    assert late, "test data: some events are late"
    assert dict(metric.group_by("date").agg(pl.col("late_events").sum()).iter_rows()) == late
    # and a third run of the same range changes nothing
    before = snapshot_lake(stream_lake)
    assert execute(job, dg_instance, kafka_res, rr).success
    assert snapshot_lake(stream_lake) == before


# ---- the broker down for a while (item 4) -------------------------------------------------------

def per_partition(events: list[dict], n_per_partition: int) -> list[tuple]:
    """Records sent to explicit partitions (n per partition), so offsets are known in advance."""
    out = []
    for p in range(PARTITIONS):
        for i in range(n_per_partition):
            e = events[p * n_per_partition + i]
            out.append((str(e["user_id"]), dumps(e), p))
    return out


def test_unreachable_broker_is_a_skipped_tick(dg_instance):
    job, sensor = stream_pair()
    nobody = KafkaResource(bootstrap_servers=f"127.0.0.1:{free_port()}")
    cursor = json.dumps({"offsets": {"0": 7, "1": 3, "2": 0}})
    t0 = time.monotonic()
    r = tick(sensor, dg_instance, nobody, cursor)
    assert isinstance(r, dg.SkipReason), r
    assert "no Kafka broker answers" in r.skip_message
    assert time.monotonic() - t0 < 10


def test_broker_down_then_back_empty_resumes(dg_instance, stream_lake):
    avoid_midnight()
    today = utc_today()
    compiled = load_compiled()
    job, sensor = stream_pair()
    evs = [event(f"bd{i:03d}", 1 + i % 4, "click", 1 + i % 3, day_start_ms(today) + i * 1000) for i in range(30)]
    broker = EmbeddedBroker().start(timeout=30)
    brokers = [broker]
    try:
        ensure_source_topics(broker.bootstrap, compiled)
        kafka = KafkaResource(bootstrap_servers=broker.bootstrap)
        produce(broker.bootstrap, per_partition(evs, 4))  # 4 records on each partition
        cursor, runs, _ = drain(job, sensor, dg_instance, kafka, None)
        assert json.loads(cursor)["offsets"] == {"0": 4, "1": 4, "2": 4}
        assert read_table(stream_lake, "raw", SOURCE).height == 12

        broker.stop()  # down: every tick is skipped, nothing raises, the cursor stays
        for _ in range(2):
            t0 = time.monotonic()
            r = tick(sensor, dg_instance, kafka, cursor)
            assert isinstance(r, dg.SkipReason), r
            assert "no Kafka broker answers" in r.skip_message
            assert time.monotonic() - t0 < 10

        # back, on the same port if it can be had: in-memory storage, so empty and without topics
        try:
            broker = EmbeddedBroker(port=broker.port).start(timeout=30)
        except BrokerError:
            broker = EmbeddedBroker().start(timeout=30)
        brokers.append(broker)
        kafka = KafkaResource(bootstrap_servers=broker.bootstrap)
        r = tick(sensor, dg_instance, kafka, cursor)
        assert isinstance(r, dg.SkipReason) and "does not exist" in r.skip_message, r
        ensure_source_topics(broker.bootstrap, compiled)

        # the cursor (4 per partition) is ahead of the empty broker's end: no crash, no run
        r = tick(sensor, dg_instance, kafka, cursor)
        assert isinstance(r, dg.SensorResult) and r.run_requests == []
        assert json.loads(r.cursor)["offsets"] == {"0": 0, "1": 0, "2": 0}

        # new records after the restart (fewer than the old cursor per partition) are indexed,
        # whether the stale cursor or the reset one is used
        produce(broker.bootstrap, per_partition(evs[12:], 2))
        stale = tick(sensor, dg_instance, kafka, cursor)
        reset = tick(sensor, dg_instance, kafka, r.cursor)
        for t in (stale, reset):
            assert [rr.run_config["ops"]["index_user_engagements"]["config"]["ranges"] for rr in t.run_requests] \
                == [["0:0-2", "1:0-2", "2:0-2"]]
        assert stale.run_requests[0].run_key == reset.run_requests[0].run_key
        for rr in stale.run_requests:
            assert execute(job, dg_instance, kafka, rr).success
        raw = read_table(stream_lake, "raw", SOURCE)
        assert_unique_ids(raw)
        assert sorted(raw["event_id"]) == sorted(e["event_id"] for e in evs[:18])
        assert_events_match(stream_lake, StreamOracle(evs[:18]))
        # and the path goes on from there
        cursor = stale.cursor
        produce(broker.bootstrap, [(None, dumps(evs[18]), 1)])
        cursor, runs, _ = drain(job, sensor, dg_instance, kafka, cursor)
        assert len(runs) == 1 and json.loads(cursor)["offsets"]["1"] == 3
        assert read_table(stream_lake, "raw", SOURCE).height == 19
    finally:
        for b in brokers:
            b.stop()


def test_restarted_broker_that_got_past_the_old_cursor_is_read_from_the_start(dg_instance, stream_lake):
    """The topic's id changes when an in-memory broker restarts: offsets alone could not tell."""
    avoid_midnight()
    today = utc_today()
    compiled = load_compiled()
    job, sensor = stream_pair()
    evs = [event(f"rs{i:03d}", 1 + i % 4, "click", 1 + i % 3, day_start_ms(today) + i * 1000) for i in range(30)]
    broker = EmbeddedBroker().start(timeout=30)
    brokers = [broker]
    try:
        ensure_source_topics(broker.bootstrap, compiled)
        kafka = KafkaResource(bootstrap_servers=broker.bootstrap)
        produce(broker.bootstrap, per_partition(evs, 2))
        cursor, _, _ = drain(job, sensor, dg_instance, kafka, None)
        assert json.loads(cursor)["offsets"] == {"0": 2, "1": 2, "2": 2} and json.loads(cursor)["topic_id"]
        broker.stop()
        broker = EmbeddedBroker().start(timeout=30)
        brokers.append(broker)
        ensure_source_topics(broker.bootstrap, compiled)
        kafka = KafkaResource(bootstrap_servers=broker.bootstrap)
        produce(broker.bootstrap, per_partition(evs[6:], 5))  # 5 per partition: past the old cursor
        r = tick(sensor, dg_instance, kafka, cursor)
        assert [rr.run_config["ops"]["index_user_engagements"]["config"]["ranges"] for rr in r.run_requests] \
            == [["0:0-5", "1:0-5", "2:0-5"]]
        for rr in r.run_requests:
            assert execute(job, dg_instance, kafka, rr).success
        assert read_table(stream_lake, "raw", SOURCE).height == 21
    finally:
        for b in brokers:
            b.stop()


# ---- bad records (item 5) ----------------------------------------------------------------------

def test_bad_records_go_to_dead_letters_and_the_rest_is_indexed(kbroker, kafka_res, dg_instance, stream_lake):
    avoid_midnight()
    today = utc_today()
    d1 = today - timedelta(days=1)
    good = mixed_events("ok-", today, 30)
    unknown = event("unknown-action", 3, "repin", 2, day_start_ms(today) + 5)
    at_limit = dict(event("at-limit", 4, "click", 2, day_start_ms(today) + 6), pad="")
    at_limit["pad"] = "x" * (65536 - len(dumps(at_limit).encode()))
    assert len(dumps(at_limit).encode()) == 65536  # exactly max_record_bytes: still valid
    missing = event("no-user", 1, "click", 1, day_start_ms(d1) + 7)
    del missing["user_id"]
    mistyped_user = dict(event("bad-user", 1, "click", 1, day_start_ms(d1) + 8), user_id="abc")
    mistyped_ts = dict(event("bad-ts", 1, "click", 1, 0), ts="yesterday")
    mistyped_bot = dict(event("bad-bot", 1, "click", 1, day_start_ms(today) + 9), is_bot="maybe")
    over = dict(event("over-limit", 4, "click", 2, day_start_ms(today) + 10), pad="")
    over["pad"] = "x" * (65537 - len(dumps(over).encode()))
    huge = dict(event("huge", 4, "click", 2, day_start_ms(today) + 11), pad="y" * (1024 * 1024))
    bad = [  # (value, reason prefix, expected date)
        ('{"event_id":"trunc","user_id":1,"action":"cl', "unparseable JSON", today),
        ("[1, 2, 3]", "unparseable JSON", today),
        (b"\xff\xfe\x00garbage", "unparseable JSON", today),
        (dumps(missing), "missing field 'user_id'", d1),
        (dumps(mistyped_user), "mistyped field 'user_id'", d1),
        (dumps(mistyped_ts), "mistyped field 'ts'", today),
        (dumps(mistyped_bot), "mistyped field 'is_bot'", today),
        (dumps(over), "record larger than 65536 bytes", today),
        (dumps(huge), "record larger than 65536 bytes", today),  # 1 MiB: the broker takes it
    ]
    assert len(bad[-1][0]) > 1024 * 1024
    items = keyed(good[:15]) + [(None, v) for v, _, _ in bad] + keyed([unknown, at_limit]) + keyed(good[15:])
    job, sensor = stream_pair()
    cursor = cursor_at_end(kafka_res)
    offsets = produce(kbroker.bootstrap, items)
    cursor, runs, _ = drain(job, sensor, dg_instance, kafka_res, cursor)
    assert len(runs) == 1

    dead = read_table(stream_lake, "dead_letter", SOURCE)
    assert dead.height == len(bad)
    where = {(p, o): it for it, (p, o) in zip(items, offsets)}
    by_value = {v if isinstance(v, str) else v.decode("utf-8", errors="replace"): (r, d) for v, r, d in bad}
    for row in dead.iter_rows(named=True):
        assert row["kafka_partition"] is not None and row["kafka_offset"] is not None
        sent = where[(row["kafka_partition"], row["kafka_offset"])][1]
        sent = sent if isinstance(sent, str) else sent.decode("utf-8", errors="replace")
        assert row["value"] == sent
        reason, day = by_value[row["value"]]
        assert row["reason"].startswith(reason), (row["reason"], reason)
        assert row["date"] == day
        assert row["origin"] == "kafka"
        assert row["record_id"] == f"{TOPIC}:{row['kafka_partition']}:{row['kafka_offset']}"
    assert_unique_ids(dead, "record_id")

    valid = good + [unknown, at_limit]
    raw = read_table(stream_lake, "raw", SOURCE)
    assert sorted(raw["event_id"]) == sorted(e["event_id"] for e in valid)
    oracle = StreamOracle([{k: v for k, v in e.items() if k != "pad"} for e in valid])
    assert_events_match(stream_lake, oracle)
    indexed = {i for et in EVENT_TYPES for i in read_table(stream_lake, "events", et)["event_id"]}
    assert "unknown-action" not in indexed and "at-limit" in indexed

    # a micro-batch of nothing but bad records, and a re-run of the first range: no doubles
    cursor2 = cursor
    produce(kbroker.bootstrap, [(None, "not json", 1), (None, dumps(missing), 1)])
    _, runs2, _ = drain(job, sensor, dg_instance, kafka_res, cursor2)
    assert len(runs2) == 1
    assert execute(job, dg_instance, kafka_res, _rr_of(runs[0])).success
    dead = read_table(stream_lake, "dead_letter", SOURCE)
    assert dead.height == len(bad) + 2
    assert_unique_ids(dead, "record_id")
    assert read_table(stream_lake, "raw", SOURCE).height == len(valid)


def _rr_of(result) -> dg.RunRequest:
    """The run request a finished run was made from (its config and tags)."""
    run = result.dagster_run
    return dg.RunRequest(run_config=run.run_config, tags={k: v for k, v in run.tags.items() if k.startswith("seq/")})


# ---- a micro-batch racing a batch backfill of the same day (item 6) --------------------------------

def records_frame(events: list[dict], partition: int, first_offset: int) -> pl.DataFrame:
    """What read_range returns for these events (the decoder does not care where they came from)."""
    n = len(events)
    return pl.DataFrame({
        "value": [dumps(e) for e in events], "key": [str(e["user_id"]) for e in events],
        "kafka_partition": [partition] * n, "kafka_offset": list(range(first_offset, first_offset + n)),
        "kafka_ts": [e["ts"] for e in events],
    }, schema={"value": pl.String, "key": pl.String, "kafka_partition": pl.Int32, "kafka_offset": pl.Int64,
               "kafka_ts": pl.Int64})


class StreamFeed:
    """Micro-batches of fresh events of one day, with distinct offsets."""

    def __init__(self, day: date, seed: int):
        self.day, self.rng, self.n, self.offset, self.sent = day, random.Random(seed), 0, 0, []

    def batch(self, size: int) -> tuple[pl.DataFrame, str]:
        evs = []
        for _ in range(size):
            evs.append(event(f"c{self.n:05d}", self.rng.randint(1, 10), self.rng.choice(["click", "save", "closeup", "hide"]),
                             self.rng.randint(1, 6), day_start_ms(self.day) + self.rng.randint(0, 3600) * 1000,
                             dwell=self.rng.choice([None, 3000])))
            self.n += 1
        frame = records_frame(evs, 0, self.offset)
        batch_id = f"{SOURCE}@0:{self.offset}-{self.offset + size}"
        self.offset += size
        self.sent += evs
        return frame, batch_id


def check_day(lake_root, feed: StreamFeed) -> None:
    oracle = StreamOracle(feed.sent)
    raw = read_table(lake_root, "raw", SOURCE)
    assert_unique_ids(raw)
    assert set(raw["event_id"]) == oracle.raw_ids()
    assert_events_match(lake_root, oracle, {feed.day})


def test_micro_batch_between_backfill_read_and_overwrite_is_kept(stream_lake):
    """Deterministic interleavings of index_batch_day (B) and a micro-batch (A) of the same day."""
    day = utc_today() - timedelta(days=1)
    compiled = load_compiled()
    a, b = Engine(compiled, settings.lake(), settings.landing()), Engine(compiled, settings.lake(), settings.landing())
    feed = StreamFeed(day, 1)
    index_records(a, SOURCE, *feed.batch(20))

    # 1. A writes raw and events after B read raw, before B overwrites the day.
    real_write = b.write_events_day
    done = []

    def write_after_a(et, d, df):
        if not done:
            done.append(index_records(a, SOURCE, *feed.batch(15)))
        return real_write(et, d, df)

    b.write_events_day = write_after_a
    b.index_batch_day(SOURCE, day)
    assert done and sum(done[0].events_inserted.values()) > 0
    check_day(stream_lake, feed)

    # 2. A writes raw after B read it, and its events only after B finished.
    raw_written, go = threading.Event(), threading.Event()
    real_index = a.index

    def paused_index(*args, **kw):  # index_records calls it after raw/ is written
        raw_written.set()
        assert go.wait(30)
        return real_index(*args, **kw)

    a.index = paused_index
    errors = []

    def run_a():
        try:
            index_records(a, SOURCE, *feed.batch(15))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    thread = threading.Thread(target=run_a)
    started = []

    def write_during_a(et, d, df):
        if not started:
            started.append(True)
            thread.start()
            assert raw_written.wait(30)
        return real_write(et, d, df)

    b.write_events_day = write_during_a
    b.index_batch_day(SOURCE, day)
    go.set()
    thread.join(30)
    assert not thread.is_alive() and not errors, errors
    check_day(stream_lake, feed)


def test_stream_and_backfill_of_the_same_day_at_once(stream_lake):
    day = utc_today() - timedelta(days=1)
    compiled = load_compiled()
    stream_engine, batch_engine = Engine(compiled, settings.lake(), settings.landing()), Engine(compiled, settings.lake(), settings.landing())
    feed = StreamFeed(day, 2)
    index_records(stream_engine, SOURCE, *feed.batch(10))
    for round_ in range(3):
        stop = threading.Event()
        errors: list[BaseException] = []
        backfills = [0]

        def stream():
            try:
                for _ in range(5):
                    index_records(stream_engine, SOURCE, *feed.batch(8))
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
            finally:
                stop.set()

        def backfill():
            try:
                while not stop.is_set():
                    batch_engine.index_batch_day(SOURCE, day)
                    backfills[0] += 1
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=stream), threading.Thread(target=backfill)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not any(t.is_alive() for t in threads)
        assert not errors, errors
        assert backfills[0] >= 1
        check_day(stream_lake, feed)
