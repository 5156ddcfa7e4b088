"""A restarted in-memory broker numbers its records from 0 again. Its batches must get run keys of
their own: Dagster skips a run request whose run key it already ran (the sensor daemon looks the
key up among the sensor's runs), so an old key would leave the new records silently unindexed.

Runs here carry the ``dagster/run_key`` tag as the daemon's do, and a request counts as launched
only when no run with its key exists yet (what the daemon does with it).
"""

from __future__ import annotations

import json
from datetime import date

import dagster as dg
import pytest

from seq_assets.devtools.broker import EmbeddedBroker
from seq_assets.kafka.client import ensure_source_topics
from seq_assets.orchestration.resources import LakeResource
from seq_assets.orchestration.sensors import KafkaResource
from seq_assets.settings import load_compiled
from tests.support.stream import (
    PARTITIONS,
    SOURCE,
    assert_unique_ids,
    avoid_midnight,
    day_start_ms,
    dumps,
    event,
    produce,
    read_table,
    stream_pair,
    tick,
    utc_today,
)

pytestmark = pytest.mark.timeout(120)


def launch_like_the_daemon(job, sensor, instance, kafka, result) -> list[str]:
    """Run each request whose run key this sensor has no run of yet, tagged as the daemon tags its
    runs (dagster._daemon.sensor.fetch_existing_runs matches the run key and sensor name tags);
    returns the keys run."""
    ran = []
    for rr in result.run_requests:
        tags = {"dagster/run_key": rr.run_key, "dagster/sensor_name": sensor.name}
        if instance.get_runs(filters=dg.RunsFilter(tags=tags)):
            continue  # the daemon skips it: a run with this key already exists
        res = job.execute_in_process(run_config=rr.run_config, instance=instance, tags={**rr.tags, **tags},
                                     resources={"lake": LakeResource(), "kafka": kafka})
        assert res.success
        ran.append(rr.run_key)
    return ran


def per_partition(evs: list[dict], n: int) -> list[tuple]:
    return [(str(e["user_id"]), dumps(e), p) for p in range(PARTITIONS) for e in evs[p * n:(p + 1) * n]]


class WithoutTopicIds(KafkaResource):
    """A broker that gives no topic ids (Kafka before 2.8): the sensor counts epochs instead."""

    def topic_state(self, topic: str):
        return super().topic_state(topic)[0], None


def restart(broker: EmbeddedBroker, brokers: list) -> EmbeddedBroker:
    broker.stop()
    new = EmbeddedBroker().start(timeout=30)
    brokers.append(new)
    ensure_source_topics(new.bootstrap, load_compiled())
    return new


# With topic ids, records of the new topic up to the old cursor show no sign of a restart in the
# offsets (2 per partition before and after); without them, the sensor sees an end below its cursor.
@pytest.mark.parametrize("resource, before, after", [(KafkaResource, [2], 2), (WithoutTopicIds, [1, 1], 1)],
                         ids=["topic_id", "epoch"])
def test_batches_of_a_restarted_broker_get_new_run_keys_and_are_indexed(resource, before, after, dg_instance,
                                                                        stream_lake):
    avoid_midnight()
    today: date = utc_today()
    job, sensor = stream_pair()
    evs = [event(f"rk{resource.__name__[:2]}{i:03d}", 1 + i % 4, "click", 1 + i % 3, day_start_ms(today) + i * 1000)
           for i in range(PARTITIONS * (sum(before) + after + 1))]
    sent = 0

    def send(bootstrap: str, n: int) -> None:
        nonlocal sent
        produce(bootstrap, per_partition(evs[sent:sent + PARTITIONS * n], n))
        sent += PARTITIONS * n

    brokers = [EmbeddedBroker().start(timeout=30)]
    try:
        ensure_source_topics(brokers[0].bootstrap, load_compiled())
        kafka = resource(bootstrap_servers=brokers[0].bootstrap)
        # the first incarnation: a run per wave of records
        cursor, old = None, []
        for n in before:
            send(brokers[0].bootstrap, n)
            t = tick(sensor, dg_instance, kafka, cursor)
            old += launch_like_the_daemon(job, sensor, dg_instance, kafka, t)
            cursor = t.cursor
        assert len(old) == len(before) and read_table(stream_lake, "raw", SOURCE).height == sent

        # restarted empty; new records at offsets the first incarnation's first run had
        broker = restart(brokers[0], brokers)
        kafka = resource(bootstrap_servers=broker.bootstrap)
        send(broker.bootstrap, after)
        t3 = tick(sensor, dg_instance, kafka, cursor)
        ranges = [next(iter(rr.run_config["ops"].values()))["config"]["ranges"] for rr in t3.run_requests]
        assert ranges == [[f"{p}:0-{after}" for p in range(PARTITIONS)]]  # the first run's ranges, a new key
        assert {rr.run_key for rr in t3.run_requests}.isdisjoint(old)
        assert launch_like_the_daemon(job, sensor, dg_instance, kafka, t3) == [t3.run_requests[0].run_key]
        state = json.loads(t3.cursor)
        if resource is WithoutTopicIds:
            assert state["epoch"] == 1 and t3.run_requests[0].run_key.startswith(f"{SOURCE}@e1/")
        else:
            assert state["topic_id"] != json.loads(cursor)["topic_id"]
        # the new incarnation goes on from there
        send(broker.bootstrap, 1)
        t4 = tick(sensor, dg_instance, kafka, t3.cursor)
        assert len(launch_like_the_daemon(job, sensor, dg_instance, kafka, t4)) == 1
        raw = read_table(stream_lake, "raw", SOURCE)
        assert_unique_ids(raw)
        assert sorted(raw["event_id"]) == sorted(e["event_id"] for e in evs)
    finally:
        for b in brokers:
            b.stop()
