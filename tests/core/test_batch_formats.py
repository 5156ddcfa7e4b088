"""Batch sources as teams keep them: CSV and Parquet files by arrival day, or an existing Delta table
read by event day (``Source.batch_format``). Each test writes the files itself, runs
``Engine.write_raw_batch_day`` and compares ``raw/`` and ``dead_letter/`` with what it wrote: good rows
typed (the time as epoch ms), bad rows dead-lettered with the reason and the row as received, rows of
other days left out, late arrivals picked up for their event day."""

from __future__ import annotations

import csv
import json
import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable

from seq_assets.core.compiled import Compiled, compile_definitions
from seq_assets.core.engine import Engine
from seq_assets.storage.lake import Lake
from seq_assets.storage.landing import Landing
from signal_defs import EventType, Registry, Source, col
from signal_defs.validate import DefinitionErrors, validate

SOURCE = "plays"
LOCATION = "teams/plays"
DAY = date(2026, 3, 2)
HORIZON = 2
FIELDS = ("play_id", "listener", "track", "at", "seconds", "skipped")


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=timezone.utc)


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def registry(fmt: str, time_type: str = "int64", time_unit: str = "ms", location: str = LOCATION) -> Registry:
    source = Source(
        name=SOURCE, topic="plays", batch_location=location, batch_format=fmt,
        schema={"play_id": "string", "listener": "string", "track": "int64", "at": time_type,
                "seconds": "float64", "skipped": "bool"},
        required=("play_id", "listener", "track", "at"),
        event_id_field="play_id", user_field="listener", time_field="at", time_unit=time_unit)
    return Registry().add(source, EventType(name="play", source=SOURCE, filter=col("track") >= 0,
                                            late_arrival_days=HORIZON))


def engine(tmp_path: Path, reg: Registry) -> Engine:
    compiled = Compiled(compile_definitions(reg))
    return Engine(compiled, Lake(str(tmp_path / "lake")), Landing(str(tmp_path / "landing")))


def row(pid: str, t: datetime | None, listener: str | None = "u1", track=7, seconds=31.5, skipped=False) -> dict:
    return {"play_id": pid, "listener": listener, "track": track, "at": t, "seconds": seconds, "skipped": skipped}


# Deliveries by arrival day, each file a list of rows. ``good``: rows of DAY that must land in
# raw/ (a duplicate delivery of p1 is dropped); ``dead``: rows dated DAY that must be dead letters.
LATE = at(DAY, 23, 59)
DELIVERIES = {
    DAY - timedelta(days=1): [[row("early", at(DAY, 1))]],  # arrived before its day: not read
    DAY: [
        [row("p1", at(DAY, 0)), row("p2", at(DAY, 8), listener="u2", seconds=None, skipped=True),
         row("prev", at(DAY - timedelta(days=1), 22)),  # yesterday's event arriving today
         row("bad-type", at(DAY, 9), track="abc"),
         row("no-listener", at(DAY, 10), listener=None),
         row("no-time", None)],  # dated by its arrival day
        [row("p1", at(DAY, 0)), row("p3", at(DAY, 12), track=0)],
    ],
    DAY + timedelta(days=1): [[row("late1", LATE), row("next", at(DAY + timedelta(days=1), 3)),
                               row("late-bad", at(DAY, 13), skipped="maybe"),  # dated by its event time
                               row("next-no-time", None, track="x")]],  # dated by its arrival day
    DAY + timedelta(days=2): [[row("late2", at(DAY, 14))]],
    DAY + timedelta(days=3): [[row("too-late", at(DAY, 15))]],  # past the late horizon
}
GOOD = {"p1", "p2", "p3", "late1", "late2"}
DEAD = {"bad-type": "mistyped field 'track'", "no-listener": "missing field 'listener'",
        "no-time": "missing field 'at'", "late-bad": "mistyped field 'skipped'"}


def all_rows():
    for arrival, files in DELIVERIES.items():
        for n, rows in enumerate(files):
            for i, r in enumerate(rows):
                yield arrival, f"arrival_date={arrival.isoformat()}/part-{n}", i, r, rows


def expected_raw(origin_file=None) -> dict[str, dict]:
    """play_id -> the raw row the engine must write, from the rows as this test wrote them."""
    out = {}
    for arrival, name, i, r, _ in all_rows():
        if r["play_id"] in GOOD and r["play_id"] not in out:
            out[r["play_id"]] = {**r, "track": int(r["track"]), "at": ms(r["at"]), "arrival_date": arrival,
                                 "record_id": origin_file(arrival, name, i) if origin_file else None,
                                 "origin": "batch", "date": DAY}
    return out


