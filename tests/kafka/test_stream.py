"""The streaming path end to end: a real Tansu broker, the real sensor and job in a real Dagster
instance, real Delta tables, checked against an independent oracle (tests/conftest_stream.py).

Acceptance items covered here: 1 (end to end), 2 (re-delivery), 7 (lambda consistency) and
8 (plan_ranges).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from seq_assets.kafka.microbatch import OffsetRange
from seq_assets.orchestration.sensors import plan_ranges
from seq_assets.settings import DEFAULT_STREAM_MAX_BATCH as DEFAULT_MAX_BATCH
from tests.support.sequences import sequences_table
from tests.support.stream import (
    DAY_MS,
    EVENT_TYPES,
    FEATURES,
    SEQ_FIELDS,
    SOURCE,
    StreamOracle,
    assert_unique_ids,
    avoid_midnight,
    cursor_at_end,
    day_of,
    day_start_ms,
    drain,
    dumps,
    end_of_day_ms,
    event,
    execute,
    keyed,
    materializations,
    materialize_sequences,
    module_lake,
    produce,
    read_table,
    snapshot_lake,
    stream_pair,
    tick,
    utc_today,
)

pytestmark = pytest.mark.timeout(120)

EVENT_COLS = ["event_id", "user_id", "ts", "action", "item_id", "surface", "device", "country", "dwell_ms",
              "event_type", "date", "user_item_count_30d"]


def valid_partition(d: date, today: date) -> bool:
    return date.fromisoformat(os.environ.get("SEQ_PARTITION_START", "2026-01-01")) <= d <= today


# ---- the end-to-end scenario (item 1), built once for the module ----------------------------------

def build_e2e(today: date) -> tuple[list[dict], list[tuple]]:
    """(distinct events, deliveries): shuffled, with duplicates, late days, bots, unknown actions..."""
    rng = random.Random(20261122)
    d1, d2 = today - timedelta(days=1), today - timedelta(days=2)
    actions = ["click"] * 4 + ["save"] * 2 + ["closeup"] * 3 + ["impression"] * 2 + ["hide", "repin"]
    evs = []
    for i in range(240):
        day = rng.choices([today, d1, d2], weights=[60, 25, 15])[0]
        action = rng.choice(actions)
        dwell = rng.choice([None, 0, 500, 999, 1000, 1001, 4000]) if action == "closeup" else rng.choice([None, 300])
        evs.append(event(f"e{i:04d}", rng.randint(1, 12), action, rng.randint(1, 8),
                         day_start_ms(day) + rng.randint(0, 150) * 1000,  # coarse times: ties in ts
                         dwell=dwell, bot=rng.random() < 0.1, surface=rng.choice(["home", "search", "board"]),
                         device=rng.choice(["ios", "android", "web"]), country=rng.choice(["US", "DE", "BR"])))
    # A heavy user: more than N=500 engagements and N=100 saves up to the end of d1, many ts ties.
    for i in range(530):
        action = "save" if i % 5 == 0 else "click"
        evs.append(event(f"h{i:04d}", 50, action, 1 + i % 9, day_start_ms(rng.choice([d1, d2])) + rng.randint(0, 300) * 1000))
    # Window edges as of the end of d1: 90 days (engagements) and 365 days (saves), end exclusive.
    end1 = end_of_day_ms(d1)
    evs += [
        event("w090_in", 60, "save", 3, end1 - 90 * DAY_MS),
        event("w090_out", 60, "click", 3, end1 - 90 * DAY_MS - 1),
        event("w365_in", 60, "save", 4, end1 - 365 * DAY_MS),
        event("w365_out", 60, "save", 4, end1 - 365 * DAY_MS - 1),
        event("w_today", 60, "save", 4, end1),  # the first ms of today: in today's sequences only
    ]
    deliveries = keyed(evs)
    dups = rng.sample(evs, 25) + [next(e for e in evs if day_of(e["ts"]) == d2)]
    deliveries += [(None if i % 3 == 0 else str(e["user_id"]), dumps(e)) for i, e in enumerate(dups)]
    rng.shuffle(deliveries)  # delivery order is not event-time order
    return evs, deliveries


@dataclass
class E2E:
    lake: Path
    landing: Path
    today: date
    oracle: StreamOracle
    deliveries: list
    offsets: list
    cursor0: str
    tick1: dg.SensorResult
    tick1_again: dg.SensorResult  # the same cursor, evaluated again by a freshly built sensor
    tick2: dg.SensorResult  # after the runs, with the cursor tick1 returned
    runs: list
    sequences: dict
    job: object
    sensor: object


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, kbroker, kafka_res, dg_instance) -> E2E:
    avoid_midnight()
    lake, landing, restore = module_lake(tmp_path_factory, "e2e")
    try:
        today = utc_today()
        evs, deliveries = build_e2e(today)
        cursor0 = cursor_at_end(kafka_res)
        offsets = produce(kbroker.bootstrap, deliveries)
        job, sensor = stream_pair()
        t1 = tick(sensor, dg_instance, kafka_res, cursor0)
        assert isinstance(t1, dg.SensorResult), t1
        t1_again = tick(stream_pair()[1], dg_instance, kafka_res, cursor0)
        runs = [execute(job, dg_instance, kafka_res, rr) for rr in t1.run_requests]
        t2 = tick(sensor, dg_instance, kafka_res, t1.cursor)
        seqs = {d: materialize_sequences(dg_instance, d) for d in (today - timedelta(days=1), today)}
    finally:
        restore()
    return E2E(lake, landing, today, StreamOracle(evs), deliveries, offsets, cursor0, t1, t1_again, t2, runs, seqs,
               job, sensor)


@pytest.fixture
def e2e_env(e2e, monkeypatch) -> E2E:
    monkeypatch.setenv("SEQ_LAKE_URI", str(e2e.lake))
    monkeypatch.setenv("SEQ_LANDING_DIR", str(e2e.landing))
    monkeypatch.delenv("SEQ_DEFS_DIR", raising=False)
    return e2e


def expected_events_frame(oracle: StreamOracle, et: str) -> pl.DataFrame:
    rows = oracle.events(et)
    return pl.DataFrame(rows, schema={"event_id": pl.String, "user_id": pl.Int64, "ts": pl.Int64, "action": pl.String,
                                      "item_id": pl.Int64, "surface": pl.String, "device": pl.String,
                                      "country": pl.String, "dwell_ms": pl.Int64, "event_type": pl.String,
                                      "date": pl.Date, "user_item_count_30d": pl.Int64}).sort("event_id")


def test_sensor_asks_for_one_run_over_exactly_the_produced_offsets(e2e):
    t1 = e2e.tick1
    assert len(t1.run_requests) == 1  # ~800 records, far below one batch
    start = {int(p): o for p, o in json.loads(e2e.cursor0)["offsets"].items()}
    end = dict(start)
    for p, off in e2e.offsets:
        end[p] = max(end[p], off + 1)
    spans = sorted(f"{p}:{start[p]}-{end[p]}" for p in end if end[p] > start[p])
    rr = t1.run_requests[0]
    assert sorted(rr.run_config["ops"]["index_user_engagements"]["config"]["ranges"]) == spans
    # the run key: the topic's incarnation (its id) and the ranges
    assert rr.run_key == f"{SOURCE}@{json.loads(t1.cursor)['topic_id']}/" + ",".join(spans)
    assert rr.tags["seq/records"] == str(len(e2e.deliveries))
    assert json.loads(t1.cursor)["offsets"] == {str(p): end[p] for p in sorted(end)}
    obs = t1.asset_events[0]
    assert obs.asset_key == dg.AssetKey(["raw", SOURCE])
    assert obs.metadata["consumer_lag_records"].value == len(e2e.deliveries)
    assert all(r.success for r in e2e.runs)


def test_raw_holds_every_distinct_event_once(e2e):
    raw = read_table(e2e.lake, "raw", SOURCE)
    assert_unique_ids(raw)
    assert set(raw["event_id"]) == e2e.oracle.raw_ids()
    assert raw.height == len(e2e.oracle.unique) < len(e2e.deliveries)
    assert raw.filter(pl.col("origin") != "kafka").is_empty()
    # provenance: every raw row points at one of the offsets it was delivered at
    where = {(p, o): json.loads(v)["event_id"] for (_, v), (p, o) in zip(e2e.deliveries, e2e.offsets)}
    for row in raw.select("event_id", "kafka_partition", "kafka_offset").iter_rows():
        assert where[(row[1], row[2])] == row[0]
    assert read_table(e2e.lake, "dead_letter", SOURCE) is None  # every record was valid


@pytest.mark.parametrize("et", EVENT_TYPES)
def test_events_equal_the_oracle(e2e, et):
    got = read_table(e2e.lake, "events", et)
    assert_unique_ids(got)
    want = expected_events_frame(e2e.oracle, et)
    assert want.height > 10
    assert_frame_equal(got.select(EVENT_COLS).sort("event_id"), want.select(EVENT_COLS), check_dtypes=False)
    # no enrichment snapshots in this lake: the lookups are null, never made up
    assert got["item_category"].null_count() == got.height
    assert got["def_version"].n_unique() == 1


def test_filters_dropped_bots_unknown_actions_and_short_closeups(e2e):
    indexed = set()
    for et in EVENT_TYPES:
        indexed |= set(read_table(e2e.lake, "events", et)["event_id"])
    u = e2e.oracle.unique
    dropped = {eid for eid, o in u.items() if eid not in indexed}
    assert any(u[e]["is_bot"] for e in dropped)
    assert {u[e]["action"] for e in dropped} >= {"impression", "hide", "repin", "closeup"}
    short = {e for e, o in u.items() if o["action"] == "closeup" and (o["dwell_ms"] is None or o["dwell_ms"] < 1000)}
    assert short and short <= dropped
    assert all(not u[e]["is_bot"] for e in indexed)


def test_sequences_equal_the_oracle(e2e):
    d1 = e2e.today - timedelta(days=1)
    for feature in FEATURES:
        table = sequences_table(e2e.lake, feature)
        for day in (d1, e2e.today):
            got = table.filter(pl.col("date") == day)
            want = e2e.oracle.sequences(feature, day)
            assert_unique_ids(got, "user_id")
            assert set(got["user_id"]) == set(want), (feature, day)
            for row in got.iter_rows(named=True):
                exp = want[row["user_id"]]
                for f in SEQ_FIELDS:
                    assert row[f] == [e[f] for e in exp], (feature, day, row["user_id"], f)
                assert row["item_category"] == [None] * len(exp)
    # the cases the data was built for
    eng, saves = e2e.oracle.sequences("engagements_v1", d1), e2e.oracle.sequences("saves_v1", d1)
    assert len(eng[50]) == 500 and len(saves[50]) == 100  # capped
    assert [e["event_id"] for e in eng[60]] == ["w090_in"]
    assert [e["event_id"] for e in saves[60]] == ["w090_in", "w365_in"]
    today_saves = e2e.oracle.sequences("saves_v1", e2e.today)
    assert today_saves[60][0]["event_id"] == "w_today"
    ties = [(a["ts"], a["event_id"]) for a, b in zip(eng[50], eng[50][1:]) if a["ts"] == b["ts"]]
    assert ties  # the heavy user's cap cuts through equal timestamps


def test_second_tick_without_new_records_requests_nothing(e2e):
    again = e2e.tick2
    assert isinstance(again, dg.SensorResult)
    assert again.run_requests == []
    assert again.skip_reason is not None and "no new records" in again.skip_reason.skip_message
    assert json.loads(again.cursor) == json.loads(e2e.tick1.cursor)
    assert again.asset_events[0].metadata["consumer_lag_records"].value == 0


def test_run_key_is_deterministic(e2e):
    # The same cursor against the same topic, evaluated twice (the second time by a fresh sensor).
    a, b = e2e.tick1, e2e.tick1_again
    assert a.run_requests and [rr.run_key for rr in a.run_requests] == [rr.run_key for rr in b.run_requests]
    assert [rr.run_config for rr in a.run_requests] == [rr.run_config for rr in b.run_requests]
    assert [rr.tags for rr in a.run_requests] == [rr.tags for rr in b.run_requests]
    assert a.cursor == b.cursor


def test_late_arrivals_metric_counts_late_events_per_day(e2e):
    metric = read_table(e2e.lake, "metrics", "late_arrivals")
    want = e2e.oracle.late_by_day(e2e.today)
    assert set(want) >= {e2e.today - timedelta(days=1), e2e.today - timedelta(days=2)}
    got = metric.group_by("date").agg(pl.col("late_events").sum())
    assert dict(got.iter_rows()) == want
    assert set(metric["batch_id"]) == {rr.run_key for rr in e2e.tick1.run_requests}
    assert (metric["source"] == SOURCE).all()
    assert e2e.today not in set(metric["date"])


def test_run_reports_materializations_of_touched_partitions_including_late_days(e2e, dg_instance):
    today = e2e.today
    want = {(("raw", SOURCE), d.isoformat()) for d in e2e.oracle.days() if valid_partition(d, today)}
    for et in EVENT_TYPES:
        want |= {(("events", et), d.isoformat()) for d in e2e.oracle.event_days(et) if valid_partition(d, today)}
    mats = materializations(e2e.runs[0])
    got = {(tuple(m.asset_key.path), m.partition) for m in mats}
    assert got == want
    assert len(mats) == len(want)
    late = e2e.oracle.late_by_day(today)
    for m in mats:
        d = date.fromisoformat(m.partition)
        assert m.metadata["micro_batch"].value == e2e.tick1.run_requests[0].run_key
        if m.asset_key == dg.AssetKey(["raw", SOURCE]):
            assert m.metadata["late"].value is (d < today)
            assert m.metadata["late_events"].value == late.get(d, 0)
    for d in (today - timedelta(days=1), today - timedelta(days=2)):
        assert (("raw", SOURCE), d.isoformat()) in got
    # the same materializations are in the instance's event log
    stored = dg_instance.fetch_materializations(dg.AssetKey(["events", "pin_click"]), limit=1000).records
    stored_parts = {r.asset_materialization.partition for r in stored
                    if r.run_id == e2e.runs[0].run_id}
    assert stored_parts == {p for k, p in want if k == ("events", "pin_click")}


# ---- re-delivery (item 2) -----------------------------------------------------------------------

def test_the_same_range_run_twice_leaves_rows_exactly_once(e2e_env, kafka_res, dg_instance):
    e2e = e2e_env
    before = snapshot_lake(e2e.lake)
    metric_before = read_table(e2e.lake, "metrics", "late_arrivals").sort("metric_id")
    res = execute(e2e.job, dg_instance, kafka_res, e2e.tick1.run_requests[0])
    assert res.success
    assert snapshot_lake(e2e.lake) == before
    for m in materializations(res):
        if m.asset_key.path[0] == "events":
            assert m.metadata["inserted"].value == 0
    assert_frame_equal(read_table(e2e.lake, "metrics", "late_arrivals").sort("metric_id"), metric_before)


def test_same_records_produced_twice_are_indexed_once(kbroker, kafka_res, dg_instance, stream_lake):
    today = utc_today()
    d1 = today - timedelta(days=1)
    evs = [event(f"r{i:03d}", 1 + i % 5, ["click", "save", "closeup", "hide"][i % 4], 1 + i % 3,
                 day_start_ms(d1 if i % 3 == 0 else today) + i * 1000, dwell=2000) for i in range(60)]
    job, sensor = stream_pair()
    cursor = cursor_at_end(kafka_res)
    produce(kbroker.bootstrap, keyed(evs))
    cursor, runs1, _ = drain(job, sensor, dg_instance, kafka_res, cursor)
    assert len(runs1) == 1
    first = snapshot_lake(stream_lake)
    assert first["raw/user_engagements"] == sorted(e["event_id"] for e in evs)
    late1 = read_table(stream_lake, "metrics", "late_arrivals")["late_events"].sum()
    assert late1 == 20

    # the whole batch again, at new offsets (as a producer retry or a replayed topic would)
    produce(kbroker.bootstrap, keyed(evs))
    cursor, runs2, _ = drain(job, sensor, dg_instance, kafka_res, cursor)
    assert len(runs2) == 1 and runs2[0].run_id != runs1[0].run_id
    assert snapshot_lake(stream_lake) == first
    for et in EVENT_TYPES:
        assert_unique_ids(read_table(stream_lake, "events", et))
    assert all(m.metadata["inserted"].value == 0 for m in materializations(runs2[0]) if m.asset_key.path[0] == "events")
    # re-delivered late events are not new late arrivals
    assert read_table(stream_lake, "metrics", "late_arrivals")["late_events"].sum() == late1


# ---- lambda consistency (item 7) ----------------------------------------------------------------

def write_snapshots(landing: Path, d2: date, d1: date) -> None:
    """Enrichment snapshots on d2 and d1 (changed values); none for today (carried forward)."""
    for day, cat in ((d2, "cat_a"), (d1, "cat_b")):
        items = list(range(1, 9))
        emb = pl.DataFrame({"item_id": items, "item_embedding": [[float(i + day.day)] * 32 for i in items]},
                           schema={"item_id": pl.Int64, "item_embedding": pl.Array(pl.Float32, 32)})
        catf = pl.DataFrame({"item_id": items, "item_category": [f"{cat}{i % 2}" for i in items]},
                            schema={"item_id": pl.Int64, "item_category": pl.String})
        pop = pl.DataFrame({"item_id": items, "item_popularity": [i / 10 for i in items]},
                           schema={"item_id": pl.Int64, "item_popularity": pl.Float64})
        for name, df in (("item_embedding", emb), ("item_category", catf), ("item_popularity", pop)):
            path = landing / "enrichments" / name / f"date={day.isoformat()}" / "snapshot.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            df.write_parquet(path)


def materialize_range(instance, first: date, last: date, selection=None):
    from seq_assets.orchestration.assets import build_assets
    from seq_assets.orchestration.resources import LakeResource
    from seq_assets.settings import load_compiled

    res = dg.materialize(build_assets(load_compiled()), instance=instance, selection=selection,
                         resources={"lake": LakeResource()},
                         tags={"dagster/asset_partition_range_start": first.isoformat(),
                               "dagster/asset_partition_range_end": last.isoformat()})
    assert res.success
    return res


def test_backfilled_closed_day_equals_the_pure_batch_path(tmp_path, monkeypatch, kbroker, kafka_res, dg_instance):
    avoid_midnight()
    today = utc_today()
    d1, d2 = today - timedelta(days=1), today - timedelta(days=2)
    rng = random.Random(7)
    evs = []
    for i in range(200):
        day = rng.choice([d2, d1, d1, today])
        action = rng.choice(["click", "click", "save", "closeup", "impression", "hide"])
        evs.append(event(f"L{i:03d}", rng.randint(1, 8), action, rng.randint(1, 8),
                         day_start_ms(day) + rng.randint(0, 100) * 1000, dwell=rng.choice([None, 600, 3000]),
                         bot=rng.random() < 0.05, device=rng.choice(["ios", "web"])))
    # Sent first but happened second: the stream counts the pair's first click only after a
    # backfill (the two travel in different micro-batches).
    div_b, div_a = event("div_b", 77, "click", 5, day_start_ms(d1) + 5000), event("div_a", 77, "click", 5, day_start_ms(d1) + 1000)
    deliveries = [("77", dumps(div_b), 0)] + keyed(evs) + [(str(e["user_id"]), dumps(e)) for e in rng.sample(evs, 10)]
    deliveries += [("77", dumps(div_a), 0)]

    landing = tmp_path / "landing"
    write_snapshots(landing, d2, d1)
    jsonl = landing / SOURCE / f"arrival_date={today.isoformat()}" / "part-00000.jsonl"
    jsonl.parent.mkdir(parents=True)
    jsonl.write_text("".join(d[1] + "\n" for d in deliveries))
    monkeypatch.setenv("SEQ_LANDING_DIR", str(landing))
    monkeypatch.delenv("SEQ_DEFS_DIR", raising=False)

    # The stream: small micro-batches (several runs per tick) into lake S.
    stream_root, batch_root = tmp_path / "stream_lake", tmp_path / "batch_lake"
    monkeypatch.setenv("SEQ_LAKE_URI", str(stream_root))
    job, sensor = stream_pair(max_batch=45, monkeypatch=monkeypatch)
    cursor = cursor_at_end(kafka_res)
    offsets = produce(kbroker.bootstrap, deliveries)
    assert offsets[-1][1] - offsets[0][1] >= 15  # div_a lies beyond div_b's micro-batch
    _, runs, ticks = drain(job, sensor, dg_instance, kafka_res, cursor)
    assert len(ticks[0].run_requests) == 4 and len(runs) > 4  # the lag took more than one tick
    clicks = read_table(stream_root, "events", "pin_click")
    assert clicks.filter(pl.col("event_id") == "div_b")["user_item_count_30d"].to_list() == [0]

    # Backfill of the closed days in S: enrichments, events and sequences (not raw: it is the stream's).
    from seq_assets.orchestration.assets import build_assets
    from seq_assets.settings import load_compiled

    keys = [k for a in build_assets(load_compiled()) for k in a.keys if k.path[0] != "raw" and k.path[0] != "dead_letter"]
    materialize_range(dg_instance, d2, d1, selection=keys)
    clicks = read_table(stream_root, "events", "pin_click")
    assert clicks.filter(pl.col("event_id") == "div_b")["user_item_count_30d"].to_list() == [1]

    # The pure batch path from the same records as landing JSONL, into lake B.
    monkeypatch.setenv("SEQ_LAKE_URI", str(batch_root))
    materialize_range(dg_instance, d2, d1)

    for et in EVENT_TYPES:
        s = read_table(stream_root, "events", et).filter(pl.col("date") <= d1).drop("ingested_at").sort("event_id")
        b = read_table(batch_root, "events", et).drop("ingested_at").sort("event_id")
        assert b.height > 0
        assert_frame_equal(s, b.select(s.columns), check_column_order=False)
    for feature in FEATURES:
        for day in (d2, d1):
            s = sequences_table(stream_root, feature).filter(pl.col("date") == day).sort("user_id")
            b = sequences_table(batch_root, feature).filter(pl.col("date") == day).sort("user_id")
            assert b.height > 0 and b["item_category"].list.len().sum() > 0
            assert_frame_equal(s, b.select(s.columns))
    # the stream lake keeps today's open day untouched by the backfill
    assert read_table(stream_root, "raw", SOURCE).filter(pl.col("date") == today).height > 0


# ---- plan_ranges (item 8) -----------------------------------------------------------------------

def _flatten(batches):
    return [r for b in batches for r in b]


def test_plan_ranges_bounded_batches_and_several_runs_per_tick():
    ends = {0: 1000, 1: 10, 2: 400}
    batches, cursor, notes = plan_ranges({}, ends, max_batch=150, max_runs=4)
    assert notes == []
    assert len(batches) == 4
    for b in batches:
        assert sum(r.count for r in b) <= 150
        assert all(r.count <= 50 for r in b)  # per partition: max_batch split over the partitions
        assert all(r.count > 0 for r in b)
    # contiguous, no gap and no overlap per partition, starting at the cursor
    for p in ends:
        rs = [r for r in _flatten(batches) if r.partition == p]
        assert rs[0].start == 0
        assert all(a.end == b.start for a, b in zip(rs, rs[1:]))
        assert cursor[str(p)] == rs[-1].end
    assert cursor == {"0": 200, "1": 10, "2": 200}  # lag left for the next tick

    # the next tick continues where this one stopped
    batches2, cursor2, _ = plan_ranges(cursor, ends, max_batch=150, max_runs=4)
    assert batches2[0][0] == OffsetRange(0, 200, 250)
    assert all(r.partition != 1 for r in _flatten(batches2))
    # enough ticks drain everything, each offset exactly once
    seen = {p: [] for p in ends}
    c = {}
    for _ in range(20):
        bs, c, _ = plan_ranges(c, ends, max_batch=150, max_runs=4)
        if not bs:
            break
        for r in _flatten(bs):
            seen[r.partition].extend(range(r.start, r.end))
    assert {p: sorted(v) for p, v in seen.items()} == {p: list(range(e)) for p, e in ends.items()}
    assert c == {str(p): e for p, e in ends.items()}


def test_plan_ranges_nothing_new_and_small_lag():
    assert plan_ranges({"0": 5, "1": 7}, {0: 5, 1: 7}, max_batch=100) == ([], {"0": 5, "1": 7}, [])
    batches, cursor, _ = plan_ranges({"0": 5}, {0: 8, 1: 2}, max_batch=DEFAULT_MAX_BATCH)
    assert batches == [[OffsetRange(0, 5, 8), OffsetRange(1, 0, 2)]]  # one run; a new partition starts at 0
    assert cursor == {"0": 8, "1": 2}
    # max_runs bounds the runs of one tick
    batches, cursor, _ = plan_ranges({}, {0: 100}, max_batch=10, max_runs=3)
    assert [[(r.start, r.end) for r in b] for b in batches] == [[(0, 10)], [(10, 20)], [(20, 30)]]
    assert cursor == {"0": 30}


def test_plan_ranges_resets_a_cursor_ahead_of_the_end():
    batches, cursor, notes = plan_ranges({"0": 500, "1": 3, "2": 9}, {0: 4, 1: 3, 2: 12}, max_batch=300)
    assert batches == [[OffsetRange(0, 0, 4), OffsetRange(2, 9, 12)]]
    assert cursor == {"0": 4, "1": 3, "2": 12}
    assert len(notes) == 1 and "partition 0" in notes[0] and "500" in notes[0]
    # an empty restarted broker: nothing to run, cursor back to 0
    batches, cursor, notes = plan_ranges({"0": 500, "1": 3}, {0: 0, 1: 0}, max_batch=300)
    assert batches == [] and cursor == {"0": 0, "1": 0} and len(notes) == 2
