"""Kafka client helpers every runtime shares: probing, topics, and exact end offsets.

* :func:`create_topics` / :func:`ensure_source_topics`: idempotent topic creation.
* :func:`kafka_answers`: a cheap "does a Kafka broker answer here" probe (one ApiVersions request).
* :func:`end_offsets_exact`: the true end offset (high watermark) of partitions, also on Tansu,
  whose ListOffsets(latest) answer is wrong (see the function).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable


def _addresses(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port`` of each comma-separated bootstrap address (a ``scheme://`` prefix allowed)."""
    out = []
    for item in bootstrap.split(","):
        item = item.strip()
        if not item:
            continue
        if "://" in item:
            item = item.split("://", 1)[1]
        host, _, port = item.rpartition(":")
        out.append(((host.strip("[]") or "127.0.0.1"), int(port)))
    return out


def kafka_answers(bootstrap: str, timeout: float = 1.0) -> bool:
    """True when a Kafka broker answers an ApiVersions (v0) request at one of the bootstrap
    addresses (a cluster is up while one of its brokers is), tried in order.

    One TCP round trip per address tried, no client threads: cheap enough to poll while a broker
    starts, and it does not mistake some other TCP server on the port for Kafka.
    """
    return any(_broker_answers(host, port, timeout) for host, port in _addresses(bootstrap))


def _broker_answers(host: str, port: int, timeout: float) -> bool:
    client_id = b"seqctl-probe"
    correlation_id = 0x5EC0
    # RequestHeader v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id; no body.
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(s, 4)
            size = struct.unpack(">i", head)[0]
            if size < 6 or size > 1 << 20:
                return False
            resp = _recv_exact(s, size)
            cid, error_code = struct.unpack(">ih", resp[:6])
            return cid == correlation_id and error_code == 0
    except (OSError, struct.error):
        return False


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return bytes(buf)


# ---- topics --------------------------------------------------------------------------------------

def create_topics(bootstrap: str, topics: dict[str, int], *, replication_factor: int = 1,
                  timeout_ms: int = 10_000) -> dict[str, list[str]]:
    """Create the missing ones of ``{topic: partitions}``; existing topics are left as they are.

    Returns ``{"created": [...], "existing": [...]}``. Safe to call concurrently (a topic created
    meanwhile by someone else counts as existing).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    out: dict[str, list[str]] = {"created": [], "existing": []}
    if not topics:
        return out
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="seqctl-admin",
                             request_timeout_ms=timeout_ms)
    try:
        present = set(admin.list_topics())
        for name in sorted(topics):
            if name in present:
                out["existing"].append(name)
                continue
            try:  # one request per topic: a batch raises on the first error and hides the rest
                admin.create_topics([NewTopic(name, int(topics[name]), replication_factor)],
                                    timeout_ms=timeout_ms)
                out["created"].append(name)
            except TopicAlreadyExistsError:
                out["existing"].append(name)
    finally:
        admin.close()
    return out


def list_topics(bootstrap: str, timeout_ms: int = 10_000) -> set[str]:
    """Names of the topics that exist. Safe on Tansu: a metadata request for *all* topics creates
    nothing, whereas one naming an unknown topic (what a producer sends) creates it, with 4
    partitions, even with ``allow_auto_topic_creation=false``."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="seqctl-admin", request_timeout_ms=timeout_ms)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def source_topics(compiled) -> dict[str, int]:
    """``{topic: kafka_partitions}`` of every compiled source."""
    return {s["topic"]: int(s.get("kafka_partitions") or 1) for s in compiled.sources.values()}


def ensure_source_topics(bootstrap: str, compiled) -> dict[str, list[str]]:
    """Create the topic of every compiled source (``kafka_partitions`` partitions) if missing."""
    return create_topics(bootstrap, source_topics(compiled))


# ---- offsets -------------------------------------------------------------------------------------

