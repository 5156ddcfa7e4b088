"""Stream sensors: one per source. Each tick reads the topic's end offsets and asks for a micro-batch
run over an exact offset range; the run indexes it with the shared engine (seq_assets.kafka.microbatch).

The cursor is ``{"offsets": {partition: next offset to request}, "topic_id": ..., "epoch": n}``. A
run's ``run_key`` is the topic's incarnation (``topic_epoch``) and its offset ranges, so a tick
evaluated twice never asks for the same records twice, and a recreated topic's batches are never
taken for the old ones. Partitions are read in ``SEQ_STREAM_PARTITION_GROUPS`` groups, each by runs
of its own that commit side by side (``plan_ranges``). The broker being down skips the tick; a
broker that restarted empty (cursor ahead of its end) is followed from its beginning, and inserting
only unseen keys makes any replay harmless.
"""

import json
from datetime import date

import dagster as dg

from seq_assets import settings
from seq_assets.core.compiled import Compiled
from seq_assets.core.days import today_utc
from seq_assets.kafka.microbatch import OffsetRange, ranges_key, run_micro_batch
from seq_assets.orchestration.resources import LakeResource

MAX_RUNS_PER_TICK = 4


class KafkaResource(dg.ConfigurableResource):
    """Where the topics live. Empty: SEQ_KAFKA_BOOTSTRAP, default 127.0.0.1:9092 (``seqctl broker``)."""

    bootstrap_servers: str = ""

    def bootstrap(self) -> str:
        return self.bootstrap_servers or settings.kafka_bootstrap()

    def end_offsets(self, topic: str) -> dict[int, int]:
        """True end offset per partition; raises ConnectionError when no broker answers."""
        return self.topic_state(topic)[0]

    def topic_state(self, topic: str) -> tuple[dict[int, int], str | None]:
        """(end offset per partition, the topic's id). The id changes when the topic is recreated,
        e.g. by an in-memory broker that restarted: offsets from before then mean nothing."""
        from kafka import TopicPartition

        from seq_assets.kafka.client import (
            end_offsets_exact,
            kafka_answers,
            make_offset_probe,
        )

        bootstrap = self.bootstrap()
        if not kafka_answers(bootstrap, timeout=1.0):
            raise ConnectionError(f"no Kafka broker answers at {bootstrap}")
        probe = make_offset_probe(bootstrap)
        try:
            parts = probe.partitions_for_topic(topic)
            if not parts:
                raise LookupError(f"topic {topic!r} does not exist at {bootstrap}")
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            ends = {tp.partition: off for tp, off in end_offsets_exact(probe, tps).items()}
            cluster = getattr(getattr(probe, "_client", None), "cluster", None)
            topic_id = cluster.topic_id(topic) if cluster is not None and hasattr(cluster, "topic_id") else None
            return ends, (str(topic_id) if topic_id else None)
        finally:
            probe.close()


def parse_ranges(specs: list[str]) -> list[OffsetRange]:
    """``["0:10-20", "1:5-9"]`` -> offset ranges (start inclusive, end exclusive)."""
    out = []
    for s in specs:
        p, span = s.split(":", 1)
        a, b = span.split("-", 1)
        out.append(OffsetRange(int(p), int(a), int(b)))
    return out


def partition_groups(partitions, groups: int) -> list[list[int]]:
    """The topic's partitions in ``groups`` groups (partition p in group p % groups), each read by
    runs of its own; empty groups left out. A partition added to the topic joins a group without
    moving the others."""
    out: dict[int, list[int]] = {}
    for p in sorted(partitions):
        out.setdefault(p % max(1, groups), []).append(p)
    return [out[g] for g in sorted(out)]


