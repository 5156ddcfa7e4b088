"""A team's own definitions, shaped unlike the demo, through every runtime of the platform.

``tests/projects/ratings_defs.py`` (loaded with ``SEQ_DEFS_MODULE``): string user ids, times in
seconds, ids derived from three fields, Parquet landing files, a lookup on a string key, features
without ``event_type`` or ``ts``. The batch graph (with its checks and the analysis assets) runs as
Dagster runs; the stream path reads a real broker; serving, training reads and SQL read the result.
Every figure is compared with the plain-Python oracle of ``tests/support/ratings.py``.
"""

from __future__ import annotations

import json
import random
import time
from datetime import timedelta

import dagster as dg
import polars as pl
import pytest
from dagster_duckdb import DuckDBResource

from tests.support.envutil import scoped_env
from tests.support.ratings import (
    DAYS,
    FEATURES,
    MODULE,
    SOURCE,
    TOPIC,
    day_of_ms,
    day_start_s,
    end_of_day_ms,
    rating_id,
    write_ratings_landing,
)
from tests.support.sequences import sequences_day


def _clear_compiled():
    from seq_assets.settings import _compiled

    _compiled.cache_clear()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The landing area written, and every day materialized by Dagster with the project's own
    definitions; the environment points at it for the module's tests."""
    from seq_assets import settings
    from seq_assets.orchestration.analysis_assets import build_analysis_assets
    from seq_assets.orchestration.assets import build_assets
    from seq_assets.orchestration.checks import build_checks
    from seq_assets.orchestration.resources import LakeResource

    root = tmp_path_factory.mktemp("ratings_project")
    landing, lake = root / "landing", root / "lake"
    data = write_ratings_landing(landing)
    env = dict(SEQ_DEFS_MODULE=MODULE, SEQ_DEFS_DIR=None, SEQ_LAKE_URI=str(lake), SEQ_LANDING_DIR=str(landing),
               SEQ_PARTITION_START=DAYS[0].isoformat())
    with scoped_env(**env):
        _clear_compiled()
        compiled = settings.load_compiled()
        defs = [*build_assets(compiled), *build_checks(compiled), *build_analysis_assets(compiled)]
        results = {}
        for d in DAYS:
            results[d] = dg.materialize(defs, partition_key=d.isoformat(), raise_on_error=False,
                                        resources={"lake": LakeResource(), "duckdb": DuckDBResource(database=":memory:")})
        yield {"data": data, "compiled": compiled, "lake": settings.lake(), "results": results,
               "root": root, "env": env}
    _clear_compiled()


def test_only_the_projects_definitions_are_loaded(project):
    c = project["compiled"]
    assert set(c.sources) == {SOURCE}
    assert set(c.features) == set(FEATURES)
    assert "user_engagements" not in c.sources


def test_every_day_and_every_check_passes(project):
    for d, result in project["results"].items():
        assert result.success, f"{d} failed"
        checks = result.get_asset_check_evaluations()
        assert checks, "the checks ran"
        # Freshness compares the newest event with now: March's history is months old, and says so.
        stale = [c for c in checks if c.check_name == "freshness"]
        assert stale and all(not c.passed and c.metadata["lag_seconds"].value > 86_400 for c in stale)
        failed = [(c.asset_key.to_user_string(), c.check_name, c.metadata) for c in checks
                  if not c.passed and c.check_name != "freshness"]
        assert failed == [], f"{d}: {failed}"


def test_raw_holds_each_valid_event_once_with_derived_ids_and_dead_letters_say_why(project):
    data, lake = project["data"], project["lake"]
    raw = lake.read("raw", SOURCE)
    valid = data.valid()
    assert raw.height == raw.get_column("rating_id").n_unique() == len(valid)
    assert set(raw.get_column("rating_id").to_list()) == set(valid)
    # Times are stored in milliseconds under the source's own field name, partitioned by UTC day.
    row = raw.row(0, named=True)
    want = valid[row["rating_id"]]
    assert row["event_time"] == want["event_time"] and row["uid"] == want["uid"]
    assert raw.get_column("uid").dtype == pl.String
    assert raw.filter(pl.col("date") != pl.col("event_time").map_elements(day_of_ms, return_dtype=pl.Date)).is_empty()
    dead = lake.read("dead_letter", SOURCE)
    assert dead.height == len(data.bad())
    reasons = set(dead.get_column("reason").to_list())
    assert any("uid" in r for r in reasons) and any("rating" in r for r in reasons)