def make_offset_probe(bootstrap: str, **config):
    """A ``KafkaConsumer`` meant only for :func:`end_offsets_exact`: no group, no commits and a
    short ``fetch_max_wait_ms`` (10 ms), so the fetch the client pipelines after a probe (at the end
    of the log, where the broker long-polls) cannot delay the next probe by the default 500 ms.
    Not 0: Tansu answers a fetch with ``max_wait_ms=0`` with no records at all, ever.
    """
    from kafka import KafkaConsumer

    settings = dict(bootstrap_servers=bootstrap, client_id="seq-offset-probe", group_id=None,
                    enable_auto_commit=False, auto_offset_reset="earliest",
                    fetch_max_wait_ms=10, request_timeout_ms=10_000)
    settings.update(config)
    return KafkaConsumer(**settings)


def end_offsets_exact(consumer, tps: Iterable, timeout_ms: int = 5_000) -> dict:
    """``{TopicPartition: high watermark}`` (the offset the next produced record will get), right
    on Apache Kafka and on Tansu.

    Why not ``consumer.end_offsets()``: Tansu (0.6.0, as bundled; reported on 0.1.2 too) answers
    ListOffsets(latest) with *the base offset of the last record batch + 1*, not the high watermark.
    After one burst of 1000 records that the producer packed into batches of ~100, ``end_offsets``
    says e.g. 295 while the partition holds 400 records, and it stays wrong until more records
    arrive. The high watermark carried in every *fetch* response is right. Apache Kafka returns
    the high watermark from both. So:

    1. ``lo = consumer.end_offsets(tps)`` (one ListOffsets round trip). ``lo`` never exceeds the
       true end, and ``lo - 1`` is a real record: on Tansu the first of the last batch, on Kafka the
       last record.
    2. For each partition with ``lo > 0``: seek to ``lo - 1`` and poll until that record came back;
       the fetch that returned it set ``consumer.highwater(tp)`` (one Fetch round trip per broker,
       returning only the last batch, at most the producer's ``batch_size``, whatever the
       partition's size).
    3. Answer ``max(lo, highwater)``. Empty partitions (``lo == 0``) answer 0 without a fetch.

    Cost: two round trips plus decoding one batch per partition: 4-8 ms on loopback against Tansu
    for 3 partitions (measured), fine for a sensor every 5 s.

    The consumer is used as a **probe**: it is assigned ``tps`` (replacing its assignment), its
    positions move and the partitions are left paused. Give it a consumer of its own, e.g.
    :func:`make_offset_probe`, never the one that reads records (nor one that ``subscribe()``d).
    If a fetch does not come back within ``timeout_ms``, that partition answers ``lo`` (a lower
    bound, never too high).
    """
    from kafka.errors import KafkaError

    tps = list(dict.fromkeys(tps))
    if not tps:
        return {}
    lo = consumer.end_offsets(tps, timeout_ms=timeout_ms)
    out = {tp: int(lo.get(tp) or 0) for tp in tps}
    pending = [tp for tp in tps if out[tp] > 0]
    if not pending:
        return out
    if set(consumer.assignment()) != set(tps):
        consumer.assign(tps)
    consumer.resume(*pending)
    for tp in pending:
        consumer.seek(tp, out[tp] - 1)
    deadline = time.monotonic() + timeout_ms / 1000
    waiting = set(pending)
    while waiting:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            break
        consumer.poll(timeout_ms=min(left_ms, 200))
        for tp in list(waiting):
            # position past lo - 1: the fetch that returned that record also carried the high watermark
            try:
                pos = consumer.position(tp, timeout_ms=0)
            except KafkaError:  # position being reset (e.g. offset out of range): not yet
                continue
            if pos is not None and pos >= out[tp]:
                waiting.discard(tp)
                hw = consumer.highwater(tp)
                if hw is not None and hw > out[tp]:
                    out[tp] = int(hw)
    consumer.pause(*tps)  # no background fetches between probes
    return out
