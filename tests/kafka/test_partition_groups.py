"""Parallel micro-batch runs: a topic's partitions in groups (SEQ_STREAM_PARTITION_GROUPS), each
group read by runs of its own that commit into the same raw/ and events/ tables at the same time.

Real broker (the single in-memory Tansu), real Delta tables; the runs' writes are held at a barrier
so they commit together (tests/support/stream.py: run_at_once), also on an empty lake where they
race to create the tables, and with one event delivered to two partitions (two runs insert it).
"""

from __future__ import annotations

import json
import random
from datetime import timedelta

import polars as pl
import pytest

from seq_assets import settings
from seq_assets.kafka.client import create_topics
from seq_assets.kafka.microbatch import OffsetRange, ranges_key
from seq_assets.orchestration.sensors import partition_groups, plan_ranges, topic_epoch
from tests.support import ratings as rt
from tests.support.stream import (
    PARTITIONS,
    SOURCE,
    StreamOracle,
    assert_lake_matches,
    assert_unique_ids,
    avoid_midnight,
    cursor_at_end,
    day_start_ms,
    dumps,
    event,
    execute,
    produce,
    read_table,
    run_at_once,
    stream_pair,
    tick,
    utc_today,
)

pytestmark = pytest.mark.timeout(120)


def ranges_of(rr) -> list[str]:
    return next(iter(rr.run_config["ops"].values()))["config"]["ranges"]


# ---- planning --------------------------------------------------------------------------------------

def test_partitions_split_into_groups_by_partition_modulo():
    assert partition_groups(range(5), 2) == [[0, 2, 4], [1, 3]]
    assert partition_groups(range(3), 1) == [[0, 1, 2]]
    assert partition_groups(range(3), 8) == [[0], [1], [2]]  # more groups than partitions: one run each


def test_plan_gives_each_group_its_own_bounded_runs_and_one_cursor_per_partition():
    ends = {0: 100, 1: 30, 2: 0, 3: 7}
    batches, cursor, notes = plan_ranges({"3": 7}, ends, max_batch=40, max_runs=4, groups=2)
    assert notes == [] and cursor == {"0": 80, "1": 30, "2": 0, "3": 7}
    # group 0 = partitions 0 and 2 (2 empty), group 1 = 1 and 3 (3 read): at most 40 records and
    # 4 runs per group, 20 per partition; the groups' runs in turn
    assert batches == [[OffsetRange(0, 0, 20)], [OffsetRange(1, 0, 20)], [OffsetRange(0, 20, 40)],
                       [OffsetRange(1, 20, 30)], [OffsetRange(0, 40, 60)], [OffsetRange(0, 60, 80)]]
    assert all(sum(r.count for r in b) <= 40 for b in batches)
    # the runs of a tick cover every new offset once, and the next tick starts where they stopped
    more, cursor2, _ = plan_ranges(cursor, {**ends, 0: 130}, max_batch=40, max_runs=4, groups=2)
    assert more == [[OffsetRange(0, 80, 100)], [OffsetRange(0, 100, 120)], [OffsetRange(0, 120, 130)]]
    assert cursor2["0"] == 130
    # one group (the default) is the plan of one run over every partition
    one, _, _ = plan_ranges({}, {0: 5, 1: 5}, max_batch=100, groups=1)
    assert one == [[OffsetRange(0, 0, 5), OffsetRange(1, 0, 5)]]