def plan_ranges(cursor: dict[str, int], ends: dict[int, int], max_batch: int,
                max_runs: int = MAX_RUNS_PER_TICK,
                groups: int = 1) -> tuple[list[list[OffsetRange]], dict[str, int], list[str]]:
    """Split the new offsets into bounded batches, at most ``max_runs`` per partition group (see
    :func:`partition_groups`), each batch within one group; returns (batches, new cursor, notes).

    The cursor is one next offset per partition, so the groups move on independently, and batches of
    different groups cover different partitions: they can run and commit at the same time. Batches
    come group by group in turn (the first run of every group, then the second ones...).
    """
    notes = []
    pos = {}
    for p, end in ends.items():
        start = int(cursor.get(str(p), 0))
        if start > end:
            notes.append(f"partition {p}: cursor {start} is past the broker's end {end} (broker restarted empty?); "
                         f"following it from 0")
            start = 0
        pos[p] = start
    per_group: list[list[list[OffsetRange]]] = []
    for members in partition_groups(ends, groups):
        per_part = max(1, max_batch // len(members))
        mine = []
        for _ in range(max_runs):
            batch = [OffsetRange(p, pos[p], min(ends[p], pos[p] + per_part)) for p in members if pos[p] < ends[p]]
            if not batch:
                break
            mine.append(batch)
            for r in batch:
                pos[r.partition] = r.end
        per_group.append(mine)
    batches = [g[i] for i in range(max((len(g) for g in per_group), default=0)) for g in per_group if i < len(g)]
    return batches, {str(p): v for p, v in pos.items()}, notes


def topic_epoch(state: dict, topic_id: str | None, ends: dict[int, int]) -> tuple[str, dict, int, list[str]]:
    """(the incarnation of the topic, the offsets to plan from, the epoch count to keep, notes) from
    the sensor's cursor ``state`` and what the broker says now.

    The incarnation goes into every run key and batch id (``ranges_key``), so that a recreated topic
    (an in-memory broker restarted: offsets from 0 again) never has its batches taken for the old
    ones. It is the topic id (Metadata v10+: Apache Kafka 2.8 and later, Tansu) when the broker gives
    one: a new id means a new topic, read from its start. Without ids it is ``e<N>``: N is kept in
    the cursor and raised when an end offset goes back below the cursor (which Kafka never does to a
    topic it keeps), and the topic is read from its start; a recreated topic that got past the old
    cursor before a tick cannot be seen then. An end below the cursor under the same id (a truncated
    log) raises N too (``<id>.e<N>``); ``plan_ranges`` follows such partitions from 0.
    """
    offsets, notes = dict(state.get("offsets", {})), []
    epoch = int(state.get("epoch", 0))
    old_id = state.get("topic_id")
    behind = sorted(p for p, end in ends.items() if int(offsets.get(str(p), 0)) > end)
    if topic_id and old_id != topic_id:
        if old_id:
            notes.append(f"the topic was recreated (id {old_id} -> {topic_id}); reading it from the start")
            offsets = {}
        epoch = 0
    elif behind:
        epoch += 1
        notes.append(f"end offsets of partitions {behind} went back below the cursor: "
                     f"a new incarnation of the log (epoch {epoch})")
        if not topic_id:
            offsets = {}
    if topic_id:
        return (f"{topic_id}.e{epoch}" if epoch else topic_id), offsets, epoch, notes
    return f"e{epoch}", offsets, epoch, notes


def _valid_partition(d: date) -> bool:
    return date.fromisoformat(settings.partition_start()) <= d <= today_utc()


def stream_defs(compiled: Compiled, source: str) -> tuple[dg.JobDefinition, dg.SensorDefinition]:
    src = compiled.sources[source]
    topic = src["topic"]

    class MicroBatchConfig(dg.Config):
        ranges: list[str]  # "partition:start-end", end exclusive
        epoch: str = ""  # the topic's incarnation the offsets belong to (topic_epoch)

    @dg.op(name=f"index_{source}", description=f"Index an exact offset range of topic {topic!r}.", out={})
    def index_op(context: dg.OpExecutionContext, config: MicroBatchConfig, lake: LakeResource, kafka: KafkaResource):
        res = run_micro_batch(lake.engine(), source, kafka.bootstrap(), parse_ranges(config.ranges),
                              epoch=config.epoch or None)
        context.log.info(f"{res.batch_id}: {res.records} records, {res.raw_inserted} new raw, "
                         f"{res.dead_letters} dead letters, events {res.events_inserted}, late {res.late_by_day}, "
                         f"{res.seconds:.2f}s")
        for table, days in res.days.items():
            kind, name = table.split("/", 1)
            for d in days:
                if not _valid_partition(d):
                    context.log.warning(f"{table}: day {d} is outside the partitions; written but not reported")
                    continue
                meta = {"micro_batch": res.batch_id, "records": res.records}
                if kind == "events":
                    meta["inserted"] = res.events_inserted.get(name, 0)
                if kind == "raw":
                    meta["late_events"] = res.late_by_day.get(d, 0)
                    meta["late"] = d < today_utc()
                yield dg.AssetMaterialization(asset_key=[kind, name], partition=d.isoformat(), metadata=meta,
                                              description="stream micro-batch")

    @dg.job(name=f"stream_{source}", executor_def=dg.in_process_executor,
            description=f"Micro-batch of topic {topic!r}: raw archive, dead letters, events; rows exactly once.",
            tags={"dagster/max_retries": "3", "dagster/retry_strategy": "ALL_STEPS"})
    def stream_job():
        index_op()

    interval, max_batch = settings.sensor_interval(), settings.stream_max_batch()
    groups = settings.stream_partition_groups()

    # The daemon wakes every 5 s and skips a sensor whose last tick is younger than its minimum
    # interval; one second of slack makes the effective interval the configured one, not twice it.
    @dg.sensor(name=f"kafka_{source}", job=stream_job, minimum_interval_seconds=max(1, interval - 1),
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Watches topic {topic!r} and asks for a micro-batch per new offset range.")
    def kafka_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource):
        state = json.loads(context.cursor) if context.cursor else {}
        try:
            ends, topic_id = kafka.topic_state(topic)
        except (ConnectionError, LookupError) as e:
            return dg.SkipReason(f"skipped: {e}")
        except Exception as e:  # noqa: BLE001 - any client failure is a skipped tick, retried next tick
            return dg.SkipReason(f"skipped: Kafka error {type(e).__name__}: {e}")
        epoch, offsets, epoch_count, epoch_notes = topic_epoch(state, topic_id, ends)
        batches, new_offsets, notes = plan_ranges(offsets, ends, max_batch, groups=groups)
        for n in epoch_notes + notes:
            context.log.warning(f"topic {topic!r}: {n}")
        lag = {str(p): ends[p] - int(offsets.get(str(p), 0)) for p in ends}
        observation = dg.AssetObservation(
            asset_key=["raw", source],
            metadata={"consumer_lag_records": sum(max(0, v) for v in lag.values()),
                      "end_offsets": json.dumps({str(p): e for p, e in ends.items()}),
                      "lag_per_partition": json.dumps(lag)},
        )
        runs = [
            dg.RunRequest(
                run_key=ranges_key(source, b, epoch),
                run_config={"ops": {f"index_{source}": {"config": {
                    "ranges": [f"{r.partition}:{r.start}-{r.end}" for r in b], "epoch": epoch}}}},
                tags={"seq/source": source, "seq/records": str(sum(r.count for r in b)),
                      "seq/partitions": ",".join(str(r.partition) for r in b)},
            )
            for b in batches
        ]
        return dg.SensorResult(
            run_requests=runs,
            cursor=json.dumps({"offsets": new_offsets, "topic_id": topic_id, "epoch": epoch_count}),
            asset_events=[observation],
            skip_reason=None if runs else "no new records",
        )

    return stream_job, kafka_sensor


def sensor_defs(compiled: Compiled) -> dg.Definitions:
    jobs, sensors = [], []
    for source in compiled.sources:
        job, sensor = stream_defs(compiled, source)
        jobs.append(job)
        sensors.append(sensor)
    return dg.Definitions(jobs=jobs, sensors=sensors, resources={"kafka": KafkaResource()})