def check_raw(eng: Engine, expected: dict[str, dict], check_record_id: bool = True) -> pl.DataFrame:
    raw = eng.lake.read("raw", SOURCE)
    assert raw.get_column("date").unique().to_list() == [DAY]
    assert sorted(raw.get_column("play_id").to_list()) == sorted(expected)
    assert raw.schema["at"] == pl.Int64 and raw.schema["track"] == pl.Int64 and raw.schema["skipped"] == pl.Boolean
    columns = [*FIELDS, "arrival_date", "origin", "date"] + (["record_id"] if check_record_id else [])
    got = {r["play_id"]: {c: r[c] for c in columns} for r in raw.iter_rows(named=True)}
    for pid, want in expected.items():
        assert got[pid] == {c: want[c] for c in columns}, pid
    return raw


def check_dead(eng: Engine, value_of) -> pl.DataFrame:
    """Every expected dead letter is there once, dated DAY, with its reason and the row as received."""
    dead = eng.lake.read("dead_letter", SOURCE)
    assert dead.get_column("date").unique().to_list() == [DAY]
    by_id = {json.loads(v)["play_id"]: (v, reason) for v, reason in dead.select("value", "reason").iter_rows()}
    assert sorted(by_id) == sorted(DEAD) and dead.height == len(DEAD)
    rows = {r["play_id"]: (r, file_rows) for _, _, _, r, file_rows in all_rows()}
    for pid, reason in DEAD.items():
        value, got_reason = by_id[pid]
        assert got_reason.startswith(reason), (pid, got_reason)
        assert json.loads(value) == value_of(*rows[pid]), pid
    return dead


# ---- CSV: every cell text, the time in seconds ----------------------------------------------------


