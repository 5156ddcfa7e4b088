"""Writers on object storage (a moto S3 server in a process of its own, on loopback).

1. The stream path on S3, with the second definitions project (string users, derived ids, times in
   seconds, Parquet landing files and snapshots on ``s3://``): a batch day from the landing area,
   then every delivery as Kafka micro-batches through ``index_records`` (a re-delivered batch
   included) give the same tables as on a local lake, and raw/ holds each valid event once.
2. Four writer processes at once on one table: two streams inserting small batches, a backfill
   replacing the same days, and a compactor. delta-rs commits with put-if-absent, which moto
   honours: the table ends with exactly the expected rows, none lost, none twice.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from datetime import date, datetime, timezone

import polars as pl
import pyarrow.fs as pafs
import pytest

from seq_assets.core.engine import Engine
from seq_assets.kafka.microbatch import index_records
from seq_assets.storage import objects
from seq_assets.storage.lake import DROPS_FOR, Lake
from seq_assets.storage.landing import Landing
from tests.support.envutil import scoped_env
from tests.support.ratings import DAYS, MODULE, SOURCE, write_ratings_landing
from tests.support.s3_process import s3_process_server

pytestmark = pytest.mark.timeout(240)

VOLATILE = {"ingested_at"}


@pytest.fixture(scope="module")
def s3():
    with s3_process_server() as server:
        yield server


def comparable(df: pl.DataFrame) -> pl.DataFrame:
    df = df.drop([c for c in df.columns if c in VOLATILE])
    return df.sort([c for c, t in df.schema.items() if not t.is_nested()], nulls_last=True)


def ratings_compiled():
    from seq_assets.settings import _compiled, load_compiled

    with scoped_env(SEQ_DEFS_MODULE=MODULE, SEQ_DEFS_DIR=None):
        _compiled.cache_clear()
        try:
            return load_compiled()
        finally:
            _compiled.cache_clear()


def records(rows: list[dict], first_offset: int) -> pl.DataFrame:
    """Kafka records carrying ``rows`` as JSON, as ``read_range`` gives them."""
    n, now = len(rows), int(time.time() * 1000)
    return pl.DataFrame(
        {"value": [json.dumps(r, separators=(",", ":")) for r in rows], "key": [str(r["uid"]) for r in rows],
         "kafka_partition": [0] * n, "kafka_offset": list(range(first_offset, first_offset + n)), "kafka_ts": [now] * n},
        schema={"value": pl.String, "key": pl.String, "kafka_partition": pl.Int32, "kafka_offset": pl.Int64,
                "kafka_ts": pl.Int64})


def test_stream_micro_batches_on_s3_equal_the_local_lake(tmp_path, s3):
    landing_dir = tmp_path / "landing"
    data = write_ratings_landing(landing_dir, per_day=150)
    bucket = s3.new_bucket()
    so = s3.storage_options()
    fs, path = objects.filesystem(f"s3://{bucket}/landing", so)
    pafs.copy_files(str(landing_dir), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    compiled = ratings_compiled()
    engines = {"local": Engine(compiled, Lake(str(tmp_path / "lake")), Landing(str(landing_dir))),
               "s3": Engine(compiled, Lake(f"s3://{bucket}/lake", so), Landing(f"s3://{bucket}/landing", so))}
    assert engines["s3"].landing.batch_files(SOURCE, DAYS[0], "parquet") == [
        f"s3://{bucket}/landing/ratings/arrival_date={DAYS[0]}/part-{n}.parquet" for n in (0, 1)]
    rows = [r for _, r in data.deliveries]
    batches = [records(rows[i:i + 150], i) for i in range(0, len(rows), 150)]  # the same records for both
    now = datetime(2026, 3, 5, 12, tzinfo=timezone.utc)  # every day is closed: late events counted
    for engine in engines.values():
        for d in DAYS:
            engine.write_enrichment_day("movie_genre", d)  # Parquet snapshots from the landing area
        engine.write_raw_batch_day(SOURCE, DAYS[0])  # Parquet batch files from the landing area
        for i, batch in enumerate(batches):
            index_records(engine, SOURCE, batch, f"b{i}", now=now)
        again = index_records(engine, SOURCE, batches[1], "b1", now=now)  # re-delivered
        assert again.raw_inserted == 0 and not any(again.events_inserted.values())
    local, remote = engines["local"].lake, engines["s3"].lake
    tables = [("raw", SOURCE), ("dead_letter", SOURCE), ("enrichments", "movie_genre"),
              ("events", "liked"), ("events", "disliked"), ("metrics", "late_arrivals")]
    for kind, name in tables:
        want = local.read(kind, name)
        assert want.height and comparable(remote.read(kind, name)).equals(comparable(want)), f"{kind}/{name}"
    raw = remote.read("raw", SOURCE)  # the batch day's events, and the stream's others, once each
    assert sorted(raw.get_column("rating_id").to_list()) == sorted(data.valid())
    assert set(raw.get_column("origin")) == {"batch", "kafka"}


# ---- four writers at once ---------------------------------------------------------------------

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
BATCHES, PER_BATCH = 6, 4


def _rows(prefix: str, n: int, offset: int = 0) -> pl.DataFrame:
    ids = range(offset, offset + n)
    return pl.DataFrame({"event_id": [f"{prefix}-{i}" for i in ids], "user_id": [i % 7 for i in ids],
                         "ts": [1772323200000 + i * 1000 for i in ids],
                         "date": [D1 if i % 2 else D2 for i in ids]})


def expected_rows() -> pl.DataFrame:
    return pl.concat([_rows("base", 40), *[_rows(s, BATCHES * PER_BATCH) for s in ("a", "b")]])


def _writer(role: str, root: str, so: dict, compacted, halfway, done, out) -> None:
    """One writer process: ``a``/``b`` stream inserts, ``backfill`` replaces, ``compact`` compacts.

    The backfill replaces the days with every row (as a rebuild from raw would hold them) once the
    compactor has compacted and both streams are halfway; the streams' other half goes in while it
    writes. Their inserts before it must not stay beside its files, theirs after it must find the
    rows there."""
    from seq_assets.storage import maintenance

    lake = Lake(root, so)
    try:
        if role in ("a", "b"):
            for i in range(BATCHES):
                lake.insert_unseen("events", "clicks", _rows(role, PER_BATCH, i * PER_BATCH), "event_id")
                if i == BATCHES // 2 - 1:  # the other half goes in while the backfill writes
                    halfway[role].set()
                    halfway["backfill"].wait(60)
        elif role == "backfill":
            for event in (compacted, halfway["a"], halfway["b"]):
                event.wait(60)
            halfway["backfill"].set()
            for _ in range(2):
                lake.replace_partitions("events", "clicks", expected_rows(), [D1, D2])
        else:
            n = 0
            while not done.is_set():
                run = maintenance.compact(lake, "events", "clicks", {D1: 2, D2: 2}, now_ms=int(time.time() * 1000))
                if run.files_removed:
                    n += 1
                    compacted.set()
                time.sleep(0.2)
            out.put(("compactions", n))
        out.put((role, "ok"))
    except BaseException as e:  # noqa: BLE001 - the parent reports it
        out.put((role, repr(e)))
        for event in (compacted, *halfway.values()):
            event.set()


def test_four_writer_processes_on_one_table_lose_and_double_nothing(s3):
    root, so = f"s3://{s3.new_bucket()}/lake", s3.storage_options()
    lake = Lake(root, so)
    lake.replace_partitions("events", "clicks", _rows("base", 40), [D1, D2])
    ctx = mp.get_context("spawn")
    compacted, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    halfway = {"a": ctx.Event(), "b": ctx.Event(), "backfill": ctx.Event()}
    procs = {r: ctx.Process(target=_writer, args=(r, root, so, compacted, halfway, done, out))
             for r in ("a", "b", "backfill", "compact")}
    for p in procs.values():
        p.start()
    results = {}
    for r in ("a", "b", "backfill"):
        procs[r].join(180)
    done.set()
    procs["compact"].join(60)
    while not out.empty():
        k, v = out.get()
        results[k] = v
    for p in procs.values():
        if p.is_alive():
            p.kill()
    assert {r: results.get(r) for r in procs} == {r: "ok" for r in procs}
    assert results["compactions"] >= 1
    got = lake.read("events", "clicks")
    assert got.get_column("event_id").n_unique() == got.height  # nothing twice
    assert comparable(got).equals(comparable(expected_rows()))  # nothing lost, nothing else
    ops = [h.get("operation") for h in sorted(lake.table("events", "clicks").history(), key=lambda h: h["version"])]
    # Both backfill replaces landed; a replace that a stream insert committed under also commits
    # the drop of that insert's files (another WRITE), so the count is at least the two replaces.
    assert "OPTIMIZE" in ops and ops.count("MERGE") >= 2 and ops.count("WRITE") >= 2
    history = lake.table("events", "clicks").history()
    assert len([h for h in history if h.get("operation") == "WRITE" and not h.get(DROPS_FOR)]) == 2
