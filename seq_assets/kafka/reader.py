"""A lean record decoder for the micro-batch reader, on top of kafka-python's consumer.

kafka-python turns every record into a ``ConsumerRecord`` with headers, checksums, sizes and
deserializer calls: 10-15 us of Python per record, most of a micro-batch's time on a small machine.
The micro-batch needs four things per record (offset, timestamp, key, value). ``lean_consumer``
returns a ``KafkaConsumer`` whose fetched record batches are decoded by :func:`v2_records`, one
tight loop over the v2 record format yielding plain ``(offset, timestamp, key, value)`` tuples.
Everything else stays kafka-python's: connections, metadata, fetch sessions, positions, batch CRC
checks, decompression, control batches. Batches in the old (v0/v1) formats go through
kafka-python's own record objects. If a kafka-python release moves the internals this hooks into,
the consumer falls back to kafka-python's decoding, which yields the same tuples (slower).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)

Record = tuple  # (offset, timestamp ms, key bytes | None, value bytes | None)


def _varint(buf, pos: int) -> tuple[int, int]:
    """A zigzag varint at ``pos``: (value, next position)."""
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def v2_records(batch) -> Iterator[Record]:
    """The records of a (decompressed) v2 ``DefaultRecordBatch`` as plain tuples.

    Record => Length Attributes TimestampDelta OffsetDelta KeyLen Key ValueLen Value Headers (all
    lengths zigzag varints, -1 for null). Headers are skipped by the record length.
    """
    batch._maybe_uncompress()
    buf = bytes(batch._buffer)
    pos = batch._pos
    base_offset = batch.base_offset
    log_append = batch.timestamp_type == batch.LOG_APPEND_TIME
    first_ts, max_ts = batch.first_timestamp, batch.max_timestamp
    for _ in range(batch._num_records):
        b = buf[pos]
        if b < 0x80:
            length, pos = (b >> 1) ^ -(b & 1), pos + 1
        else:
            length, pos = _varint(buf, pos)
        end = pos + length
        pos += 1  # attributes (unused)
        b = buf[pos]
        if b < 0x80:
            ts_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
        else:
            ts_delta, pos = _varint(buf, pos)
        b = buf[pos]
        if b < 0x80:
            off_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
        else:
            off_delta, pos = _varint(buf, pos)
        b = buf[pos]
        if b < 0x80:
            klen, pos = (b >> 1) ^ -(b & 1), pos + 1
        else:
            klen, pos = _varint(buf, pos)
        if klen >= 0:
            key = buf[pos:pos + klen]
            pos += klen
        else:
            key = None
        b = buf[pos]
        if b < 0x80:
            vlen, pos = (b >> 1) ^ -(b & 1), pos + 1
        else:
            vlen, pos = _varint(buf, pos)
        value = buf[pos:pos + vlen] if vlen >= 0 else None
        yield (base_offset + off_delta, max_ts if log_append else first_ts + ts_delta, key, value)
        pos = end


def _lean_partition_records_class():
    """A subclass of kafka-python's ``Fetcher.PartitionRecords`` that yields tuples, or None."""
    try:
        from kafka import errors as Errors
        from kafka.consumer.fetcher import Fetcher
        from kafka.record.default_records import DefaultRecordBatch
    except ImportError:  # pragma: no cover - a kafka-python without these modules
        return None
    base = getattr(Fetcher, "PartitionRecords", None)
    needed = ("_unpack_records", "_maybe_skip_record", "drain")
    if base is None or not all(hasattr(base, n) for n in needed) or not all(
            hasattr(DefaultRecordBatch, n) for n in ("_maybe_uncompress", "is_control_batch", "validate_crc")):
        return None

    class LeanPartitionRecords(base):
        def _maybe_skip_record(self, record):
            # A fetch that starts inside a batch returns the whole batch: skip what precedes it.
            return record[0] < self.fetch_offset

        def _unpack_records(self, tp, records, key_deserializer, value_deserializer):
            batch = records.next_batch()
            last_batch = None
            while batch is not None:
                last_batch = batch
                if self.check_crcs and not batch.validate_crc():
                    raise Errors.CorruptRecordError(
                        f"Record batch for partition {tp} at offset {batch.base_offset} failed crc check")
                if batch.magic == 2:
                    self.leader_epoch = batch.leader_epoch
                    if not batch.is_control_batch:  # transaction markers are not records
                        for rec in v2_records(batch):
                            self.next_fetch_offset = rec[0] + 1
                            yield rec
                else:
                    for record in batch:
                        self.next_fetch_offset = record.offset + 1
                        yield (record.offset, record.timestamp, record.key, record.value)
                batch = records.next_batch()
            if last_batch is not None and last_batch.magic == 2:
                # v2 keeps a batch's last offset even when compaction removed its last record.
                self.next_fetch_offset = last_batch.next_offset
            self.drain()

    return LeanPartitionRecords


_LEAN = _lean_partition_records_class()


def lean_consumer(**config):
    """A ``KafkaConsumer`` whose ``poll`` returns ``(offset, timestamp, key, value)`` tuples.

    Only for readers that assign partitions themselves and keep the default isolation level
    (read_uncommitted), as the micro-batch reader does: transactions are not filtered here.
    """
    from kafka import KafkaConsumer

    if config.get("isolation_level", "read_uncommitted") != "read_uncommitted":
        raise ValueError("lean_consumer reads with isolation_level read_uncommitted only")
    consumer = KafkaConsumer(**config)
    fetcher = getattr(consumer, "_fetcher", None)
    if _LEAN is not None and fetcher is not None and hasattr(fetcher, "PartitionRecords"):
        fetcher.PartitionRecords = _LEAN
        consumer.lean = True
    else:
        log.warning("kafka-python internals changed: the micro-batch reader decodes with ConsumerRecord")
        consumer.lean = False
    return consumer


def as_tuple(record) -> Record:
    """``(offset, timestamp, key, value)`` of a tuple from a lean consumer or a ConsumerRecord."""
    if isinstance(record, tuple) and not hasattr(record, "_fields"):
        return record
    return (record.offset, record.timestamp, record.key, record.value)
