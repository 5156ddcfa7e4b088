"""The platform on object storage: landing and lake on a real S3 server (moto, on loopback).

The demo days go through the Dagster assets with the landing area and the lake on ``s3://``, the
storage options given only in the resource's config (no ``SEQ_STORAGE_OPTIONS`` in the process: a
run worker on another machine gets them the same way). Every table, and every reader (training,
SQL views, serving with a poll of freshly inserted events, ``seqctl show``, the checks, ``seqctl
maintain``), then gives exactly what it gives on the same days built on a local lake. The server
runs in a process of its own (``tests/support/s3_process.py``: some deltalake calls hold the GIL).
"""

from __future__ import annotations

import json
from datetime import timedelta

import dagster as dg
import polars as pl
import pyarrow.fs as pafs
import pytest

from seq_assets.orchestration.assets import build_assets
from seq_assets.orchestration.resources import LakeResource
from seq_assets.serving.service import SequenceService
from seq_assets.settings import load_compiled
from seq_assets.storage import maintenance, objects
from seq_assets.storage import sql as lake_sql
from seq_assets.storage.lake import Lake
from seq_assets.training import point_in_time_sequences, read_sequences
from tests.support.demo_lake import DAYS, copy_template, demo_lake_template
from tests.support.envutil import scoped_env
from tests.support.s3 import S3Bucket
from tests.support.s3_process import s3_process_server

pytestmark = pytest.mark.timeout(300)

FEATURES = ("engagements_v1", "saves_v1")
VOLATILE = {"ingested_at", "recorded_at", "batch_id"}  # when a row was written, not what it says
NEXT = DAYS[-1] + timedelta(days=1)


