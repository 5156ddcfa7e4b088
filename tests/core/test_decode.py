"""Decoding: every bad record becomes a dead letter with a reason; the good rows of the batch survive."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import polars as pl
import pytest

from seq_assets import settings
from seq_assets.core.decode import DEAD_LETTER_SCHEMA, decode_records
from seq_assets.core.engine import Engine
from seq_assets.storage.lake import Lake

DAY_MS = 86_400_000
T = int(datetime(2026, 3, 1, 8, tzinfo=timezone.utc).timestamp() * 1000)


def good(event_id: str, ts: int = T, **extra) -> dict:
    return {"event_id": event_id, "user_id": 7, "action": "click", "item_id": 3, "ts": ts, "surface": "search",
            "device": "web", "country": "DE", "dwell_ms": 1200, "is_bot": False, **extra}


def without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


@pytest.fixture
def source(compiled) -> dict:
    return compiled.sources["user_engagements"]


def run(source, lines: list[str], meta: pl.DataFrame | None = None):
    return decode_records(source, pl.Series("value", lines, dtype=pl.String), meta)


def reasons(dead: pl.DataFrame) -> dict[str, str]:
    return dict(zip(dead["value"].to_list(), dead["reason"].to_list()))


def test_each_bad_record_is_a_dead_letter_and_good_rows_still_decode(source):
    malformed = '{"event_id":"m1","user_id":7,"action":"cli'
    missing = json.dumps(without(good("x1"), "user_id"))
    null_required = json.dumps(good("x2", item_id=None))
    mistyped_int = json.dumps(good("x3", user_id="abc"))
    mistyped_ts = json.dumps(good("x4", ts="yesterday"))
    mistyped_bool = json.dumps(good("x5", is_bot="maybe"))
    fractional = json.dumps(good("x6", item_id=1.5))
    oversized = json.dumps(good("x7", surface="s" * (70 * 1024)))
    not_an_object = "[1, 2, 3]"
    plain_text = "hello"
    lines = [json.dumps(good("g1")), malformed, missing, json.dumps(good("g2", dwell_ms=None)), null_required,
             mistyped_int, mistyped_ts, oversized, mistyped_bool, json.dumps(good("g3", ts=T + DAY_MS)), fractional,
             not_an_object, plain_text]
    decoded = run(source, lines)

    assert decoded.valid["event_id"].to_list() == ["g1", "g2", "g3"]
    assert decoded.dead.height == len(lines) - 3
    r = reasons(decoded.dead)
    assert "unparseable JSON" in r[malformed]
    assert r[missing] == "missing field 'user_id'"
    assert r[null_required] == "missing field 'item_id'"
    assert r[mistyped_int].startswith("mistyped field 'user_id'") and "abc" in r[mistyped_int]
    assert r[mistyped_ts].startswith("mistyped field 'ts'") and "yesterday" in r[mistyped_ts]
    assert r[mistyped_bool].startswith("mistyped field 'is_bot'") and "maybe" in r[mistyped_bool]
    assert r[fractional].startswith("mistyped field 'item_id'")
    assert "larger than 65536 bytes" in r[oversized]
    assert r[not_an_object] and r[plain_text]  # refused, whatever the wording
    assert decoded.dead.schema == pl.Schema(DEAD_LETTER_SCHEMA)


def test_valid_rows_are_typed_by_the_source_schema(source, compiled):
    decoded = run(source, [json.dumps(good("g1", dwell_ms=None)), json.dumps(good("g2", is_bot=True))])
    v = decoded.valid
    for name, dtype in compiled.source_schema("user_engagements").items():
        assert v.schema[name] == dtype, name
    assert v["dwell_ms"].to_list() == [None, 1200]
    assert v["is_bot"].to_list() == [False, True]
    assert v["ts"].to_list() == [T, T]
    assert v["date"].to_list() == [date(2026, 3, 1)] * 2
    assert decoded.dead.is_empty()


def test_record_size_limit_boundary(source):
    base = good("big")

    def sized(n: int) -> str:
        pad = n - len(json.dumps(dict(base, surface="")).encode())
        line = json.dumps(dict(base, surface="p" * pad))
        assert len(line.encode()) == n
        return line

    limit = source["max_record_bytes"]
    assert limit == 64 * 1024
    at_limit, over = sized(limit), sized(limit + 1)
    decoded = run(source, [at_limit, over])
    assert decoded.valid.height == 1 and len(decoded.valid["surface"][0]) > 60_000
    assert decoded.dead["value"].to_list() == [over]
    assert "larger than" in decoded.dead["reason"][0]


def test_dead_letters_keep_provenance_and_are_dated(source):
    bad_ts_parses = json.dumps(without(good("a", ts=T - 3 * DAY_MS), "item_id"))  # ts readable
    bad_no_ts = "{not json"
    meta = pl.DataFrame({
        "kafka_partition": [2, 1, 0],
        "kafka_offset": [40, 41, 42],
        "origin": ["stream", "stream", "stream"],
        "arrival_date": [date(2026, 3, 5)] * 3,
    })
    decoded = run(source, [bad_ts_parses, bad_no_ts, json.dumps(good("ok"))], meta)
    dead = {r["value"]: r for r in decoded.dead.to_dicts()}
    assert dead[bad_ts_parses]["date"] == date(2026, 2, 26)  # by event time when it parsed
    assert dead[bad_no_ts]["date"] == date(2026, 3, 5)  # else by arrival day
    assert (dead[bad_ts_parses]["kafka_partition"], dead[bad_ts_parses]["kafka_offset"]) == (2, 40)
    assert (dead[bad_no_ts]["kafka_partition"], dead[bad_no_ts]["kafka_offset"]) == (1, 41)
    assert {r["origin"] for r in dead.values()} == {"stream"}
    assert all(r["ingested_at"] is not None for r in dead.values())
    assert decoded.valid["kafka_offset"].to_list() == [42]


def test_a_batch_of_only_bad_records_and_an_empty_batch(source):
    decoded = run(source, ["{", "", "null", json.dumps({"event_id": "only-id"})])
    assert decoded.valid.is_empty() and decoded.dead.height == 4
    assert decoded.dead["reason"].null_count() == 0
    empty = run(source, [])
    assert empty.valid.is_empty() and empty.dead.is_empty()
    assert set(empty.valid.columns) >= set(source["schema"]) | {"date", "ingested_at"}


def test_many_good_rows_around_a_few_bad_ones(source):
    lines = [json.dumps(good(f"g{i:04d}", ts=T + i)) for i in range(1000)]
    for pos in (0, 333, 999):
        lines[pos] = lines[pos][:25]  # cut: unparseable
    decoded = run(source, lines)
    assert decoded.valid.height == 997 and decoded.dead.height == 3
    # Order of the good rows is kept.
    assert decoded.valid["ts"].is_sorted()


# ---- the batch day: each bad landing record is reported exactly once ----------------------------


def _write_landing(root, arrival: date, lines: list[str]) -> None:
    folder = root / "user_engagements" / f"arrival_date={arrival.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-00000.jsonl").write_text("\n".join(lines) + "\n")


def test_batch_days_report_every_bad_landing_record_exactly_once(compiled, tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    monkeypatch.setenv("SEQ_LANDING_DIR", str(landing))
    d1, d2, d3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)
    late_good = json.dumps(good("late", ts=T))  # event day d1, arrives on d3
    cut_after_ts = json.dumps(good("cut", ts=T))[:-20]  # unparseable, but its ts text is readable
    missing_item_late = json.dumps(without(good("noitem", ts=T), "item_id"))  # ts parses: dated d1
    garbage = "%%%"
    cut_in_ts = '{"event_id":"cut2","user_id":7,"ts":17723'  # the regex can read a (wrong) time from it
    string_ts_late = json.dumps(good("strts", ts=str(T)))  # the decoder accepts "123" for an int64
    _write_landing(landing, d1, [json.dumps(good("a", ts=T)), cut_in_ts])
    _write_landing(landing, d2, [json.dumps(good("b", ts=T + DAY_MS)), cut_after_ts, garbage,
                                 json.dumps(good("a", ts=T)), json.dumps(good("c", ts=T + DAY_MS))])
    _write_landing(landing, d3, [late_good, missing_item_late, string_ts_late])

    lake = Lake(str(tmp_path / "lake"))
    engine = Engine(compiled, lake, settings.landing())
    for day in (d1, d2, d3):
        engine.write_raw_batch_day("user_engagements", day)

    raw = lake.read("raw", "user_engagements")
    assert sorted(zip(raw["event_id"], raw["date"])) == [("a", d1), ("b", d2), ("c", d2), ("late", d1), ("strts", d1)]
    dead = lake.read("dead_letter", "user_engagements")
    values = sorted(dead["value"].to_list())
    assert values == sorted([cut_after_ts, garbage, missing_item_late, cut_in_ts])
    by_value = dict(zip(dead["value"], dead["date"]))
    assert by_value[missing_item_late] == d1
    assert by_value[garbage] == d2  # undated: the day it arrived
    assert by_value[cut_after_ts] == d2 and by_value[cut_in_ts] == d1

    # Re-running a day replaces it: still exactly once.
    engine.write_raw_batch_day("user_engagements", d2)
    assert lake.read("dead_letter", "user_engagements").height == 4
    assert lake.read("raw", "user_engagements").height == 5
