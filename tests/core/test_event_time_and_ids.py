"""A source's event time becomes int64 epoch milliseconds under its own name, whatever it arrives as
(seconds, microseconds, ISO 8601 text); a source without ids gets the documented derived id."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import polars as pl
import pytest

from seq_assets.core.compiled import Compiled, compile_definitions
from seq_assets.core.days import event_time_ms
from seq_assets.core.decode import decode_records
from tests.support.own_source import SOURCE, ratings_registry, rating_id

T_S = int(datetime(2026, 3, 1, 8, 30, tzinfo=timezone.utc).timestamp())


def compiled(time_type: str = "int64", time_unit: str = "s") -> Compiled:
    return Compiled(compile_definitions(ratings_registry(time_type, time_unit)))


def decode(c: Compiled, records: list) -> tuple[pl.DataFrame, pl.DataFrame]:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    d = decode_records(c.sources[SOURCE], pl.Series("value", lines, dtype=pl.String))
    return d.valid, d.dead


def rating(t, uid="u-1", movie=7, stars=5, **extra) -> dict:
    return {"uid": uid, "movie_id": movie, "event_time": t, "rating": stars, **extra}


@pytest.mark.parametrize("unit, value", [("s", T_S), ("ms", T_S * 1000), ("us", T_S * 1_000_000 + 999)])
def test_integer_times_in_any_unit_are_stored_as_epoch_ms(unit, value):
    valid, dead = decode(compiled(time_unit=unit), [rating(value)])
    assert dead.is_empty()
    assert valid.get_column("event_time").to_list() == [T_S * 1000]
    assert valid.get_column("date").to_list() == [date(2026, 3, 1)]


def test_timestamp_text_with_z_offsets_or_naive_is_utc_epoch_ms():
    c = compiled(time_type="timestamp")
    texts = {"2026-03-01T08:30:00Z": 0, "2026-03-01T10:30:00+02:00": 0, "2026-03-01T03:30:00.250-05:00": 250,
             "2026-03-01T08:30:00": 0, "2026-03-01 08:30:00.5": 500, "2026-03-01T09:30:00+0100": 0}
    valid, dead = decode(c, [rating(t, movie=i) for i, t in enumerate(texts)])
    assert dead.is_empty()
    assert valid.get_column("event_time").to_list() == [T_S * 1000 + ms for ms in texts.values()]
    assert valid.schema["event_time"] == pl.Int64


def test_a_time_that_does_not_parse_is_a_dead_letter_naming_the_field():
    for c, bad in ((compiled(), ["yesterday", "1.5", "2026-03-01T08:30:00Z"]),
                   (compiled(time_type="timestamp"), ["yesterday", "2026-13-01T00:00:00", str(T_S)])):
        valid, dead = decode(c, [rating(T_S if c.sources[SOURCE]["schema"]["event_time"] == "int64"
                                        else "2026-03-01T08:30:00Z")] + [rating(b) for b in bad])
        assert valid.height == 1 and dead.height == len(bad)
        for reason, b in zip(dead.get_column("reason").to_list(), bad):
            assert reason.startswith("mistyped field 'event_time'") and b[:20] in reason


def test_the_time_column_is_int64_in_every_schema():
    for time_type in ("int64", "timestamp"):
        c = compiled(time_type=time_type)
        assert c.source_schema(SOURCE)["event_time"] == pl.Int64
        assert c.event_schema("liked")["event_time"] == pl.Int64
        assert c.source_schema(SOURCE)["rating_id"] == pl.String
        assert list(c.source_schema(SOURCE))[0] == "rating_id"


def test_derived_ids_follow_the_documented_rule_and_agree_across_forms():
    by_seconds, _ = decode(compiled(), [rating(T_S, uid="ü-ß"), rating(T_S, uid="u-2", movie=8)])
    by_text, _ = decode(compiled(time_type="timestamp"),
                        [rating("2026-03-01T09:30:00+01:00", uid="ü-ß"), rating("2026-03-01T08:30:00", uid="u-2", movie=8)])
    want = [rating_id("ü-ß", 7, T_S * 1000), rating_id("u-2", 8, T_S * 1000)]
    assert by_seconds.get_column("rating_id").to_list() == want
    assert by_text.get_column("rating_id").to_list() == want
    # Other fields (the device, the stars) are not part of the id.
    again, _ = decode(compiled(), [rating(T_S, uid="ü-ß", stars=1, device="tv")])
    assert again.get_column("rating_id").to_list() == want[:1]


def test_event_time_ms_reads_typed_columns_as_well():
    src = compiled(time_type="timestamp").sources[SOURCE]
    naive = pl.Series([datetime(2026, 3, 1, 8, 30)]).to_frame("t")
    assert naive.select(event_time_ms(src, pl.col("t"), naive.schema["t"])).item() == T_S * 1000
    aware = naive.with_columns(pl.col("t").dt.replace_time_zone("Europe/Berlin"))
    assert aware.select(event_time_ms(src, pl.col("t"), aware.schema["t"])).item() == (T_S - 3600) * 1000
    seconds = compiled().sources[SOURCE]
    ints = pl.DataFrame({"t": [T_S]})
    assert ints.select(event_time_ms(seconds, pl.col("t"), pl.Int64)).item() == T_S * 1000
