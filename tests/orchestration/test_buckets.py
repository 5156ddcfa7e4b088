"""User buckets: a day of events/ and sequences/ built as 4 bucket steps and one commit equals the
unbucketed build exactly, for the demo definitions and the ratings project (string user ids), and
each table takes one commit per run, so no reader sees part of a day.

The runs here use the in-process executor on a local lake; ``test_celery_backfill.py`` runs the
same graph on two Celery workers over S3.
"""

from __future__ import annotations

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.support.demo_lake import DAYS
from tests.support.envutil import scoped_env

BUCKETS = 4


def _clear_compiled():
    from seq_assets.settings import _compiled

    _compiled.cache_clear()


def _range_tags(first, last) -> dict:
    return {"dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat()}


def run_batch(buckets: int, first, last) -> dg.ExecuteInProcessResult:
    """Every batch asset over [first, last] as one run (a backfill), in process, from the settings."""
    from seq_assets.orchestration.buckets import build_assets
    from seq_assets.orchestration.io import STAGED_IO, LakeIOManager
    from seq_assets.orchestration.resources import LakeResource
    from seq_assets.settings import load_compiled

    return dg.materialize(build_assets(load_compiled(), buckets), tags=_range_tags(first, last),
                          resources={"lake": LakeResource(), STAGED_IO: LakeIOManager()})


def assert_same_lakes(compiled, expected, got, days) -> None:
    """Every partition of events/ (but the ingestion time) and sequences/ equal, row for row."""
    for et in compiled.event_types:
        eid = compiled.sources[compiled.event_types[et]["source"]]["event_id_field"]
        for d in days:
            want = expected.read("events", et, days=[d]).drop("ingested_at").sort(eid)
            have = got.read("events", et, days=[d]).drop("ingested_at").sort(eid)
            assert want.height > 0, (et, d)
            assert_frame_equal(have, want)
    for table, f in compiled.features.items():
        user = compiled.user_field(f)
        for d in days:
            want = expected.read("sequences", table, days=[d]).sort(user)
            have = got.read("sequences", table, days=[d]).sort(user)
            assert want.height > 0, (table, d)
            assert_frame_equal(have, want)


def test_bucket_ops_in_the_graph():
    from seq_assets.orchestration.buckets import build_assets
    from seq_assets.settings import load_compiled

    with scoped_env(SEQ_DEFS_DIR=None, SEQ_DEFS_MODULE=None):
        assets = {a.node_def.name: a for a in build_assets(load_compiled(), 3)}
    graph = assets["sequences__engagements_v1"].node_def
    assert sorted(n.name for n in graph.nodes) == [
        "sequences__engagements_v1__bucket_0", "sequences__engagements_v1__bucket_1",
        "sequences__engagements_v1__bucket_2", "sequences__engagements_v1__commit"]


def test_demo_backfill_in_buckets_equals_the_unbucketed_build(demo_lake, compiled, tmp_path):
    from seq_assets.storage.lake import Lake

    lake_dir = tmp_path / "lake"
    with scoped_env(SEQ_LAKE_URI=str(lake_dir), SEQ_LANDING_DIR=str(demo_lake.landing), SEQ_DEFS_DIR=None,
                    SEQ_DEFS_MODULE=None):
        result = run_batch(BUCKETS, DAYS[0], DAYS[-1])
        assert result.success
        got = Lake(str(lake_dir))
        assert_same_lakes(compiled, Lake(str(demo_lake.lake)), got, DAYS)

        # The bucket steps ran, and each table took one commit for the run's 3 days and 4 buckets.
        steps = {e.step_key for e in result.all_events if e.is_step_success}
        assert "sequences__engagements_v1.sequences__engagements_v1__bucket_3" in steps
        for kind, name in [("events", "pin_click"), ("sequences", "engagements_v1")]:
            assert got.table(kind, name).version() == 0
        # A re-run of one day replaces it in one more commit, with the same result.
        before = got.table("sequences", "engagements_v1").version()
        assert run_batch(BUCKETS, DAYS[1], DAYS[1]).success
        assert got.table("sequences", "engagements_v1").version() == before + 1
        assert_same_lakes(compiled, Lake(str(demo_lake.lake)), got, DAYS)
        # The steps' outputs (descriptions of the staged files) are gone once committed.
        outputs = lake_dir / "_step_outputs"
        assert not [p for p in outputs.rglob("*") if p.is_file()]


def test_ratings_project_in_buckets_equals_the_unbucketed_build(tmp_path):
    from seq_assets import settings
    from seq_assets.storage.lake import Lake
    from tests.support.ratings import DAYS as RDAYS
    from tests.support.ratings import MODULE, write_ratings_landing

    landing = tmp_path / "landing"
    write_ratings_landing(landing)
    lakes = {}
    for buckets in (1, BUCKETS):
        lakes[buckets] = tmp_path / f"lake{buckets}"
        with scoped_env(SEQ_DEFS_MODULE=MODULE, SEQ_DEFS_DIR=None, SEQ_LAKE_URI=str(lakes[buckets]),
                        SEQ_LANDING_DIR=str(landing), SEQ_PARTITION_START=RDAYS[0].isoformat()):
            _clear_compiled()
            try:
                assert run_batch(buckets, RDAYS[0], RDAYS[-1]).success
                compiled = settings.load_compiled()
            finally:
                _clear_compiled()
    assert compiled.user_field(compiled.features["liked_movies_v1"]) == "uid"
    assert_same_lakes(compiled, Lake(str(lakes[1])), Lake(str(lakes[BUCKETS])), RDAYS)
    # The string ids really spread over the buckets.
    from seq_assets.core.buckets import user_bucket

    users = Lake(str(lakes[1])).read("sequences", "liked_movies_v1").get_column("uid").unique()
    assert user_bucket(users, BUCKETS).n_unique() == BUCKETS


@pytest.mark.parametrize("bucket_users", [[1, 2, None], ["a", "b"]])
def test_in_bucket_partitions_the_rows(bucket_users):
    from seq_assets.core.engine import in_bucket

    df = pl.DataFrame({"u": bucket_users * 20})
    parts = [in_bucket(df, "u", (b, 3)) for b in range(3)]
    assert sum(p.height for p in parts) == df.height
    assert in_bucket(df.lazy(), "u", (0, 3)).collect().height == parts[0].height
    if None in bucket_users:
        assert parts[0].get_column("u").null_count() == 20  # a null user is in bucket 0


def test_a_stream_insert_between_the_buckets_reads_and_their_commit_is_not_lost(demo_lake, tmp_path):
    """Raw rows the stream commits after the bucket steps read the day are indexed after the commit,
    as the unbucketed replace does: the day holds the old events and the new one, once."""
    import shutil

    from seq_assets.core.engine import Engine
    from seq_assets.settings import load_compiled
    from seq_assets.storage.lake import Lake
    from seq_assets.storage.landing import Landing

    shutil.copytree(demo_lake.lake, tmp_path / "lake")
    with scoped_env(SEQ_DEFS_DIR=None, SEQ_DEFS_MODULE=None):
        compiled = load_compiled()
    lake = Lake(str(tmp_path / "lake"))
    engine = Engine(compiled, lake, Landing(str(demo_lake.landing)))
    source, day = "user_engagements", DAYS[1]
    names = [et["name"] for et in compiled.event_types_of(source)]
    before = lake.read("events", "pin_click", days=[day])
    parts = [engine.stage_events_days(source, [day], names, (b, 2)) for b in range(2)]

    # The stream delivers one more click of the day (a copy of a click under a new id) meanwhile.
    raw = lake.read("raw", source, days=[day])
    click = raw.filter(pl.col("event_id") == before.get_column("event_id")[0])
    late = click.with_columns(pl.lit("streamed-late-1").alias("event_id"), pl.lit("kafka").alias("origin"))
    lake.insert_unseen("raw", source, late, key="event_id")

    engine.commit_events_days(source, parts, names)
    after = lake.read("events", "pin_click", days=[day])
    assert after.height == before.height + 1
    assert after.filter(pl.col("event_id") == "streamed-late-1").height == 1
    assert sorted(after.get_column("event_id").to_list()) == sorted(
        [*before.get_column("event_id").to_list(), "streamed-late-1"])
