"""A Kafka cluster: two Tansu brokers sharing one s3:// storage on a moto server (the kcluster
fixture, tests/support/stream.py). Records produced through either broker are read through the
bootstrap that lists both, by runs of one partition each that commit at the same time; raw/ and
events/ are checked against the oracle. A broker going away leaves the cluster readable."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import timedelta

import pytest

from seq_assets.kafka.client import kafka_answers
from seq_assets.orchestration.sensors import KafkaResource
from tests.support.stream import (
    PARTITIONS,
    SOURCE,
    TOPIC,
    StreamOracle,
    assert_lake_matches,
    avoid_midnight,
    day_start_ms,
    drain,
    dumps,
    event,
    produce,
    run_at_once,
    stream_pair,
    tick,
    utc_today,
)

pytestmark = pytest.mark.timeout(180)


def wait_for_end(kafka: KafkaResource, records: int, timeout: float = 60.0):
    """(end offsets, topic id) once the broker's end offsets add up to ``records``."""
    deadline = time.monotonic() + timeout
    while True:
        state = kafka.topic_state(TOPIC)
        if sum(state[0].values()) >= records or time.monotonic() > deadline:
            assert sum(state[0].values()) == records, state
            return state
        time.sleep(0.5)


def test_two_brokers_on_shared_s3_storage_feed_parallel_runs_losing_and_doubling_nothing(
        kcluster, dg_instance, stream_lake, monkeypatch):
    avoid_midnight()
    today = utc_today()
    a, b = kcluster.brokers
    assert kcluster.bootstrap == f"{a.bootstrap},{b.bootstrap}"
    kafka = KafkaResource(bootstrap_servers=kcluster.bootstrap)
    monkeypatch.setenv("SEQ_STREAM_PARTITION_GROUPS", str(PARTITIONS))
    job, sensor = stream_pair(max_batch=40, monkeypatch=monkeypatch)
    rng = random.Random(3)
    evs = [event(f"cl{i:03d}", rng.randint(1, 9), rng.choice(["click", "save", "closeup", "hide"]), rng.randint(1, 5),
                 day_start_ms(rng.choice([today, today - timedelta(days=1)])) + i * 1000, dwell=rng.choice([None, 2500]))
           for i in range(120)]
    # half through each broker, at the same time, onto every partition; some events twice
    items = [(str(e["user_id"]), dumps(e), i % PARTITIONS) for i, e in enumerate(evs)]
    items += [items[i] for i in range(0, 120, 10)]
    halves = [items[0::2], items[1::2]]
    threads = [threading.Thread(target=produce, args=(broker.bootstrap, half)) for broker, half in zip((a, b), halves)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # what either broker took, both hold: each broker's view of the other's writes comes from the
    # store (Tansu re-reads a partition's watermark every few seconds); wait until both see it all
    ends_a = wait_for_end(KafkaResource(bootstrap_servers=a.bootstrap), len(items))
    ends_b = wait_for_end(KafkaResource(bootstrap_servers=b.bootstrap), len(items))
    assert ends_a == ends_b and ends_a[1]

    r = tick(sensor, dg_instance, kafka, None)
    # 44 records per partition, at most 40 per run: two runs per partition, all six at once
    assert len(r.run_requests) == 2 * PARTITIONS and all(
        len(next(iter(rr.run_config["ops"].values()))["config"]["ranges"]) == 1 for rr in r.run_requests)
    results = run_at_once(SOURCE, kafka.bootstrap(), r.run_requests)
    assert sum(res.records for res in results) == len(items)
    assert_lake_matches(stream_lake, StreamOracle(evs))

    # one broker away: the other answers for the cluster, through the same bootstrap
    a.stop()
    try:
        assert kafka_answers(kcluster.bootstrap) and not kafka_answers(a.bootstrap, timeout=0.5)
        more = [event(f"cm{i:03d}", 1 + i % 5, "click", 1 + i % 3, day_start_ms(today) + i * 1000) for i in range(9)]
        produce(b.bootstrap, [(str(e["user_id"]), dumps(e), i % PARTITIONS) for i, e in enumerate(more)])
        cursor, runs, _ = drain(job, sensor, dg_instance, kafka, r.cursor)
        assert len(runs) == PARTITIONS
        assert json.loads(cursor)["offsets"] == {str(p): ends_a[0][p] + 3 for p in range(PARTITIONS)}
        assert_lake_matches(stream_lake, StreamOracle(evs + more))
    finally:
        a.start()