@pytest.mark.parametrize("event_type", ["liked", "disliked"])
def test_events_are_filtered_enriched_and_exactly_once(project, event_type):
    data, lake = project["data"], project["lake"]
    got = lake.read("events", event_type).sort("rating_id")
    want = sorted(data.events(event_type), key=lambda e: e["rating_id"])
    assert got.get_column("rating_id").to_list() == [e["rating_id"] for e in want]
    assert got.get_column("event_time").to_list() == [e["event_time"] for e in want]
    assert got.get_column("genre").to_list() == [e["genre"] for e in want]
    assert "event_id" not in got.columns and "ts" not in got.columns and "user_id" not in got.columns


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_sequences_of_every_day_match_the_oracle(project, feature):
    data, lake = project["data"], project["lake"]
    fields = FEATURES[feature]["fields"]
    for d in DAYS:
        df = sequences_day(lake, feature, d)
        assert "uid" in df.columns and "user_id" not in df.columns
        got = {r["uid"]: {f: r[f] for f in fields} for r in df.iter_rows(named=True)}
        assert got == data.sequences(feature, d), f"{feature} {d}"


def test_training_reads_with_string_user_ids(project):
    from seq_assets.training import point_in_time_sequences, read_sequences

    data, lake, compiled = project["data"], project["lake"], project["compiled"]
    want = data.sequences("liked_movies_v1", DAYS[1])
    users = sorted(want)[:5]
    got = read_sequences("liked_movies_v1", DAYS[1], users=users, lake=lake, compiled=compiled)
    assert sorted(got.get_column("uid").to_list()) == users
    for r in got.iter_rows(named=True):
        assert r["movie_id"] == want[r["uid"]]["movie_id"]

    rng = random.Random(3)
    uids = sorted({e["uid"] for e in data.valid().values()})
    labels = pl.DataFrame({"uid": [rng.choice(uids) for _ in range(60)],
                           "request_ts": [rng.randrange(day_start_s(DAYS[0]) * 1000, end_of_day_ms(DAYS[-1]))
                                          for _ in range(60)]})
    pit = point_in_time_sequences("opinions_v1", labels, lake=lake, compiled=compiled)
    for r in pit.iter_rows(named=True):
        expected = data.sequences_before("opinions_v1", r["request_ts"]).get(r["uid"], [])
        assert r["event_time"] == [e["event_time"] for e in expected]
        assert r["rating"] == [e["rating"] for e in expected]


def test_sql_views_of_the_projects_tables(project):
    from seq_assets.sql import query

    data, lake = project["data"], project["lake"]
    d = DAYS[-1]
    df = query(f"SELECT count(*) AS users, sum(len(movie_id)) AS events FROM sequences.liked_movies_v1 "
               f"WHERE date = DATE '{d}'", lake)
    want = data.sequences("liked_movies_v1", d)
    assert df.row(0) == (len(want), sum(len(v["movie_id"]) for v in want.values()))
    lengths = query(f"SELECT feature, sum(users) AS users FROM analysis.sequence_lengths WHERE date = DATE '{d}' "
                    "GROUP BY feature ORDER BY feature", lake)
    assert dict(lengths.iter_rows()) == {f: len(data.sequences(f, d)) for f in sorted(FEATURES)}


