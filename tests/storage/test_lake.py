"""Partition writes of the lake (seq_assets/lake.py): the polars-written files committed to Delta.

A partition replace writes Parquet with polars and commits the files in one Delta transaction. It
must replace exactly the given days, keep every reader's filters right (its file statistics drive
pruning in delta-rs, polars and pyarrow datasets), fall back to delta-rs for a schema change, and
survive a concurrent insert into the same day.
"""

from __future__ import annotations

import json
import threading
from datetime import date, datetime, timezone

import polars as pl
import pyarrow.dataset as ds
import pytest
from polars.testing import assert_frame_equal

from seq_assets.storage.lake import Lake

D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)


def frame(day: date, ids: list[str], n0: int = 0) -> pl.DataFrame:
    k = len(ids)
    return pl.DataFrame({
        "event_id": ids,
        "n": list(range(n0, n0 + k)),
        "score": [0.5 + i for i in range(k)],
        "flag": [i % 2 == 0 for i in range(k)],
        "surface": ["search" if i % 3 == 0 else "home" for i in range(k)],
        "maybe": pl.Series([None] * k, dtype=pl.String),
        "at": [datetime(2026, 3, 1, 12, 0, 0, 123456 + i, tzinfo=timezone.utc) for i in range(k)],
        "emb": [[float(i), float(i) / 2] for i in range(k)],
        "date": [day] * k,
    })


def lake_path(lake: Lake):
    from pathlib import Path

    return Path(lake.uri("events", "t"))


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def test_replace_touches_only_its_days_and_is_repeatable(lake):
    lake.replace_partitions("events", "t", pl.concat([frame(D1, ["a", "b"]), frame(D2, ["c", "d", "e"])]), [D1, D2])
    lake.replace_partitions("events", "t", frame(D2, ["x"], n0=100), [D2, D3])
    lake.replace_partitions("events", "t", frame(D2, ["x"], n0=100), [D2, D3])  # again: same result
    got = lake.read("events", "t").sort("event_id")
    assert got.get_column("event_id").to_list() == ["a", "b", "x"]
    assert_frame_equal(got.filter(pl.col("date") == D2), frame(D2, ["x"], n0=100), check_column_order=False)
    # A day named but absent from the frame is emptied.
    lake.replace_partitions("events", "t", frame(D3, []), [D1])
    assert lake.read("events", "t").get_column("event_id").to_list() == ["x"]


def test_every_flat_column_has_statistics_so_every_reader_filters_right(lake):
    df = pl.concat([frame(D1, [f"e{i}" for i in range(30)]), frame(D2, [f"f{i}" for i in range(10)], n0=50)])
    lake.replace_partitions("events", "t", df, [D1, D2])
    t = lake.table("events", "t")
    log = sorted((lake_path(lake) / "_delta_log").glob("*.json"))[-1]
    adds = [json.loads(line)["add"] for line in log.read_text().splitlines() if '"add"' in line]
    assert len(adds) == 2
    flat = {"event_id", "n", "score", "flag", "surface", "maybe", "at"}
    for add in adds:
        stats = json.loads(add["stats"])
        assert set(stats["nullCount"]) == flat and stats["numRecords"] in (30, 10)
        assert set(stats["minValues"]) == flat - {"maybe"}  # all null: no min/max, as delta-rs writes
    dataset = t.to_pyarrow_dataset()
    cases = [
        (ds.field("n") >= 55, pl.col("n") >= 55),
        (ds.field("surface") == "search", pl.col("surface") == "search"),
        (ds.field("flag") == True, pl.col("flag")),  # noqa: E712
        (ds.field("score") > 20.0, pl.col("score") > 20.0),
        (ds.field("maybe").is_null(), pl.col("maybe").is_null()),
        (ds.field("event_id") == "f3", pl.col("event_id") == "f3"),
        (ds.field("at") > datetime(2026, 3, 1, 12, 0, 0, 123470, tzinfo=timezone.utc),
         pl.col("at") > datetime(2026, 3, 1, 12, 0, 0, 123470, tzinfo=timezone.utc)),
        ((ds.field("date") == D2) & (ds.field("n") < 52), (pl.col("date") == D2) & (pl.col("n") < 52)),
    ]
    for arrow_filter, polars_filter in cases:
        want = df.filter(polars_filter).height
        assert want > 0
        assert dataset.to_table(filter=arrow_filter).num_rows == want, arrow_filter
        assert pl.scan_delta(t).filter(polars_filter).collect().height == want, polars_filter