def csv_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return str(int(v.timestamp()))
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def write_csv(landing: Path) -> None:
    for arrival, files in DELIVERIES.items():
        folder = landing / LOCATION / f"arrival_date={arrival.isoformat()}"
        folder.mkdir(parents=True)
        for n, rows in enumerate(files):
            with open(folder / f"part-{n}.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(FIELDS)
                w.writerows([csv_cell(r[c]) for c in FIELDS] for r in rows)
        (folder / "notes.txt").write_text("not a batch file")
    (landing / LOCATION / f"arrival_date={DAY.isoformat()}" / "part-9.csv").write_text("")  # an empty file


def test_csv_files_by_arrival_day(tmp_path):
    write_csv(tmp_path / "landing")
    eng = engine(tmp_path, registry("csv", time_unit="s"))
    out = eng.write_raw_batch_day(SOURCE, DAY)
    assert out["files"] == 5 and out["rows"] == len(GOOD) and out["duplicates_dropped"] == 1
    assert out["dead_letters"] == len(DEAD)
    check_raw(eng, expected_raw(lambda arrival, name, i: f"batch:{name}.csv:{i}"))
    # The dead letter is the row as the file had it: every cell text, an empty cell null.
    check_dead(eng, lambda r, _: {c: (csv_cell(r[c]) or None) for c in FIELDS})
    # The day before reads none of DAY's events; yesterday's late event is its own.
    eng.write_raw_batch_day(SOURCE, DAY - timedelta(days=1))
    prev = eng.lake.read("raw", SOURCE, days=[DAY - timedelta(days=1)])
    assert prev.get_column("play_id").to_list() == ["prev"]


# ---- Parquet: typed columns, the time a datetime, a file with a text column ------------------------


def text_columns(rows: list[dict]) -> set[str]:
    """A file whose column holds a value of another type has that column as text."""
    return {c for c in ("track", "skipped") if any(isinstance(r[c], str) for r in rows)}


def parquet_cell(r: dict, c: str, text: set[str]):
    v = r[c]
    if v is None or c not in text:
        return v
    return str(v).lower() if isinstance(v, bool) else str(v)


def write_parquet(landing: Path) -> None:
    types = {"play_id": pl.String, "listener": pl.String, "track": pl.Int64, "at": pl.Datetime("us", "UTC"),
             "seconds": pl.Float64, "skipped": pl.Boolean}
    for arrival, files in DELIVERIES.items():
        folder = landing / LOCATION / f"arrival_date={arrival.isoformat()}"
        folder.mkdir(parents=True)
        for n, rows in enumerate(files):
            text = text_columns(rows)
            pl.DataFrame([{c: parquet_cell(r, c, text) for c in FIELDS} for r in rows],
                         schema={c: pl.String if c in text else t for c, t in types.items()}) \
                .write_parquet(folder / f"part-{n}.parquet")


def parquet_value(r: dict, file_rows: list[dict]) -> dict:
    """The row as the file holds it, as JSON: a datetime as ISO 8601 text, text columns as text."""
    text = text_columns(file_rows)
    return {c: r[c].isoformat() if isinstance(r[c], datetime) else parquet_cell(r, c, text) for c in FIELDS}


def test_parquet_files_by_arrival_day_with_a_timestamp_time(tmp_path):
    write_parquet(tmp_path / "landing")
    eng = engine(tmp_path, registry("parquet", time_type="timestamp"))
    out = eng.write_raw_batch_day(SOURCE, DAY)
    assert out["files"] == 4 and out["rows"] == len(GOOD) and out["dead_letters"] == len(DEAD)
    check_raw(eng, expected_raw(lambda arrival, name, i: f"batch:{name}.parquet:{i}"))
    dead = check_dead(eng, parquet_value)
    assert set(dead.get_column("record_id").str.extract(r"^(batch:arrival_date=[\d-]+/part-\d\.parquet:\d)$")
               .to_list()) == set(dead.get_column("record_id").to_list())
    # Run again: the same rows, not twice.
    eng.write_raw_batch_day(SOURCE, DAY)
    assert eng.lake.read("raw", SOURCE).height == len(GOOD)
    assert eng.lake.read("dead_letter", SOURCE).height == len(DEAD)


def test_parquet_naive_datetimes_are_utc_and_integer_times_count_the_unit(tmp_path):
    landing = tmp_path / "landing" / LOCATION
    naive = pl.DataFrame({"play_id": ["n1", "n2"], "listener": ["u1", "u2"], "track": [1, 2],
                          "at": [datetime(2026, 3, 2, 23, 30), datetime(2026, 3, 3, 0, 30)]})
    (landing / "arrival_date=2026-03-03").mkdir(parents=True)
    naive.write_parquet(landing / "arrival_date=2026-03-03" / "a.parquet")
    eng = engine(tmp_path, registry("parquet", time_type="timestamp"))
    eng.write_raw_batch_day(SOURCE, DAY)
    raw = eng.lake.read("raw", SOURCE)
    assert raw.select("play_id", "at").rows() == [("n1", ms(at(DAY, 23, 30)))]

    seconds = tmp_path / "s"
    (seconds / "landing" / LOCATION / "arrival_date=2026-03-03").mkdir(parents=True)
    pl.DataFrame({"play_id": ["s1", "s2"], "listener": ["u1", "u1"], "track": [1, 2],
                  "at": [int(at(DAY, 23).timestamp()), int(at(DAY + timedelta(days=1), 1).timestamp())]}) \
        .write_parquet(seconds / "landing" / LOCATION / "arrival_date=2026-03-03" / "a.parquet")
    eng = engine(seconds, registry("parquet", time_unit="s"))
    eng.write_raw_batch_day(SOURCE, DAY)
    assert eng.lake.read("raw", SOURCE).select("play_id", "at").rows() == [("s1", ms(at(DAY, 23)))]


# ---- Delta: an existing table, read by event day ---------------------------------------------------


def delta_frame(rows: list[dict]) -> pl.DataFrame:
    """The team's table: the time in epoch ms, the track as text (so a bad value is possible), and a
    partition column of the event day."""
    df = pl.DataFrame([{**r, "at": None if r["at"] is None else ms(r["at"]),
                        "track": None if r["track"] is None else str(r["track"]),
                        "skipped": r["skipped"] if isinstance(r["skipped"], bool) else None} for r in rows],
                      schema={"play_id": pl.String, "listener": pl.String, "track": pl.String, "at": pl.Int64,
                              "seconds": pl.Float64, "skipped": pl.Boolean})
    return df.with_columns(pl.from_epoch("at", time_unit="ms").dt.date().cast(pl.String).alias("event_day"))


def delta_value(r: dict) -> dict:
    day = None if r["at"] is None else r["at"].date().isoformat()
    return {**r, "at": None if r["at"] is None else ms(r["at"]), "track": str(r["track"]), "event_day": day,
            "skipped": r["skipped"] if isinstance(r["skipped"], bool) else None}


def test_delta_table_read_by_event_day(tmp_path):
    table = tmp_path / "warehouse" / "plays"
    rows = [r for _, _, _, r, _ in all_rows() if r["play_id"] not in ("late-bad", "late1", "late2")]
    delta_frame(rows).write_delta(str(table), delta_write_options={"partition_by": ["event_day"]})
    # Rows added later (a late load into the team's table) with event times on DAY, and a bad one.
    # (A Delta column is typed: late-bad's "maybe" cannot be in the boolean column, so it is a good row
    # there; late-zz's track is text that is not a number.)
    later = [r for _, _, _, r, _ in all_rows() if r["play_id"] in ("late-bad", "late1", "late2")]
    delta_frame([*later, row("late-zz", at(DAY, 16), track="zz")]).write_delta(str(table), mode="append")
    eng = engine(tmp_path, registry("delta", location=str(table)))
    out = eng.write_raw_batch_day(SOURCE, DAY)
    version = DeltaTable(str(table)).version()
    assert out["files"] == 1
    # Every row of DAY, whichever load brought it, and arrival_date is the day; p1 twice is one row.
    expected = expected_raw()
    expected["too-late"] = {**row("too-late", at(DAY, 15)), "at": ms(at(DAY, 15)), "arrival_date": DAY,
                            "origin": "batch", "date": DAY}
    expected["early"] = {**row("early", at(DAY, 1)), "at": ms(at(DAY, 1)), "arrival_date": DAY,
                         "origin": "batch", "date": DAY}
    expected["late-bad"] = {**row("late-bad", at(DAY, 13), skipped=None), "at": ms(at(DAY, 13)), "arrival_date": DAY,
                            "origin": "batch", "date": DAY}
    for e in expected.values():
        e["arrival_date"] = DAY
    raw = check_raw(eng, expected, check_record_id=False)
    assert raw.get_column("record_id").str.starts_with(f"batch:{table}@v{version}:").all()
    assert raw.get_column("record_id").n_unique() == raw.height
    # A row without a time belongs to no day of a Delta source; the others are dead letters of DAY.
    dead = eng.lake.read("dead_letter", SOURCE)
    reasons = {json.loads(v)["play_id"]: r for v, r in dead.select("value", "reason").iter_rows()}
    assert sorted(reasons) == ["bad-type", "late-zz", "no-listener"]
    assert reasons["bad-type"].startswith("mistyped field 'track'")
    assert reasons["late-zz"].startswith("mistyped field 'track'")
    assert reasons["no-listener"].startswith("missing field 'listener'")
    bad = next(json.loads(v) for v in dead.get_column("value") if json.loads(v)["play_id"] == "bad-type")
    assert bad == delta_value(next(r for _, _, _, r, _ in all_rows() if r["play_id"] == "bad-type"))
    assert dead.get_column("arrival_date").unique().to_list() == [DAY]


def test_delta_read_opens_only_the_files_of_the_day(tmp_path):
    """The day's bounds reach the scan as bounds on the time column: with the files of every other day
    gone, the day still reads (relative to the landing root, times in seconds or datetimes)."""
    for time_type, unit, values in (("int64", "s", lambda t: int(t.timestamp())), ("timestamp", "ms", lambda t: t)):
        root = tmp_path / time_type
        table = root / "landing" / "warehouse" / "plays"
        for d in range(5):
            day = DAY + timedelta(days=d - 2)
            pl.DataFrame({"play_id": [f"{day}-{i}" for i in range(3)], "listener": ["u1"] * 3, "track": [1, 2, 3],
                          "at": [values(at(day, h)) for h in (0, 12, 23)]}).write_delta(str(table), mode="append")
        day_file = DAY.isoformat()
        for f in DeltaTable(str(table)).file_uris():
            path = f.removeprefix("file://")
            if day_file not in pl.read_parquet(path).get_column("play_id")[0]:
                os.remove(path)
        eng = engine(root, registry("delta", time_type=time_type, time_unit=unit, location="warehouse/plays"))
        out = eng.write_raw_batch_day(SOURCE, DAY)
        assert out["rows"] == 3 and out["dead_letters"] == 0, time_type
        assert sorted(eng.lake.read("raw", SOURCE).get_column("at").to_list()) == [ms(at(DAY, h)) for h in (0, 12, 23)]


def test_a_missing_delta_table_is_refused_naming_it(tmp_path):
    eng = engine(tmp_path, registry("delta", location="nowhere"))
    with pytest.raises(ValueError, match="no Delta table at .*nowhere"):
        eng.write_raw_batch_day(SOURCE, DAY)


def test_batch_format_is_one_of_the_four():
    with pytest.raises(DefinitionErrors) as e:
        validate(registry("xlsx"))
    assert "source 'plays'" in str(e.value) and "batch_format" in str(e.value) and "'xlsx'" in str(e.value)
    for fmt in ("jsonl", "csv", "parquet", "delta"):
        assert validate(registry(fmt)) is None
