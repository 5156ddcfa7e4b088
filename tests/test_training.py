"""Training reads: sequences as of a day, and point-in-time sequences that never see a later event."""

from __future__ import annotations

import copy
import random
from collections import Counter, defaultdict
from datetime import datetime, timezone

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from seq_assets.core.compiled import Compiled
from seq_assets.training import point_in_time_sequences, read_sequences
from tests.support.oracle import DAY_MS, DEMO_DAYS, end_of_day, oracle_sequences


@pytest.fixture(scope="module")
def events_by_user(oracle) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = defaultdict(list)
    for e in oracle.all_events():
        out[e["user_id"]].append(e)
    return out


def labels_frame(rows: list[tuple[int, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"user_id": pl.Int64, "request_ts": pl.Int64}, orient="row").with_columns(
        pl.int_range(pl.len(), dtype=pl.Int64).alias("label_id"))


def expected_for(events_by_user, feature: dict, user: int, request_ts: int) -> list[dict]:
    seqs = oracle_sequences(events_by_user.get(user, []), feature["event_types"], request_ts,
                            feature["window_days"], feature["max_length"])
    return seqs.get(user, [])


def random_labels(events_by_user, seed: int, n_random: int = 300, n_exact: int = 150) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    users = sorted(events_by_user)
    every = sorted((e for evs in events_by_user.values() for e in evs), key=lambda e: e["event_id"])
    lo, hi = end_of_day(DEMO_DAYS[0]) - DAY_MS, end_of_day(DEMO_DAYS[-1]) + DAY_MS
    rows = [(rng.choice(users), rng.randrange(lo, hi)) for _ in range(n_random)]
    rows += [(e["user_id"], e["ts"]) for e in rng.sample(every, n_exact)]  # exactly at an event's time
    rows += [(e["user_id"], e["ts"] + 1) for e in rng.sample(every, 50)]  # one ms after it
    rows += [(999_999, hi), (users[0], lo - 30 * DAY_MS), (users[0], hi + 400 * DAY_MS)]
    return rows


def test_point_in_time_matches_the_oracle_for_random_labels(lake, compiled, events_by_user):
    f = compiled.features["engagements_v1"]
    labels = labels_frame(random_labels(events_by_user, seed=11))
    out = point_in_time_sequences("engagements_v1", labels, lake=lake, compiled=compiled)

    assert out.columns == [*labels.columns, *compiled.stored_fields(f)]
    assert out["label_id"].to_list() == labels["label_id"].to_list()  # one row per label, in order
    non_empty = 0
    for row in out.to_dicts():
        want = expected_for(events_by_user, f, row["user_id"], row["request_ts"])
        assert row["event_id"] == [e["event_id"] for e in want], row["label_id"]
        assert row["ts"] == [e["ts"] for e in want]
        assert row["event_type"] == [e["event_type"] for e in want]
        assert all(t < row["request_ts"] for t in row["ts"])  # never the label's own or a later event
        assert all(t >= row["request_ts"] - f["window_days"] * DAY_MS for t in row["ts"])
        assert len(row["event_id"]) <= f["max_length"]
        non_empty += bool(want)
    assert non_empty > 300


def test_a_label_at_an_events_time_does_not_see_that_event(lake, compiled, events_by_user):
    user = max(events_by_user, key=lambda u: len(events_by_user[u]))
    evs = sorted(events_by_user[user], key=lambda e: (e["ts"], e["event_id"]))
    target = evs[len(evs) // 2]
    labels = labels_frame([(user, target["ts"]), (user, target["ts"] + 1)])
    at, after = point_in_time_sequences("engagements_v1", labels, lake=lake, compiled=compiled).to_dicts()
    assert target["event_id"] not in at["event_id"]
    assert target["event_id"] in after["event_id"]
    assert after["event_id"][0] == min(e["event_id"] for e in evs if e["ts"] == target["ts"])


def test_point_in_time_at_end_of_day_equals_the_days_sequences(lake, compiled):
    f = compiled.features["engagements_v1"]
    fields = compiled.stored_fields(f)
    for day in DEMO_DAYS:
        seqs = read_sequences("engagements_v1", day, lake=lake, compiled=compiled)
        assert seqs.height > 50
        labels = seqs.select("user_id", pl.lit(end_of_day(day), dtype=pl.Int64).alias("request_ts"))
        pit = point_in_time_sequences("engagements_v1", labels, lake=lake, compiled=compiled)
        assert_frame_equal(pit.select("user_id", *fields).sort("user_id"), seqs.select("user_id", *fields).sort("user_id"))


def test_point_in_time_for_a_user_without_events_yet_is_empty(lake, compiled, events_by_user):
    first_day_users = set(read_sequences("engagements_v1", DEMO_DAYS[0], lake=lake, compiled=compiled)["user_id"])
    later = sorted(set(events_by_user) - first_day_users)
    assert later
    labels = labels_frame([(u, end_of_day(DEMO_DAYS[0])) for u in later])
    out = point_in_time_sequences("engagements_v1", labels, lake=lake, compiled=compiled)
    assert out.height == len(later)
    assert out["event_id"].list.len().sum() == 0
    assert out.schema["event_id"] == pl.List(pl.String) and out.schema["item_embedding"] == pl.List(pl.List(pl.Float32))


def _small(compiled: Compiled, **changes) -> Compiled:
    defs = copy.deepcopy(compiled.defs)
    defs["feature.engagements_v1"].update(changes)
    return Compiled(defs)


def test_point_in_time_truncates_to_n_and_windows(lake, compiled, events_by_user):
    small = _small(compiled, max_length=3, window_days=1)
    f = small.features["engagements_v1"]
    labels = labels_frame(random_labels(events_by_user, seed=5, n_random=200, n_exact=100))
    out = point_in_time_sequences("engagements_v1", labels, lake=lake, compiled=small, fields=["event_id", "ts"])
    assert out.columns == [*labels.columns, "event_id", "ts"]
    lengths = Counter(out["event_id"].list.len().to_list())
    assert lengths[3] > 0 and lengths[0] > 0 and (lengths[1] + lengths[2]) > 0
    for row in out.to_dicts():
        want = expected_for(events_by_user, f, row["user_id"], row["request_ts"])
        assert row["event_id"] == [e["event_id"] for e in want]


def test_point_in_time_dedups_repeated_events(lake, compiled, events_by_user):
    f = compiled.features["engagements_v1"]
    cols = sorted({"user_id", "event_type", "ts", "event_id", *compiled.stored_fields(f)})
    frames = [lake.read("events", et, columns=cols) for et in f["event_types"]]
    events = pl.concat(frames + frames[:1])  # every click twice
    labels = labels_frame(random_labels(events_by_user, seed=9, n_random=100, n_exact=50))
    given = point_in_time_sequences("engagements_v1", labels, compiled=compiled, events=events)
    read = point_in_time_sequences("engagements_v1", labels, lake=lake, compiled=compiled)
    assert_frame_equal(given, read)
    for row in given.select("user_id", "request_ts", "event_id").to_dicts():
        assert row["event_id"] == [e["event_id"] for e in expected_for(events_by_user, f, row["user_id"], row["request_ts"])]


def test_point_in_time_window_bounds_on_hand_made_events(compiled):
    f = compiled.features["engagements_v1"]
    window = f["window_days"] * DAY_MS
    t = end_of_day(DEMO_DAYS[1])
    cols = {"event_id": pl.String, "user_id": pl.Int64, "ts": pl.Int64, "event_type": pl.String}
    events = pl.DataFrame([
        ("at_request", 1, t, "pin_click"),
        ("after", 1, t + 5, "pin_click"),
        ("at_window_start", 1, t - window, "pin_save"),
        ("before_window", 1, t - window - 1, "pin_save"),
        ("y", 1, t - 1, "pin_click"),
        ("x", 1, t - 1, "pin_closeup"),
        ("hidden", 1, t - 2, "pin_hide"),
    ], schema=cols, orient="row")
    labels = labels_frame([(1, t), (1, t + 1), (1, t - window), (1, t - window + 1), (2, t)])
    out = point_in_time_sequences("engagements_v1", labels, fields=["event_id"], compiled=compiled, events=events)
    assert out["event_id"].to_list() == [
        ["x", "y", "at_window_start"],
        ["at_request", "x", "y"],  # the window has moved past at_window_start
        ["before_window"],
        ["at_window_start", "before_window"],
        [],
    ]


# ---- read_sequences ----------------------------------------------------------------------------


def test_read_sequences_projects_fields_and_filters_users(lake, compiled):
    day = DEMO_DAYS[1]
    full = read_sequences("engagements_v1", day, lake=lake, compiled=compiled)
    assert set(full.columns) == {"user_id", "date", *compiled.stored_fields(compiled.features["engagements_v1"])}
    part = read_sequences("engagements_v1", day, fields=["item_id", "ts"], lake=lake, compiled=compiled)
    assert set(part.columns) == {"user_id", "date", "item_id", "ts"}
    assert_frame_equal(part.sort("user_id"), full.select(part.columns).sort("user_id"))

    users = full["user_id"].sort().to_list()[:3] + [999_999]
    some = read_sequences("engagements_v1", day, users=users, fields=["event_id"], lake=lake, compiled=compiled)
    assert sorted(some["user_id"].to_list()) == users[:3]
    assert set(some.columns) == {"user_id", "date", "event_id"}
    assert set(some["date"]) == {day}
    assert read_sequences("engagements_v1", day, users=[999_999], lake=lake, compiled=compiled).height == 0


def test_read_sequences_as_of_any_form_of_the_day(lake, compiled):
    day = DEMO_DAYS[2]
    base = read_sequences("saves_v1", day, lake=lake, compiled=compiled).sort("user_id")
    assert base.height > 0 and set(base["date"]) == {day}
    for as_of in (day.isoformat(), datetime(2026, 3, 3, 23, 59, tzinfo=timezone.utc), "2026-03-03T10:00:00"):
        assert_frame_equal(read_sequences("saves_v1", as_of, lake=lake, compiled=compiled).sort("user_id"), base)
    assert read_sequences("saves_v1", "2026-02-01", lake=lake, compiled=compiled).height == 0


def test_read_sequences_refuses_unknown_fields(lake, compiled):
    with pytest.raises(ValueError, match="item_popularity"):
        read_sequences("engagements_v1", DEMO_DAYS[0], fields=["item_popularity"], lake=lake, compiled=compiled)


def test_training_reads_default_to_the_configured_lake(demo_env, lake, compiled):
    day = DEMO_DAYS[1]
    explicit = read_sequences("engagements_v1", day, lake=lake, compiled=compiled).sort("user_id")
    by_name = read_sequences("engagements", day).sort("user_id")  # newest version, lake from SEQ_LAKE_URI
    assert_frame_equal(by_name, explicit)
    labels = explicit.select("user_id", pl.lit(end_of_day(day), dtype=pl.Int64).alias("request_ts")).head(20)
    assert_frame_equal(point_in_time_sequences("engagements", labels).select("event_id"),
                       explicit.head(20).select("event_id"))