def test_a_new_column_falls_back_to_the_delta_writer_with_schema_merge(lake):
    lake.replace_partitions("events", "t", frame(D1, ["a"]), [D1])
    wider = frame(D2, ["b"]).with_columns(pl.lit(7).alias("extra"))
    lake.replace_partitions("events", "t", wider, [D2])
    got = lake.read("events", "t").sort("event_id")
    assert got.get_column("extra").to_list() == [None, 7]


def test_a_replace_racing_inserts_into_the_same_day_loses_nothing(lake):
    lake.replace_partitions("events", "t", frame(D1, ["seed"]), [D1])
    stop = threading.Event()
    inserted: list[str] = []

    def stream():
        i = 0
        while not stop.is_set() and i < 15:
            eid = f"s{i}"
            lake.insert_unseen("events", "t", frame(D1, [eid], n0=1000 + i), key="event_id")
            inserted.append(eid)
            i += 1

    th = threading.Thread(target=stream)
    th.start()
    for k in range(5):
        lake.replace_partitions("events", "t", frame(D1, ["seed", f"batch{k}"]), [D1])
    stop.set()
    th.join()
    # Each replace commits whole or retries; the stream's inserts land either before a replace
    # (and are replaced, as the batch owns the day) or after it: the table is always one of those.
    ids = set(lake.read("events", "t").get_column("event_id").to_list())
    assert {"seed", "batch4"} <= ids
    assert ids - {"seed", "batch4"} <= set(inserted)
    assert lake.table("events", "t").version() >= 6


def test_a_replace_removes_what_was_committed_under_it_so_no_row_is_doubled(lake, monkeypatch):
    from deltalake import DeltaTable

    lake.replace_partitions("events", "t", frame(D1, ["a"]), [D1])
    lake.replace_partitions("events", "t", frame(D2, ["other-day"]), [D2])
    other = Lake(lake.root)
    real = DeltaTable.create_write_transaction
    slipped: list[int] = []

    def commit_with_a_writer_slipping_in(self, actions, mode, *args, **kwargs):
        if mode == "overwrite" and not slipped:
            # Another writer commits to the day after this transaction's version was read.
            other.insert_unseen("events", "t", frame(D1, ["b", "c"], n0=100), key="event_id")
            slipped.append(other.table("events", "t").version())
        return real(self, actions, mode, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", commit_with_a_writer_slipping_in)
    lake.replace_partitions("events", "t", frame(D1, ["a", "b"]), [D1])
    assert slipped
    day = lake.read("events", "t", days=[D1]).sort("event_id")
    assert day.get_column("event_id").to_list() == ["a", "b"]  # exactly what the replace wrote
    assert day.get_column("n").to_list() == [0, 1]
    assert lake.read("events", "t", days=[D2]).get_column("event_id").to_list() == ["other-day"]


def test_writers_that_create_a_table_at_once_store_each_key_once(tmp_path):
    """Four writers insert the same keys into a table none of them finds: one creates it, every
    writer merges, and each key is stored once (a lost create retried as an append doubled them)."""
    for trial in range(3):
        lake = Lake(str(tmp_path / f"lake{trial}"))
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def write(i: int) -> None:
            try:
                df = frame(D1, [f"k{j}" for j in range(50)], n0=i * 1000)
                barrier.wait()
                lake.insert_unseen("raw", "t", df, key="event_id")
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        ids = lake.read("raw", "t").get_column("event_id").to_list()
        assert sorted(ids) == sorted(f"k{j}" for j in range(50))