def test_topic_incarnation_goes_into_the_run_key():
    ends = {0: 3, 1: 3}
    # with topic ids: the id; a new id reads the topic from its start
    assert topic_epoch({"offsets": {"0": 2}, "topic_id": "A"}, "A", ends)[:3] == ("A", {"0": 2}, 0)
    name, offsets, epoch, notes = topic_epoch({"offsets": {"0": 9}, "topic_id": "A"}, "B", ends)
    assert (name, offsets, epoch) == ("B", {}, 0) and "recreated" in notes[0]
    # the same id with an end below the cursor (a truncated log): a new epoch under the id
    assert topic_epoch({"offsets": {"0": 9}, "topic_id": "A"}, "A", ends)[:3] == ("A.e1", {"0": 9}, 1)
    # without ids: an epoch counted in the cursor, raised when an end goes back below the cursor
    assert topic_epoch({"offsets": {"0": 2}}, None, ends)[:3] == ("e0", {"0": 2}, 0)
    name, offsets, epoch, _ = topic_epoch({"offsets": {"0": 9, "1": 1}, "epoch": 1}, None, ends)
    assert (name, offsets, epoch) == ("e2", {}, 2)
    rs = [OffsetRange(1, 0, 5), OffsetRange(0, 0, 5)]
    assert ranges_key("s", rs, "B") == "s@B/0:0-5,1:0-5" != ranges_key("s", rs, "A") != ranges_key("s", rs)


@pytest.mark.parametrize("value, message", [("two", "whole number"), ("0", "1 or more"), ("-3", "1 or more")])
def test_a_bad_partition_groups_setting_is_refused_naming_it(monkeypatch, value, message):
    monkeypatch.setenv("SEQ_STREAM_PARTITION_GROUPS", value)
    with pytest.raises(ValueError, match=f"SEQ_STREAM_PARTITION_GROUPS.*{message}"):
        settings.stream_partition_groups()
    monkeypatch.delenv("SEQ_STREAM_PARTITION_GROUPS")
    assert settings.stream_partition_groups() == 1


# ---- runs of several groups committing at once ----------------------------------------------------

def engagements(prefix: str, n: int, today) -> list[dict]:
    rng = random.Random(prefix)
    return [event(f"{prefix}{i:03d}", rng.randint(1, 9), rng.choice(["click", "save", "closeup", "impression"]),
                  rng.randint(1, 5), day_start_ms(rng.choice([today, today, today - timedelta(days=1)])) + i * 1000,
                  dwell=rng.choice([None, 2500])) for i in range(n)]


def test_runs_of_every_partition_commit_at_once_into_an_empty_lake_losing_and_doubling_nothing(
        kbroker, kafka_res, dg_instance, stream_lake, monkeypatch):
    avoid_midnight()
    today = utc_today()
    start = cursor_at_end(kafka_res)
    monkeypatch.setenv("SEQ_STREAM_PARTITION_GROUPS", str(PARTITIONS))
    job, sensor = stream_pair(max_batch=12, monkeypatch=monkeypatch)
    evs = engagements("pg", 60, today)
    # 20 per partition; the first 4 events of partition 0 are delivered to partitions 1 and 2 too
    items = [(str(e["user_id"]), dumps(e), i % PARTITIONS) for i, e in enumerate(evs)]
    items += [(str(e["user_id"]), dumps(e), p) for e in evs[0:12:PARTITIONS] for p in (1, 2)]
    produce(kbroker.bootstrap, items)

    r = tick(sensor, dg_instance, kafka_res, start)
    topic_id = json.loads(r.cursor)["topic_id"]
    # one run per partition and per 12 records, the first runs of the three partitions first
    first = r.run_requests[:PARTITIONS]
    assert [ranges_of(rr)[0].split(":")[0] for rr in first] == ["0", "1", "2"]
    assert all(len(ranges_of(rr)) == 1 for rr in r.run_requests)
    assert len({rr.run_key for rr in r.run_requests}) == len(r.run_requests)
    assert all(rr.run_key.startswith(f"{SOURCE}@{topic_id}/") for rr in r.run_requests)
    assert all(rr.tags["seq/partitions"] == ranges_of(rr)[0].split(":")[0] for rr in r.run_requests)

    # the first three (one per partition) create the tables and insert at the same time
    results = run_at_once(SOURCE, kafka_res.bootstrap(), first)
    assert sum(res.records for res in results) == 36
    # the rest at once too, the one of partition 0 dying half way (after raw/, before events/) ...
    rest = r.run_requests[PARTITIONS:]
    assert len(rest) == 3
    from seq_assets.storage.lake import Lake

    insert = Lake.insert_unseen

    def flaky(self, kind, name, df, key):
        info = insert(self, kind, name, df, key)
        if kind == "raw" and 0 in set(df.get_column("kafka_partition")):  # the run of partition 0 dies
            raise OSError("the run's process died")  # after raw/, before events/
        return info

    monkeypatch.setattr(Lake, "insert_unseen", flaky)
    with pytest.raises(OSError):
        run_at_once(SOURCE, kafka_res.bootstrap(), rest)
    monkeypatch.setattr(Lake, "insert_unseen", insert)
    # ... and retried (the same run config, what the job's retry policy does) through Dagster
    retry = next(rr for rr in rest if ranges_of(rr)[0].startswith("0:"))
    assert execute(job, dg_instance, kafka_res, retry).success
    assert_lake_matches(stream_lake, StreamOracle(evs))
    # the raw/ table took one commit per run (plus its creation): nothing merged away
    raw_log = sorted((stream_lake / "raw" / SOURCE / "_delta_log").glob("*.json"))
    assert len(raw_log) >= 1 + len(first)


