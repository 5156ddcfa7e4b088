"""The lean record decoder of the micro-batch reader (seq_assets/kafka_read.py) against kafka-python.

Records of every shape the v2 format allows (null keys and values, headers, multi-byte lengths and
deltas, invalid UTF-8, compressed batches) are produced to a real broker and read back twice: by a
plain kafka-python consumer (ConsumerRecord) and by the lean consumer. Both must give the same
(offset, timestamp, key, value) for every record, also when the read starts inside a batch.
"""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from seq_assets.kafka.client import create_topics, end_offsets_exact, make_offset_probe
from seq_assets.kafka.microbatch import OffsetRange, read_range
from seq_assets.kafka.reader import lean_consumer

pytestmark = pytest.mark.timeout(120)


def _records() -> list[tuple]:
    """(key, value, headers, timestamp_ms) covering the format's corners."""
    out = []
    for i in range(300):
        key = None if i % 7 == 1 else f"user-{i}".encode() * (1 + (i % 40))  # up to ~300 bytes: 2-byte varints
        if i % 11 == 0 and key is not None:
            value = None  # a tombstone
        elif i % 13 == 0:
            value = b"\xff\xfe not utf-8 \x80"
        elif i % 17 == 0:
            value = b"x" * 70_000  # a 3-byte length varint
        else:
            value = ('{"event_id": "e%d", "n": %d}' % (i, i)).encode()
        headers = [("trace", f"t{i}".encode()), ("empty", b"")] if i % 5 == 0 else []
        ts = 1_700_000_000_000 + i * 997 - (50_000 if i % 9 == 0 else 0)  # deltas of both signs
        out.append((key, value, headers, ts))
    return out


def _produce(bootstrap: str, topic: str, compression: str | None) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=compression, linger_ms=20,
                      batch_size=64 * 1024, max_request_size=4 * 1024 * 1024)
    try:
        for key, value, headers, ts in _records():
            p.send(topic, key=key, value=value, headers=headers, timestamp_ms=ts, partition=0)
        p.flush(timeout=30)
    finally:
        p.close(timeout=5)


def _read_all(consumer, topic: str, start: int, end: int) -> list[tuple]:
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, start)
    out = []
    while consumer.position(tp) < end:
        for recs in consumer.poll(timeout_ms=1000).values():
            out.extend(recs)
    consumer.close()
    return out


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_lean_consumer_reads_what_kafka_python_reads(kbroker, compression):
    topic = f"lean-{compression or 'none'}"
    create_topics(kbroker.bootstrap, {topic: 1})
    _produce(kbroker.bootstrap, topic, compression)
    probe = make_offset_probe(kbroker.bootstrap)
    end = end_offsets_exact(probe, [TopicPartition(topic, 0)])[TopicPartition(topic, 0)]
    probe.close()
    assert end == 300

    cfg = dict(bootstrap_servers=kbroker.bootstrap, group_id=None, enable_auto_commit=False,
               max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    for start in (0, 5, 151):  # 5 and 151 fall inside a producer batch
        plain = [(r.offset, r.timestamp, r.key, r.value) for r in _read_all(KafkaConsumer(**cfg), topic, start, end)]
        lean_c = lean_consumer(**cfg)
        assert lean_c.lean, "kafka-python internals changed: the lean decoder is not in use"
        lean = _read_all(lean_c, topic, start, end)
        assert [tuple(r) for r in lean] == plain
        assert plain[0][0] == start and len(plain) == end - start
    expected = _records()
    assert [(r[2], r[3], r[1]) for r in lean] == [(k, v, ts) for k, v, _, ts in expected[151:]]


def test_read_range_gives_exact_ranges_and_text_values(kbroker):
    topic = "lean-range"
    create_topics(kbroker.bootstrap, {topic: 1})
    _produce(kbroker.bootstrap, topic, None)
    df = read_range(kbroker.bootstrap, topic, [OffsetRange(0, 10, 40)])
    assert df.get_column("kafka_offset").to_list() == list(range(10, 40))
    expected = _records()[10:40]
    values = df.get_column("value").to_list()
    for (key, value, _, ts), got, got_key, got_ts in zip(expected, values, df.get_column("key").to_list(),
                                                         df.get_column("kafka_ts").to_list()):
        assert got == ("" if value is None else value.decode("utf-8", errors="replace"))
        assert got_key == (None if key is None else key.decode())
        assert got_ts == ts