def test_serving_answers_string_user_ids(project):
    from seq_assets.serving.service import SequenceService

    data, lake, compiled = project["data"], project["lake"], project["compiled"]
    service = SequenceService(compiled, lake)
    as_of = end_of_day_ms(DAYS[-1])
    want = data.sequences_before("liked_movies_v1", as_of)
    for uid in sorted(want)[:8]:
        body = service.get("liked_movies_v1", uid, as_of=str(as_of), fields="rating_id,event_time,genre")
        assert [e["rating_id"] for e in body["events"]] == [e["rating_id"] for e in want[uid]]
        assert [e["genre"] for e in body["events"]] == [e["genre"] for e in want[uid]]
    assert service.get("liked_movies_v1", "nobody-here", as_of=str(as_of))["events"] == []


def test_the_stream_path_indexes_the_projects_records(project, kbroker, dg_instance, tmp_path):
    """Records for today through a real broker: the sensor plans the range, the run decodes seconds
    and derives ids, and ``events/`` holds each valid event once, also when records come twice."""
    from seq_assets import settings
    from seq_assets.kafka.client import create_topics
    from seq_assets.orchestration.sensors import KafkaResource, stream_defs
    from tests.support.stream import drain, produce

    env = dict(project["env"], SEQ_LAKE_URI=str(tmp_path / "lake"))
    with scoped_env(**env):
        _clear_compiled()
        compiled = settings.load_compiled()
        create_topics(kbroker.bootstrap, {TOPIC: 2})
        kafka = KafkaResource(bootstrap_servers=kbroker.bootstrap)
        job, sensor = stream_defs(compiled, SOURCE)
        now_s = int(time.time())
        rows = [{"uid": f"member-{i % 7:04d}", "movie_id": f"tt{i:07d}", "event_time": now_s - 60 - i,
                 "rating": 5 if i % 2 else 1, "device": "tv"} for i in range(30)]
        bad = [{"uid": "member-0001", "movie_id": "tt1", "event_time": "yesterday", "rating": 5}]
        items = [(r["uid"], json.dumps(r)) for r in rows + rows[:10] + bad]
        produce(kbroker.bootstrap, items, topic=TOPIC)
        drain(job, sensor, dg_instance, kafka, None)
        lake = settings.lake()
        liked = lake.read("events", "liked")
        want = {rating_id(r["uid"], r["movie_id"], r["event_time"]) for r in rows if r["rating"] >= 4}
        assert sorted(liked.get_column("rating_id").to_list()) == sorted(want)
        assert set(liked.get_column("event_time").to_list()) == {r["event_time"] * 1000 for r in rows if r["rating"] >= 4}
        dead = lake.read("dead_letter", SOURCE)
        assert dead.height == 1 and "event_time" in dead.get_column("reason")[0]
    _clear_compiled()
    assert day_of_ms(now_s * 1000) >= DAYS[-1] + timedelta(days=1)


def test_the_serving_tail_serves_fresh_records_of_the_project(project):
    """Records the server's stream tail indexes (seconds, derived ids, string users) are served at
    once, newest first, and a record delivered twice is one event."""
    from seq_assets.serving.service import SequenceService
    from seq_assets.serving.tail import KafkaTail
    from tests.support.serving_helpers import records_frame

    service = SequenceService(project["compiled"], project["lake"])
    tail = KafkaTail(service, "127.0.0.1:9")  # never started: the test hands it records
    service.tail = tail
    now_s = int(time.time())
    rows = [{"uid": "member-fresh", "movie_id": f"tt{i:07d}", "event_time": now_s - 30 - 10 * i,
             "rating": 5 - (i % 2) * 4, "device": "tv"} for i in range(6)]
    assert tail.ingest(SOURCE, records_frame(rows + rows[:2])) > 0
    body = service.get("opinions_v1", "member-fresh", fields="event_time,movie_id,rating")
    want = sorted(rows, key=lambda r: -r["event_time"])
    assert [e["movie_id"] for e in body["events"]] == [r["movie_id"] for r in want]
    assert [e["event_time"] for e in body["events"]] == [r["event_time"] * 1000 for r in want]
    liked = service.get("liked_movies_v1", "member-fresh", fields="rating_id,rating")
    assert [e["rating_id"] for e in liked["events"]] == [
        rating_id(r["uid"], r["movie_id"], r["event_time"]) for r in want if r["rating"] >= 4]
