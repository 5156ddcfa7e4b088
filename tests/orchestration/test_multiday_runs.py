"""Runs over many days (backfills) take shortcuts; each must equal the one-day-at-a-time result.

Events: a day's writes overlap the next day's indexing. Sequences: a day is built from the day
before and its own events, equal to a build from the whole window. The chain (``extend_sequences``) is checked against ``assemble_sequences`` on random histories
where lists hit the length cap, days leave the window and users drop out; the engine's chain is
checked on a copy of the demo lake, including a backfill between two days, after which the next
day must be rebuilt from the window instead of extended from stale sequences.
"""

from __future__ import annotations

import random
import shutil
from datetime import date, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from seq_assets import settings
from seq_assets.core.kernel import assemble_sequences, extend_sequences, extendable
from tests.support.oracle import DEMO_DAYS, end_of_day
from tests.support.sequences import sequences_day

DAY_MS = 86_400_000
FIELDS = ["event_id", "ts", "event_type", "item_id", "item_embedding"]


def _history(days: list[date], seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for d in days:
        start = end_of_day(d) - DAY_MS
        for i in range(400):
            user = rng.choice([1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 + days.index(d)])
            ts = start + rng.choice([0, 5, 5, 60_000, rng.randrange(DAY_MS)])  # ties on purpose
            et = rng.choice(["pin_click", "pin_save", "pin_closeup", "pin_hide"])
            eid = f"{d.isoformat()}-{i:04d}"
            row = {"event_id": eid, "user_id": user, "ts": ts, "event_type": et, "item_id": rng.randrange(50),
                   "item_embedding": [rng.random() for _ in range(3)], "date": d}
            rows.append(row)
            if rng.random() < 0.05:  # a duplicate delivery inside the day
                rows.append(dict(row))
    return pl.DataFrame(rows, schema={"event_id": pl.String, "user_id": pl.Int64, "ts": pl.Int64,
                                      "event_type": pl.String, "item_id": pl.Int64,
                                      "item_embedding": pl.List(pl.Float32), "date": pl.Date})


@pytest.mark.parametrize("max_length,window_days", [(5, 2), (40, 3), (500, 90), (1, 1)])
def test_a_chain_of_days_equals_building_each_from_its_window(compiled, max_length, window_days):
    feature = dict(compiled.features["engagements_v1"], max_length=max_length, window_days=window_days)
    assert extendable(feature, FIELDS)
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(6)]
    history = _history(days, seed=max_length)
    previous = None
    for d in days:
        full = assemble_sequences(feature, history, end_of_day(d), FIELDS, d)
        if previous is None:
            got = full
        else:
            got = extend_sequences(feature, previous, history.filter(pl.col("date") == d), end_of_day(d), FIELDS, d)
        assert_frame_equal(got, full)
        previous = got
    # The cases the chain has to handle really happened.
    lengths = previous["event_id"].list.len()
    assert lengths.max() <= max_length
    if window_days < len(days):
        assert 10 not in previous["user_id"].to_list()  # day 1's only user left the window


def test_features_the_chain_cannot_build_are_rebuilt_from_the_window(compiled):
    feature = compiled.features["engagements_v1"]
    assert extendable(feature, FIELDS)
    assert not extendable(feature, ["event_id", "item_id"])  # cannot trim the window without ts
    assert not extendable(dict(feature, dedup_key=["item_id"]), FIELDS)  # an old copy may need to go
    assert not extendable(dict(feature, ordering=dict(feature["ordering"], descending=False)), FIELDS)


@pytest.fixture
def lake_copy(demo_lake, tmp_path):
    from seq_assets.core.engine import Engine
    from seq_assets.settings import load_compiled
    from seq_assets.storage.lake import Lake

    shutil.copytree(demo_lake.lake, tmp_path / "lake")
    return Engine(load_compiled(), Lake(str(tmp_path / "lake")), settings.landing())