def test_ratings_runs_per_partition_at_once(kbroker, dg_instance, stream_lake, monkeypatch):
    """The second definitions project: string users, a derived id, times in seconds, 2 partitions."""
    from seq_assets.orchestration.sensors import KafkaResource, stream_defs

    monkeypatch.setenv("SEQ_DEFS_MODULE", rt.MODULE)
    monkeypatch.setenv("SEQ_STREAM_PARTITION_GROUPS", "2")
    compiled = settings.load_compiled()
    create_topics(kbroker.bootstrap, {rt.TOPIC: 2})
    kafka = KafkaResource(bootstrap_servers=kbroker.bootstrap)
    ends = kafka.end_offsets(rt.TOPIC)
    start = json.dumps({"offsets": {str(p): e for p, e in ends.items()}})
    _, sensor = stream_defs(compiled, rt.SOURCE)
    rng = random.Random(7)
    t0 = int(day_start_ms(utc_today()) / 1000)
    rows = [{"uid": rng.choice(["007", "7", "ü-ana", "bob"]), "movie_id": str(rng.randint(1, 6)),
             "event_time": t0 + i * 60, "rating": rng.randint(1, 5), "device": None} for i in range(40)]
    items = [(r["uid"], json.dumps(r), i % 2) for i, r in enumerate(rows)]
    items += [(rows[0]["uid"], json.dumps(rows[0]), 1), (None, '{"uid": "bob", "rating": 5}', 0)]  # a copy, a bad one
    produce(kbroker.bootstrap, items, topic=rt.TOPIC)

    r = tick(sensor, dg_instance, kafka, start)
    assert [len(ranges_of(rr)) for rr in r.run_requests] == [1, 1]
    run_at_once(rt.SOURCE, kbroker.bootstrap, r.run_requests)

    ids = {rt.rating_id(x["uid"], x["movie_id"], x["event_time"]): x for x in rows}
    raw = read_table(stream_lake, "raw", rt.SOURCE)
    assert_unique_ids(raw, "rating_id")
    assert set(raw["rating_id"]) == set(ids)
    assert raw["uid"].dtype == pl.String and set(raw["event_time"]) == {x["event_time"] * 1000 for x in rows}
    for et, keep in rt.FILTERS.items():
        got = read_table(stream_lake, "events", et)
        assert_unique_ids(got, "rating_id")
        assert set(got["rating_id"]) == {i for i, x in ids.items() if keep(x)}
    assert read_table(stream_lake, "dead_letter", rt.SOURCE).height == 1
