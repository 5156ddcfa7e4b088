"""A team's own source through the ingest runtimes: string user ids (``uid``), times in seconds or
ISO 8601 text (``event_time``), no event id in the records (``rating_id`` derived from the user, the
movie and the time), a filter on ``rating``, a counter per member, and a feature without
``event_type``. The same records go through the batch path (decode, ``raw/``, ``index_batch_days``,
``sequences_days``) and the stream's micro-batch write path (``index_records``, with re-deliveries);
every table is compared with a plain-Python reading of the records, and the quality checks run on it.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest

from seq_assets.core import quality
from seq_assets.core.compiled import Compiled, compile_definitions
from seq_assets.core.engine import Engine, first_per_key
from seq_assets.kafka.microbatch import index_records
from seq_assets.storage.lake import Lake
from tests.support.own_source import COUNTER, COUNTER_DAYS, FIELDS, SOURCE, rating_id, ratings_registry
from tests.support.sequences import sequences_day

DAY_MS = 86_400_000
N, WINDOW = 5, 3
FEATURE = "liked_movies_v1"
# An old day (outside every window but the first), then three consecutive days.
DAYS = [date(2026, 2, 25), date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
USERS = ["007", "7", "ü-ana", "bob"]  # "007" and "7" are two members: nothing casts ids to integers
NOW = datetime(2026, 3, 4, 6, tzinfo=timezone.utc)


def day_start_s(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())


def make_records(seed: int = 5) -> tuple[list[dict], list[str]]:
    """Good ratings (with exact copies, ties in time, more than N per member, one at the very start
    of a window) per day, and bad records. Returns (good rows in delivery order, bad lines)."""
    rng = random.Random(seed)
    rows: list[dict] = []
    for d in DAYS:
        for i in range(36):
            t = day_start_s(d) + rng.randrange(86_400)
            if i % 9 == 0:
                t = day_start_s(d) + 40_000  # members rating several movies in the same second
            rows.append({"uid": rng.choice(USERS), "movie_id": rng.randrange(1, 12), "event_time": t,
                         "rating": rng.randint(1, 5), "device": rng.choice(["tv", "phone", None])})
    last = day_start_s(DAYS[-1]) + 86_399
    rows += [{"uid": "7", "movie_id": m, "event_time": last, "rating": 5, "device": "tv"} for m in (3, 1, 2)]  # a tie on top
    # zed: one rating exactly at the start of the last day's window, one a second before it.
    rows += [{"uid": "zed", "movie_id": 50, "event_time": day_start_s(DAYS[1]), "rating": 4, "device": None},
             {"uid": "zed", "movie_id": 51, "event_time": day_start_s(DAYS[0]) + 86_399, "rating": 5, "device": None}]
    rows = [r for i, r in enumerate(rows) for _ in range(2 if i % 7 == 3 else 1)]  # exact copies
    t = day_start_s(DAYS[2])
    bad = [json.dumps({"movie_id": 1, "event_time": t, "rating": 5}),  # no user
           json.dumps({"uid": "bob", "movie_id": 1, "event_time": "yesterday", "rating": 5}),
           json.dumps({"uid": "bob", "movie_id": 1, "event_time": 1.5, "rating": 5}),
           json.dumps({"uid": "bob", "movie_id": 1, "event_time": t, "rating": "five"}),
           '{"uid": "bob", "movie_id": 1, "event_ti']
    return rows, bad


# ---- the plain-Python reading of the records ------------------------------------------------------


def expected_events(rows: list[dict]) -> dict[str, dict]:
    """Distinct events by derived id (the first copy), times in ms, with the member's count of
    ratings in the 7 days before each one."""
    events: dict[str, dict] = {}
    for r in rows:
        ms = r["event_time"] * 1000
        events.setdefault(rating_id(r["uid"], r["movie_id"], ms), dict(r, event_time=ms))
    for rid, e in events.items():
        e["rating_id"] = rid
        e[COUNTER] = sum(1 for o in events.values() if o["uid"] == e["uid"]
                         and e["event_time"] - COUNTER_DAYS * DAY_MS <= o["event_time"] < e["event_time"])
    return events


def expected_sequences(events: dict[str, dict], day: date) -> dict[str, dict[str, list]]:
    """{uid: {field: values newest first}} of the liked ratings in the window ending with ``day``."""
    end = (day_start_s(day) + 86_400) * 1000
    start = end - WINDOW * DAY_MS
    per_user: dict[str, list[dict]] = defaultdict(list)
    for e in events.values():
        if e["rating"] >= 4 and start <= e["event_time"] < end:
            per_user[e["uid"]].append(e)
    out = {}
    for uid, evs in per_user.items():
        evs = sorted(evs, key=lambda e: (-e["event_time"], e["rating_id"]))[:N]
        out[uid] = {f: [e[f] for e in evs] for f in FIELDS}
    return out


# ---- the runtimes ---------------------------------------------------------------------------------


def compiled(time_type: str = "int64") -> Compiled:
    return Compiled(compile_definitions(ratings_registry(time_type, "s", max_length=N, window_days=WINDOW)))


def kafka_records(lines: list[str], keys: list, first_offset: int) -> pl.DataFrame:
    """Kafka records as the micro-batch reader hands them over; the key is the member id, a string."""
    n = len(lines)
    return pl.DataFrame({"value": lines, "key": keys, "kafka_partition": [0] * n,
                         "kafka_offset": list(range(first_offset, first_offset + n)),
                         "kafka_ts": [int(NOW.timestamp() * 1000)] * n},
                        schema={"value": pl.String, "key": pl.String, "kafka_partition": pl.Int32,
                                "kafka_offset": pl.Int64, "kafka_ts": pl.Int64})


def run_batch(c: Compiled, root, lines: list[str]) -> Engine:
    """The batch path from decoded records: raw/ per event day, then events/ day by day."""
    engine = Engine(c, Lake(str(root)))
    decoded = engine.decode(SOURCE, pl.Series("value", lines, dtype=pl.String))
    raw = first_per_key(decoded.valid, c.sources[SOURCE]["event_id_field"])
    engine.lake.replace_partitions("raw", SOURCE, raw, DAYS)
    engine.lake.replace_partitions("dead_letter", SOURCE, decoded.dead, sorted(set(decoded.dead["date"])))
    assert [d for d, _ in engine.index_batch_days(SOURCE, DAYS)] == DAYS
    return engine


def run_stream(c: Compiled, root, batches: list[list[str]]) -> Engine:
    """Micro-batches in offset order; a batch may re-deliver records of an earlier one."""
    engine = Engine(c, Lake(str(root)))
    offset = 0
    for i, lines in enumerate(batches):
        keys = [json.loads(v).get("uid") if v.endswith("}") else None for v in lines]
        records = kafka_records(lines, keys, offset)
        index_records(engine, SOURCE, records, batch_id=f"{SOURCE}@0:{offset}-{offset + len(lines)}", now=NOW)
        offset += len(lines)
        if i == 0:  # the same micro-batch run again changes nothing
            before = engine.lake.read("events", "liked").height
            index_records(engine, SOURCE, records, batch_id=f"{SOURCE}@0:0-{len(lines)}", now=NOW)
            assert engine.lake.read("events", "liked").height == before
    return engine


def sequences_by_user(seqs: pl.DataFrame) -> dict[str, dict[str, list]]:
    return {r["uid"]: {f: r[f] for f in FIELDS} for r in seqs.iter_rows(named=True)}


@pytest.fixture(scope="module")
def records():
    rows, bad = make_records()
    return rows, bad, expected_events(rows)


@pytest.fixture(scope="module")
def batch(records, tmp_path_factory):
    rows, bad, _ = records
    lines = [json.dumps(r) for r in rows] + bad
    random.Random(1).shuffle(lines)  # arrival order does not matter to the batch path
    return run_batch(compiled(), tmp_path_factory.mktemp("own_batch"), lines)


@pytest.fixture(scope="module")
def stream(records, tmp_path_factory):
    rows, bad, _ = records
    lines = [json.dumps(r) for r in rows]
    by_day = [[v for v, r in zip(lines, rows) if day_start_s(d) <= r["event_time"] < day_start_s(d) + 86_400]
              for d in DAYS]
    # Time order across batches (a counter is computed when an event is indexed); later batches
    # re-deliver part of the earlier ones, and the bad records come once.
    batches = [by_day[0] + by_day[1], by_day[2] + by_day[1][::3] + bad, by_day[3] + by_day[0][::2] + by_day[2][1::4]]
    return run_stream(compiled(), tmp_path_factory.mktemp("own_stream"), batches)


@pytest.fixture(params=["batch", "stream"])
def engine(request):
    return request.getfixturevalue(request.param)


# ---- raw/, dead letters and events/ -------------------------------------------------------------


def test_raw_holds_each_event_once_with_derived_ids_ms_times_and_string_users(engine, records):
    _, _, want = records
    raw = engine.lake.read("raw", SOURCE)
    assert sorted(raw.get_column("rating_id").to_list()) == sorted(want)
    assert raw.schema["uid"] == pl.String and raw.schema["event_time"] == pl.Int64
    for r in raw.iter_rows(named=True):
        e = want[r["rating_id"]]
        assert (r["uid"], r["movie_id"], r["event_time"], r["rating"]) == (e["uid"], e["movie_id"], e["event_time"], e["rating"])
        assert r["date"] == date(1970, 1, 1) + timedelta(milliseconds=r["event_time"])
    assert {"event_id", "user_id", "ts"}.isdisjoint(raw.columns)


def test_bad_records_are_dead_letters_naming_the_field(engine, records):
    _, bad, _ = records
    dead = engine.lake.read("dead_letter", SOURCE)
    reasons = dict(zip(dead.get_column("value").to_list(), dead.get_column("reason").to_list()))
    assert sorted(reasons) == sorted(bad)
    assert reasons[bad[0]] == "missing field 'uid'"
    assert reasons[bad[1]].startswith("mistyped field 'event_time'") and "yesterday" in reasons[bad[1]]
    assert reasons[bad[2]].startswith("mistyped field 'event_time'")
    assert reasons[bad[3]].startswith("mistyped field 'rating'")
    assert "unparseable JSON" in reasons[bad[4]]


def test_events_are_filtered_counted_and_exactly_once(engine, records):
    _, _, want = records
    liked = engine.lake.read("events", "liked").sort("rating_id")
    expect = sorted((e for e in want.values() if e["rating"] >= 4), key=lambda e: e["rating_id"])
    assert liked.get_column("rating_id").to_list() == [e["rating_id"] for e in expect]
    assert liked.get_column("uid").to_list() == [e["uid"] for e in expect]
    assert liked.get_column("event_time").to_list() == [e["event_time"] for e in expect]
    assert liked.get_column(COUNTER).to_list() == [e[COUNTER] for e in expect]
    assert set(liked.get_column("event_type")) == {"liked"}
    assert liked.schema == pl.Schema(compiled().event_schema("liked"))


# ---- sequences/ -----------------------------------------------------------------------------------


def test_sequences_of_every_day_match_the_plain_reading(engine, records):
    _, _, want = records
    f = engine.compiled.features[FEATURE]
    assert f["ordering"] == {"by": "event_time", "descending": True, "tie_break": "rating_id"}
    assert f["dedup_key"] == ["rating_id"]
    # Day to day (each day from the one before) and each day on its own give the same sequences.
    extended = {d: seqs for d, seqs, _ in engine.sequences_days(FEATURE, DAYS)}
    for d in DAYS:
        alone = engine.build_sequences_day(FEATURE, d)
        assert sequences_by_user(alone) == expected_sequences(want, d), d
        assert sequences_by_user(extended[d]) == sequences_by_user(alone), d
        written = sequences_day(engine.lake, FEATURE, d)
        assert sequences_by_user(written) == expected_sequences(want, d), d
        assert written.schema["uid"] == pl.String and "event_type" not in written.columns
    # The window and N matter here: an old day falls out, and somebody is at the cap.
    assert expected_sequences(want, DAYS[-1]) != expected_sequences(want, DAYS[-2])
    last = expected_sequences(want, DAYS[-1])
    assert any(len(s["rating_id"]) == N for s in last.values())
    assert last["7"]["event_time"][:3] == [last["7"]["event_time"][0]] * 3
    assert last["7"]["rating_id"][:3] == sorted(last["7"]["rating_id"][:3])
    assert last["zed"]["movie_id"] == [50] and expected_sequences(want, DAYS[0])["zed"]["movie_id"] == [51]


def test_a_timestamp_typed_variant_gives_the_same_ids_and_sequences(records, tmp_path):
    rows, _, want = records

    def iso(t: int, i: int) -> str:
        utc = datetime.fromtimestamp(t, tz=timezone.utc)
        if i % 3 == 0:
            return utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        if i % 3 == 1:
            return utc.astimezone(timezone(timedelta(hours=2))).isoformat()
        return utc.strftime("%Y-%m-%dT%H:%M:%S")  # naive: UTC

    lines = [json.dumps(dict(r, event_time=iso(r["event_time"], i))) for i, r in enumerate(rows)]
    bad = [json.dumps({"uid": "bob", "movie_id": 1, "event_time": "2026-02-30T10:00:00Z", "rating": 5}),
           json.dumps({"uid": "bob", "movie_id": 1, "event_time": str(day_start_s(DAYS[1])), "rating": 5})]
    engine = run_stream(compiled("timestamp"), tmp_path, [lines[: len(lines) // 2], lines[len(lines) // 2:] + bad])
    raw = engine.lake.read("raw", SOURCE)
    assert sorted(raw.get_column("rating_id").to_list()) == sorted(want)
    assert raw.schema["event_time"] == pl.Int64
    for d, seqs, _ in engine.sequences_days(FEATURE, DAYS):
        assert sequences_by_user(seqs) == expected_sequences(want, d), d
    dead = engine.lake.read("dead_letter", SOURCE)
    assert dead.height == 2 and all(r.startswith("mistyped field 'event_time'") for r in dead["reason"])


# ---- the quality checks on these tables -----------------------------------------------------------


def test_quality_checks_pass_on_the_tables_and_name_this_sources_columns(engine, records):
    c = engine.compiled
    f = c.features[FEATURE]
    for d in DAYS:
        raw, _ = engine.raw_day(SOURCE, d)
        events = engine.lake.read("events", "liked", days=[d])
        for outcome in (quality.uniqueness(events, "rating_id"), quality.completeness(c, "liked", raw, events),
                        quality.coverage(c, "liked", events)):
            assert outcome.passed, (d, outcome.description)
        assert quality.completeness(c, "liked", raw, events).metadata["expected"] == events.height
    for d, seqs, _ in engine.sequences_days(FEATURE, DAYS):
        assert quality.sequence_invariants(f, seqs, d, "uid").passed, d
    assert quality.table_schema_drift(engine.lake, "events", "liked", c.event_schema("liked")).passed
    assert quality.table_schema_drift(engine.lake, "sequences", FEATURE, c.sequence_schema(f)).passed
    newest = int(engine.lake.read("events", "liked").get_column("event_time").max())
    fresh = quality.freshness(c, engine.lake, "liked", now_ms=newest + 30_000)
    assert fresh.passed and fresh.metadata["lag_seconds"] == 30


def test_quality_checks_catch_a_copy_an_unsorted_sequence_and_a_missing_event(batch):
    c, lake = batch.compiled, batch.lake
    f = c.features[FEATURE]
    d = DAYS[-1]
    events = lake.read("events", "liked", days=[d])
    doubled = pl.concat([events, events.head(1)])
    assert quality.uniqueness(doubled, "rating_id").metadata["duplicates"] == 1
    raw, _ = batch.raw_day(SOURCE, d)
    short = quality.completeness(c, "liked", raw, events.slice(1))
    assert not short.passed and short.metadata["missing"] == 1
    seqs = sequences_day(lake, FEATURE, d)
    reversed_ = seqs.with_columns([pl.col(x).list.reverse() for x in FIELDS])
    assert quality.sequence_invariants(f, reversed_, d, "uid").metadata["out_of_order"] > 0
    copied = seqs.with_columns([pl.concat_list(pl.col(x), pl.col(x).list.first()) for x in FIELDS])
    out = quality.sequence_invariants(f, copied, d, "uid")
    assert not out.passed and out.metadata["duplicated"] == seqs.height
    # A feature that does not store its tie-break or dedup key is checked on what it stores.
    slim = seqs.select("uid", "event_time", "movie_id", "date")
    assert quality.sequence_invariants(f, slim, d, "uid").passed
