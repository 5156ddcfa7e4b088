"""A partition replace narrowed by a predicate (``raw/``'s batch rows, ``origin = 'batch'``) goes
through the lake's fast writer: the days' rows the predicate does not match (the stream's) are
carried into the new files, and writers racing it lose and double nothing."""

from __future__ import annotations

import threading
from datetime import date

import polars as pl
import pytest

from seq_assets.storage.lake import Lake

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
BATCH = "origin = 'batch'"


def rows(ids: list[str], origin: str | None, day: date = D1) -> pl.DataFrame:
    return pl.DataFrame({
        "event_id": ids,
        "n": [len(i) for i in ids],
        "origin": pl.Series([origin] * len(ids), dtype=pl.String),
        "date": [day] * len(ids),
    })


def day_rows(lake: Lake, day: date = D1) -> list[tuple]:
    return sorted(lake.read("raw", "s", days=[day]).drop("date").rows(), key=str)


def live_files(lake: Lake, day: date = D1) -> list[str]:
    t = lake.table("raw", "s")
    return [f for f in t.file_uris() if f"date={day.isoformat()}" in f]


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake(str(tmp_path / "lake"))
    lake.append("raw", "s", pl.concat([rows(["b1", "b2"], "batch"), rows(["k1"], "kafka"), rows(["u1"], None),
                                       rows(["b9"], "batch", D2)]))
    return lake


def test_the_other_rows_stay_and_the_day_is_written_by_polars(lake, tmp_path, monkeypatch):
    lake.replace_partitions("raw", "s", rows(["b3"], "batch"), [D1], extra_predicate=BATCH)
    assert day_rows(lake) == sorted([("b3", 2, "batch"), ("k1", 2, "kafka"), ("u1", 2, None)], key=str)
    assert day_rows(lake, D2) == [("b9", 2, "batch")]
    assert live_files(lake) and all(f.endswith(".zstd.parquet") for f in live_files(lake))
    # The same as delta-rs' predicate overwrite (a null origin does not match, so it stays).
    other = Lake(str(tmp_path / "delta-rs"))
    other.append("raw", "s", pl.concat([rows(["b1", "b2"], "batch"), rows(["k1"], "kafka"), rows(["u1"], None),
                                        rows(["b9"], "batch", D2)]))
    monkeypatch.setattr(Lake, "_files_writable", property(lambda self: False))
    other.replace_partitions("raw", "s", rows(["b3"], "batch"), [D1], extra_predicate=BATCH)
    assert day_rows(other) == day_rows(lake) and day_rows(other, D2) == day_rows(lake, D2)


def test_a_missing_table_and_an_empty_replace(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    lake.replace_partitions("raw", "s", rows(["b1"], "batch"), [D1], extra_predicate=BATCH)
    assert day_rows(lake) == [("b1", 2, "batch")]
    lake.append("raw", "s", rows(["k1"], "kafka"))
    lake.replace_partitions("raw", "s", rows([], "batch"), [D1], extra_predicate=BATCH)
    assert day_rows(lake) == [("k1", 2, "kafka")]


def test_a_stream_insert_between_the_read_and_the_commit_is_kept(lake, monkeypatch):
    stream = Lake(lake.root)
    write = lake._write_files

    def insert_then_write(uri, df):  # the stream commits after the day was read, before the commit
        stream.insert_unseen("raw", "s", rows(["k2"], "kafka"), key="event_id")
        return write(uri, df)

    monkeypatch.setattr(lake, "_write_files", insert_then_write)
    lake.replace_partitions("raw", "s", rows(["b3"], "batch"), [D1], extra_predicate=BATCH)
    assert [r[0] for r in day_rows(lake)] == ["b3", "k1", "k2", "u1"]


def test_a_replace_that_lands_first_makes_it_run_again_on_the_new_version(lake, monkeypatch):
    other = Lake(lake.root)
    write, calls = lake._write_files, []

    def replaced_meanwhile(uri, df):
        calls.append(df.height)
        if len(calls) == 1:  # another batch replace removes the files this one read
            other.replace_partitions("raw", "s", rows(["x1", "x2"], "batch"), [D1], extra_predicate=BATCH)
            other.insert_unseen("raw", "s", rows(["k2"], "kafka"), key="event_id")
        return write(uri, df)

    monkeypatch.setattr(lake, "_write_files", replaced_meanwhile)
    lake.replace_partitions("raw", "s", rows(["b3"], "batch"), [D1], extra_predicate=BATCH)
    assert len(calls) == 2  # the commit conflicted and the replace ran again
    assert [r[0] for r in day_rows(lake)] == ["b3", "k1", "k2", "u1"]


def test_replaces_racing_stream_inserts_lose_and_double_nothing(lake):
    stop, inserted, errors = threading.Event(), [], []

    def stream():
        try:
            for i in range(12):
                Lake(lake.root).insert_unseen("raw", "s", rows([f"s{i}"], "kafka"), key="event_id")
                inserted.append(f"s{i}")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            stop.set()

    th = threading.Thread(target=stream)
    th.start()
    k = 0
    while not stop.is_set() or k < 3:
        lake.replace_partitions("raw", "s", rows([f"b{k}a", f"b{k}b"], "batch"), [D1], extra_predicate=BATCH)
        k += 1
    th.join(60)
    assert not errors, errors
    ids = [r[0] for r in day_rows(lake)]
    assert sorted(ids) == sorted([f"b{k - 1}a", f"b{k - 1}b", "k1", "u1", *inserted])  # each once


def test_on_object_storage(s3_bucket):
    lake = Lake(s3_bucket.uri("lake"), s3_bucket.storage_options)
    lake.append("raw", "s", pl.concat([rows(["b1"], "batch"), rows(["k1"], "kafka")]))
    lake.replace_partitions("raw", "s", rows(["b2", "b3"], "batch"), [D1], extra_predicate=BATCH)
    assert [r[0] for r in day_rows(lake)] == ["b2", "b3", "k1"]
    assert all(f.endswith(".zstd.parquet") for f in live_files(lake))
