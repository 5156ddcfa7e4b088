"""The fast decode paths give exactly what the slower ones give, record for record: polars' native
NDJSON reader what ``str.json_decode`` over the batch gives, the typed parse (required integers and
booleans read into their type) what the text path gives, on both definitions projects and for CSV
and Parquet batches; and a run walking days reads each landing file once with the same raw/ and
dead_letter/ as a fresh engine per day."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest

from seq_assets.core import decode
from seq_assets.core.compiled import Compiled, compile_definitions
from seq_assets.core.engine import Engine
from seq_assets.devtools.demo_data import DemoSpec, generate_event_lines
from seq_assets.storage.lake import Lake
from seq_assets.storage.landing import Landing
from tests.core.test_batch_formats import (
    DAY,
    engine,
    registry,
    write_csv,
    write_parquet,
)
from tests.projects.ratings_defs import REGISTRY

T = int(datetime(2026, 3, 1, 8, tzinfo=timezone.utc).timestamp() * 1000)
SOURCE = "user_engagements"


def good(event_id: str, **extra) -> dict:
    return {"event_id": event_id, "user_id": 7, "action": "click", "item_id": 3, "ts": T, "surface": "search",
            "device": "web", "country": "DE", "dwell_ms": 1200, "is_bot": False, **extra}


@pytest.fixture
def source(compiled) -> dict:
    return compiled.sources[SOURCE]


def split_path(source: dict, values: pl.Series) -> tuple[pl.DataFrame, pl.Series]:
    """What the decoder did before the native reader: ``str.json_decode`` over the batch, split on refusal."""
    trimmed = values.str.strip_chars()
    is_object = (trimmed.str.starts_with("{") & trimmed.str.ends_with("}")).fill_null(False)
    cleaned = values.to_frame("v").select(pl.when(is_object).then(pl.col("v")).otherwise(pl.lit("{}"))).to_series()
    return decode._split_json(cleaned, is_object, pl.Struct({f: pl.String for f in source["schema"]}))


def assert_same_as_split_path(source: dict, lines: list[str]) -> pl.Series:
    values = pl.Series("value", lines, dtype=pl.String)
    fields, ok = decode._bulk_json(values, pl.Struct({f: pl.String for f in source["schema"]}))
    want_fields, want_ok = split_path(source, values)
    assert ok.to_list() == want_ok.to_list()
    assert fields.rows() == want_fields.rows()
    return ok


def test_records_the_reader_would_read_differently_take_the_split_path(source):
    nested_object = json.dumps(good("n1", surface={"a": [1, 2]}))  # json_decode refuses a nested text field
    nested_array = json.dumps(good("n2", device=["web"]))
    text_like_nested = json.dumps(good("t1", surface="[beta] {home}"))  # plain text that only looks nested
    pretty = json.dumps(good("p1"), indent=2)  # one record over several lines: valid JSON
    raw_newline = json.dumps(good("r1")).replace('"search"', '"sea\nrch"')  # a raw newline inside a string
    crlf = json.dumps(good("c1")) + "\r"
    lines = [json.dumps(good("g1")), nested_object, nested_array, text_like_nested, pretty, raw_newline, crlf,
             '{"event_id": "x", "user_id": 7,}', "not json", "", json.dumps(good("g2", user_id="7", ts=str(T)))]
    ok = assert_same_as_split_path(source, lines)
    assert ok.to_list() == [True, False, False, True, True, False, True, False, False, False, True]
    decoded = decode.decode_records(source, pl.Series("value", lines, dtype=pl.String))
    assert decoded.valid["event_id"].to_list() == ["g1", "t1", "p1", "c1", "g2"]
    reasons = dict(zip(decoded.dead["value"], decoded.dead["reason"]))
    assert reasons[nested_object].startswith("unparseable JSON") and reasons[raw_newline].startswith("unparseable JSON")


@pytest.mark.parametrize("chunk", [decode.NATIVE_CHUNK, 1_000])
def test_a_demo_batch_with_every_fault_decodes_as_before(source, chunk, monkeypatch):
    monkeypatch.setattr(decode, "NATIVE_CHUNK", chunk)  # 1_000: the batch in slices, one refused alone
    lines = generate_event_lines(DemoSpec(users=300, days=2, events=20_000, seed=3, end_date=date(2026, 3, 2)))
    values = lines["value"].to_list()
    values[1_500] = '{"event_id": "x", "user_id": 7,}'  # looks like an object; the reader refuses it
    ok = assert_same_as_split_path(source, values)
    assert 0 < (~ok).sum() < 100 and not ok[1_500]  # the cut records, and nothing else, fail to parse


def _landing(root, days_lines: dict[date, list[str]]) -> None:
    for arrival, lines in days_lines.items():
        folder = root / SOURCE / f"arrival_date={arrival.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-00000.jsonl").write_text("\n".join(lines) + "\n")


def test_a_walk_over_days_reads_each_file_once_with_the_same_tables(compiled, tmp_path, monkeypatch):
    demo = generate_event_lines(DemoSpec(users=200, days=4, events=8_000, seed=5, end_date=date(2026, 3, 4)))
    by_arrival = {d: part["value"].to_list() for (d,), part in demo.partition_by("arrival_date", as_dict=True).items()}
    _landing(tmp_path / "landing", by_arrival)
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(4)]
    landing = Landing(str(tmp_path / "landing"))
    reads: list[str] = []
    read_batch_bytes = landing.read_batch_bytes
    monkeypatch.setattr(landing, "read_batch_bytes", lambda path: reads.append(path) or read_batch_bytes(path))

    walked = Lake(str(tmp_path / "walked"))
    engine = Engine(compiled, walked, landing)
    for day in days:
        engine.write_raw_batch_day(SOURCE, day)
    assert reads and len(reads) == len(set(reads))  # each file read once over the walk

    fresh = Lake(str(tmp_path / "fresh"))
    for day in days:
        Engine(compiled, fresh, landing).write_raw_batch_day(SOURCE, day)
    engine.write_raw_batch_day(SOURCE, days[1])  # a step back re-reads its files, and replaces the day alike
    for kind in ("raw", "dead_letter"):
        got, want = (lake.read(kind, SOURCE).drop("ingested_at").sort("record_id") for lake in (walked, fresh))
        assert got.height > 0 and got.equals(want), kind


# ---- the typed parse (required int64/bool fields read straight into their type) ----------------


def decoded_both_ways(source: dict, values: list[str], monkeypatch, meta: pl.DataFrame | None = None):
    """decode_records with the typed parse and with every record on the text path, at one time."""
    at = datetime(2026, 3, 9, tzinfo=timezone.utc)
    series = pl.Series("value", values, dtype=pl.String)
    out = []
    for typed in (True, False):
        monkeypatch.setattr(decode, "TYPED_PARSE", typed)
        out.append(decode.decode_records(source, series, meta, ingested_at=at))
    return out


def assert_same_decode(source: dict, values: list[str], monkeypatch, meta: pl.DataFrame | None = None):
    fast, text = decoded_both_ways(source, values, monkeypatch, meta)
    assert fast.valid.schema == text.valid.schema and fast.dead.schema == text.dead.schema
    assert fast.valid.rows() == text.valid.rows()  # the same rows, in the same order
    assert fast.dead.rows() == text.dead.rows()
    return fast


def faulty_lines(rng, make_good, fields: dict[str, object], n: int) -> list[str]:
    """A seeded mix: good records, mistyped and missing fields, nulls, nested and unicode values,
    numbers the text path still accepts ("7", 1.0, 1e3), out-of-range integers, truncated and
    non-JSON lines, blanks around a record, duplicate keys."""
    odd = [
        lambda r, f: {**r, f: str(r[f]) if r[f] is not None else "7"},
        lambda r, f: {**r, f: 1.0}, lambda r, f: {**r, f: 1.5}, lambda r, f: {**r, f: 1e3},
        lambda r, f: {**r, f: True}, lambda r, f: {**r, f: "true"}, lambda r, f: {**r, f: None},
        lambda r, f: {k: v for k, v in r.items() if k != f}, lambda r, f: {**r, f: {"nested": [1, 2]}},
        lambda r, f: {**r, f: [1]}, lambda r, f: {**r, f: 10**19}, lambda r, f: {**r, f: -(2**63)},
        lambda r, f: {**r, f: 2**63 - 1}, lambda r, f: {**r, f: "ünïcødé ✓ 🎬"}, lambda r, f: {**r, f: "[x] {y}"},
        lambda r, f: {**r, f: -0}, lambda r, f: {**r, f: ""},
    ]
    lines = []
    for i in range(n):
        r = make_good(i)
        roll = rng.random()
        if roll < 0.55:
            lines.append(json.dumps(r, ensure_ascii=rng.random() < 0.5))
        elif roll < 0.85:
            f = rng.choice(list(fields))
            lines.append(json.dumps(rng.choice(odd)(r, f), ensure_ascii=False))
        elif roll < 0.9:
            lines.append(json.dumps(r)[: rng.randrange(1, 40)])  # truncated
        elif roll < 0.93:
            lines.append(rng.choice(["not json", "", "null", "[1, 2]", "{", "  ", '"text"', "{}"]))
        elif roll < 0.96:
            lines.append("  " + json.dumps(r) + " \r")
        elif roll < 0.98:
            f = rng.choice(list(fields))
            lines.append(json.dumps(r)[:-1] + f', "{f}": "dup"}}')  # a key twice: the first counts
        else:
            lines.append(json.dumps(r, indent=1))  # over several lines
    return lines


def test_the_typed_parse_decodes_every_record_as_the_text_path(source, monkeypatch):
    rng = random.Random(17)
    lines = faulty_lines(rng, lambda i: good(f"g{i}", user_id=rng.randrange(10**6), ts=T + i), source["schema"], 3_000)
    assert decode.parsed_types(source) == {"user_id": pl.Int64, "item_id": pl.Int64, "ts": pl.Int64,
                                           "is_bot": pl.Boolean}
    fast = assert_same_decode(source, lines, monkeypatch)
    assert fast.valid.height > 1_500 and fast.dead.height > 500
    monkeypatch.setattr(decode, "NATIVE_CHUNK", 97)  # many slices, some refused whole
    assert_same_decode(source, lines, monkeypatch)


def test_the_typed_parse_on_the_second_project(monkeypatch):
    src = Compiled(compile_definitions(REGISTRY)).sources["ratings"]
    assert decode.parsed_types(src) == {"event_time": pl.Int64, "rating": pl.Int64}
    rng = random.Random(5)

    def rating(i: int) -> dict:
        return {"uid": f"member-{rng.randrange(50):04d}", "movie_id": f"tt{rng.randrange(90):07d}",
                "event_time": 1_772_323_200 + i, "rating": rng.randint(1, 5), "device": rng.choice(["tv", None])}

    lines = faulty_lines(rng, rating, src["schema"], 2_000)
    fast = assert_same_decode(src, lines, monkeypatch)  # derived ids included
    assert fast.valid["rating_id"].n_unique() > 500


def test_the_typed_parse_of_csv_and_parquet_batches(tmp_path, monkeypatch):
    """CSV cells arrive as text and Parquet values typed: the same tables either way."""
    for fmt, write, reg in (("csv", write_csv, registry("csv", time_unit="s")),
                            ("parquet", write_parquet, registry("parquet", time_type="timestamp"))):
        tables = []
        for typed in (True, False):
            monkeypatch.setattr(decode, "TYPED_PARSE", typed)
            root = tmp_path / f"{fmt}-{typed}"
            write(root / "landing")
            eng = engine(root, reg)
            for d in (DAY - timedelta(days=1), DAY, DAY + timedelta(days=1)):
                eng.write_raw_batch_day("plays", d)
            tables.append([eng.lake.read(k, "plays").drop("ingested_at").sort("record_id") for k in ("raw", "dead_letter")])
        assert tables[0][0].height > 0 and tables[0][1].height > 0, fmt
        for got, want in zip(*tables):
            assert got.equals(want), fmt


# ---- a landing file parsed from its bytes as read ----------------------------------------------


def test_a_landing_file_parsed_from_its_bytes_gives_the_tables_of_its_lines(compiled, tmp_path, monkeypatch):
    """The reader handed a JSON lines file's bytes (bad records overwritten in a copy) gives the
    raw/ and dead_letter/ that its lines joined again give: faulty lines, empty and blank lines,
    records over the size limit, one-character lines, CRLF endings, a file without a final newline."""
    src = compiled.sources[SOURCE]
    rng = random.Random(11)
    lines = faulty_lines(rng, lambda i: good(f"g{i}", user_id=rng.randrange(10**6), ts=T + i * 1000), src["schema"], 2_000)
    # A record over several lines is one a line here; a CR before a newline is dropped by the split
    # into lines, so its bytes are not where its line says (c.jsonl has them).
    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    big = json.dumps(good("big", surface="x" * src["max_record_bytes"]))
    folder = tmp_path / "landing" / SOURCE / f"arrival_date={date(2026, 3, 1).isoformat()}"
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_text("\n".join(lines[:1_000] + ["", "   ", big]) + "\n")
    (folder / "b.jsonl").write_text("\n".join(lines[1_000:1_500]))  # no final newline
    (folder / "c.jsonl").write_bytes("\r\n".join(lines[1_500:1_800]).encode())  # CRLF: read as its lines
    (folder / "d.jsonl").write_text("\n".join(["x", *lines[1_800:1_900], "{", *lines[1_900:]]) + "\n")  # too short for {}
    landing = Landing(str(tmp_path / "landing"))
    parsed, whole = [], []
    real, read = decode._bulk_typed, decode._read_ndjson
    monkeypatch.setattr(decode, "_bulk_typed", lambda *a: parsed.append(a[3] is not None) or real(*a))

    def read_whole(*args):
        out = read(*args)
        whole.append(out is not None)
        return out

    monkeypatch.setattr(decode, "_read_ndjson", read_whole)
    tables = []
    for with_bytes in (True, False):
        if not with_bytes:
            monkeypatch.setattr(landing, "read_batch_bytes", lambda path: None)
        lake = Lake(str(tmp_path / f"lake-{with_bytes}"))
        Engine(compiled, lake, landing).write_raw_batch_day(SOURCE, date(2026, 3, 1))
        tables.append([lake.read(k, SOURCE).drop("ingested_at").sort("record_id") for k in ("raw", "dead_letter")])
    assert parsed[:4] == [True, True, False, True] and not any(parsed[4:])  # c.jsonl: its lines joined
    assert whole == [True, True, True]  # a, b and d (its one-character line a blank the reader skips)
    for got, want in zip(*tables):
        assert got.height > 100 and got.equals(want)
    reasons = tables[0][1].get_column("reason").to_list()
    assert any(r.startswith("record larger") for r in reasons) and any(r.startswith("unparseable") for r in reasons)


def test_a_landing_file_on_object_storage_is_read_as_bytes(compiled, tmp_path, s3_bucket):
    lines = [json.dumps(good(f"g{i}", ts=T + i)) for i in range(50)] + ["{truncated", ""]
    body = ("\n".join(lines) + "\n").encode()
    key = f"landing/{SOURCE}/arrival_date=2026-03-01/part-0.jsonl"
    s3_bucket.server.client().put_object(Bucket=s3_bucket.name, Key=key, Body=body)
    landing = Landing(s3_bucket.uri("landing"), s3_bucket.storage_options)
    assert landing.read_batch_bytes(s3_bucket.uri(key)) == body
    lake = Lake(str(tmp_path / "lake"))
    out = Engine(compiled, lake, landing).write_raw_batch_day(SOURCE, date(2026, 3, 1))
    assert (out["rows"], out["dead_letters"]) == (50, 1)