@pytest.mark.parametrize("table", ["engagements_v1", "saves_v1"])
def test_the_engine_extends_consecutive_days_and_matches_full_builds(lake_copy, table):
    engine = lake_copy
    built = None
    for d in DEMO_DAYS:
        built = engine._build_sequences(table, d, built)
        assert built.extended == (d != DEMO_DAYS[0])
        assert_frame_equal(built.seqs, engine.build_sequences_day(table, d))
    written = [day for day, _, _ in engine.sequences_days(table, list(DEMO_DAYS))]
    assert written == list(DEMO_DAYS)
    assert_frame_equal(sequences_day(engine.lake, table, DEMO_DAYS[-1]),
                       engine.build_sequences_day(table, DEMO_DAYS[-1]))


def test_a_backfill_between_two_days_makes_the_next_day_rebuild_from_the_window(lake_copy):
    engine, table = lake_copy, "engagements_v1"
    d1, d2, d3 = DEMO_DAYS
    built = engine._build_sequences(table, d2, engine._build_sequences(table, d1, None))
    # A backfill replaces day 1 of pin_click with fewer rows after day 2 was built.
    clicks = engine.lake.read("events", "pin_click", days=[d1])
    dropped = clicks.head(clicks.height // 2)
    engine.lake.replace_partitions("events", "pin_click", clicks.tail(clicks.height - dropped.height), [d1])
    after = engine._build_sequences(table, d3, built)
    assert not after.extended
    assert_frame_equal(after.seqs, engine.build_sequences_day(table, d3))
    gone = set(dropped["event_id"])
    assert not gone & set(after.seqs["event_id"].explode().drop_nulls())
    # An empty replacement (files removed, none added) is caught too.
    engine.lake.replace_partitions("events", "pin_save", engine.lake.read("events", "pin_save", days=[d2]).head(0), [d2])
    again = engine._build_sequences(table, d3, built)
    assert not again.extended
    assert_frame_equal(again.seqs, engine.build_sequences_day(table, d3))


def test_indexing_days_in_one_run_writes_what_one_day_at_a_time_wrote(demo_lake, lake_copy):
    from seq_assets.storage.lake import Lake

    engine, source = lake_copy, "user_engagements"
    before = Lake(str(demo_lake.lake))
    ets = [et["name"] for et in engine.compiled.event_types_of(source)]
    out = list(engine.index_batch_days(source, list(reversed(DEMO_DAYS))))
    assert [d for d, _ in out] == list(DEMO_DAYS)
    for et in ets:
        got = engine.lake.read("events", et).drop("ingested_at").sort("event_id")
        want = before.read("events", et).drop("ingested_at").sort("event_id")
        assert got.height > 0
        assert_frame_equal(got, want)
        assert sum(events[et].height for _, events in out) == want.height


def test_a_single_run_backfill_of_the_range_writes_what_day_by_day_runs_wrote(demo_lake, tmp_path):
    import dagster as dg

    from seq_assets.storage.lake import Lake
    from tests.support.quality_helpers import materialize, platform_env

    before = Lake(str(demo_lake.lake))
    root = tmp_path / "lake"
    shutil.copytree(demo_lake.lake, root)
    with platform_env(root, demo_lake.landing):
        result = materialize(selection=dg.AssetSelection.groups("events", "sequences"),
                             partition_range=(DEMO_DAYS[0].isoformat(), DEMO_DAYS[-1].isoformat()))
    assert result.success
    after = Lake(str(root))
    for et in ("pin_click", "pin_save", "pin_closeup"):
        assert_frame_equal(after.read("events", et).drop("ingested_at").sort("event_id"),
                           before.read("events", et).drop("ingested_at").sort("event_id"))
    for table in ("engagements_v1", "saves_v1"):
        for d in DEMO_DAYS:
            assert_frame_equal(sequences_day(after, table, d), sequences_day(before, table, d))