def upload(local_dir, uri: str, storage_options: dict) -> None:
    fs, path = objects.filesystem(uri, storage_options)
    pafs.copy_files(str(local_dir), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def comparable(df: pl.DataFrame) -> pl.DataFrame:
    df = df.drop([c for c in df.columns if c in VOLATILE])
    flat = [c for c, t in df.schema.items() if not t.is_nested()]
    return df.sort(flat, nulls_last=True)


@pytest.fixture(scope="module")
def s3_own_process():
    with s3_process_server() as server:
        yield server


@pytest.fixture(scope="module")
def built(tmp_path_factory, s3_own_process):
    """(local lake, S3 lake, S3 bucket, the S3 runs by day): the same demo days on both."""
    template = demo_lake_template(tmp_path_factory)
    bucket = S3Bucket(s3_own_process, s3_own_process.new_bucket())
    so = bucket.storage_options
    upload(template.landing, bucket.uri("landing"), so)
    resource = LakeResource(uri=bucket.uri("lake"), storage_options=so, landing_uri=bucket.uri("landing"))
    elsewhere = tmp_path_factory.mktemp("not_the_lake")
    runs = {}
    # A step that read the settings instead of the resource would write here, or fail.
    with scoped_env(SEQ_LAKE_URI=str(elsewhere / "lake"), SEQ_LANDING_DIR=str(elsewhere / "landing"),
                    SEQ_STORAGE_OPTIONS=None, SEQ_DEFS_DIR=None):
        for d in DAYS:
            runs[d] = dg.materialize(build_assets(load_compiled()), partition_key=d.isoformat(),
                                     resources={"lake": resource})
            assert runs[d].success, f"materialize {d} on S3 failed"
    assert not any(elsewhere.iterdir())
    local = copy_template(tmp_path_factory, tmp_path_factory.mktemp("local") / "t")
    return Lake(str(local.lake)), Lake(bucket.uri("lake"), so), bucket, runs, template.results


def test_every_table_on_s3_equals_the_local_one(built):
    local, s3, bucket, _, _ = built
    tables = lake_sql.list_tables(local)
    assert lake_sql.list_tables(s3) == tables and len(tables) >= 10
    for kind, name in tables:
        want, got = local.read(kind, name), s3.read(kind, name)
        assert comparable(got).equals(comparable(want)), f"{kind}/{name} differs on S3"
    # The fast partition writer wrote the Parquet files itself (polars' zstd files), on S3.
    assert any(k.startswith("lake/sequences/engagements_v1/date=") and k.endswith(".zstd.parquet")
               for k in bucket.keys("lake/sequences/"))


def test_the_checks_give_the_same_verdicts(built):
    _, _, _, runs, local_runs = built

    def verdicts(result):
        return sorted((e.asset_key.to_user_string(), e.check_name, e.passed)
                      for e in result.get_asset_check_evaluations())

    for d in DAYS:
        assert verdicts(runs[d]) == verdicts(local_runs[d]) and verdicts(runs[d])


def test_training_reads_are_the_same(built):
    local, s3, _, _, _ = built
    compiled = load_compiled()
    for f in FEATURES:
        want = read_sequences(f, DAYS[-1], lake=local, compiled=compiled)
        assert want.height > 0
        assert comparable(read_sequences(f, DAYS[-1], lake=s3, compiled=compiled)).equals(comparable(want))
    users = want.get_column("user_id").head(20)
    labels = pl.DataFrame({"user_id": users, "request_ts": [1772452800000 + i * 3_600_000 for i in range(users.len())]})
    want = point_in_time_sequences("engagements_v1", labels, lake=local, compiled=compiled)
    assert point_in_time_sequences("engagements_v1", labels, lake=s3, compiled=compiled).equals(want)


def test_sql_views_are_the_same(built):
    local, s3, _, _, _ = built
    lc, sc = lake_sql.connect(local), lake_sql.connect(s3)
    names = lake_sql.views(lc)
    assert lake_sql.views(sc) == names
    for view in names:
        q = f"SELECT * FROM {view}"
        assert comparable(lake_sql.query(q, conn=sc)).equals(comparable(lake_sql.query(q, conn=lc))), view
    for name in lake_sql.EXAMPLES:
        sql = lake_sql.example(name, DAYS[-1])
        want = lake_sql.query(sql, conn=lc)
        assert want.height and lake_sql.query(sql, conn=sc).equals(want), name


def test_seqctl_show_is_the_same(built, capsys):
    from seq_assets.cli import main

    local, s3, _, _, _ = built
    user = str(read_sequences("engagements_v1", DAYS[-1], lake=local).get_column("user_id")[0])
    out = {}
    for lake in (local, s3):
        with scoped_env(SEQ_STORAGE_OPTIONS=json.dumps(lake.storage_options) if lake.storage_options else None):
            assert main(["show", "engagements_v1", user, "--as-of", DAYS[-1].isoformat(), "--lake", lake.root]) == 0
        out[lake.root] = capsys.readouterr().out
    assert out[s3.root] == out[local.root] and user in out[local.root]


def test_analysis_assets_write_the_same_tables(built):
    """The analysis assets (DuckDB over the lake views) on each lake, storage options from the config."""
    from dagster_duckdb import DuckDBResource

    from seq_assets.orchestration.analysis_assets import build_analysis_assets

    local, s3, _, _, _ = built
    for lake in (local, s3):
        resource = LakeResource(uri=lake.root, storage_options=lake.storage_options or {})
        with scoped_env(SEQ_STORAGE_OPTIONS=None):
            result = dg.materialize(build_analysis_assets(load_compiled()), partition_key=DAYS[-1].isoformat(),
                                    resources={"lake": resource, "duckdb": DuckDBResource(database=":memory:")})
        assert result.success
    names = local.table_names("analysis")
    assert s3.table_names("analysis") == names and names
    for name in names:
        assert comparable(s3.read("analysis", name)).equals(comparable(local.read("analysis", name))), name


def _fresh_events(local: Lake) -> pl.DataFrame:
    """A few of the last day's pin_click events again on the next day, with new ids."""
    last = local.read("events", "pin_click", days=[DAYS[-1]]).head(30)
    return last.with_columns(pl.col("event_id") + "-next", pl.col("ts") + 86_400_000, pl.lit(NEXT).alias("date"))


def test_serving_snapshot_and_poll_and_then_maintenance_are_the_same(built, capsys):
    """Serving (snapshot, then a poll of events the stream path inserted), then ``seqctl maintain``
    (compaction, retention, vacuum, checkpoint): the same on both lakes."""
    from seq_assets.cli import main

    local, s3, bucket, _, _ = built
    compiled = load_compiled()
    fresh = _fresh_events(local)
    users = fresh.get_column("user_id").unique().sort().to_list()[:10]
    services = {lake.root: SequenceService(compiled, lake) for lake in (local, s3)}

    def served(svc) -> list[dict]:  # as JSON: embeddings come as numpy arrays
        return json.loads(json.dumps([svc.get("engagements_v1", u, n=50, as_of=(NEXT + timedelta(days=1)).isoformat()) for u in users],
                                     default=lambda a: a.tolist()))

    assert served(services[s3.root]) == served(services[local.root])
    for lake in (local, s3):  # the stream's insert, in small batches: small files for the compaction
        for part in fresh.iter_slices(3):
            assert lake.insert_unseen("events", "pin_click", part, "event_id").inserted == part.height
        assert lake.insert_unseen("events", "pin_click", fresh, "event_id").inserted == 0  # re-delivered
        services[lake.root].refresh()
    after = served(services[s3.root])
    assert after == served(services[local.root])
    newest = {e["event_id"] for r in after for e in r["events"][:1]}
    assert newest <= set(fresh.get_column("event_id").to_list()) and newest

    figures = {}
    for lake in (local, s3):
        env = {"SEQ_LAKE_URI": lake.root, "SEQ_STORAGE_OPTIONS": json.dumps(lake.storage_options)
               if lake.storage_options else None, "SEQ_DEFS_DIR": None}
        with scoped_env(**env):
            assert main(["maintain", "--json", "--today", (NEXT + timedelta(days=40)).isoformat()]) == 0
        figures[lake.root] = {r["table"]: {k: v for k, v in r.items() if "bytes" not in k}
                              for r in json.loads(capsys.readouterr().out)}
    assert figures[s3.root] == figures[local.root]
    m = figures[s3.root]
    assert m["events/pin_click"]["files_compacted"] >= 10  # the day's ten insert files
    assert any(r["partitions_dropped"] for r in m.values())  # sequences/ keeps 35 days
    assert all(r["checkpoint_version"] >= 0 for r in m.values())
    for kind, name in lake_sql.list_tables(local):
        assert comparable(s3.read(kind, name)).equals(comparable(local.read(kind, name))), f"{kind}/{name}"

    # Vacuum (a zero retention here) deletes the replaced files from the bucket; reads stay whole.
    before = set(bucket.keys("lake/events/pin_click/"))
    want = local.read("events", "pin_click")
    # The log retention (2 h) first: the versions before the compaction still read the files it removed.
    assert maintenance.vacuum(s3, "events", "pin_click", 0, enforce_retention_duration=False) == (0, 0)
    assert set(bucket.keys("lake/events/pin_click/")) == before
    files, _ = maintenance.vacuum(s3, "events", "pin_click", 0, enforce_retention_duration=False, log_retention_hours=0)
    assert files >= 10 and len(before - set(bucket.keys("lake/events/pin_click/"))) == files
    assert comparable(s3.read("events", "pin_click")).equals(comparable(want))
