"""The whole batch graph, materialized with Dagster over real Delta tables, checked against an oracle.

The oracle (``conftest.Oracle``) recomputes every table from the landing JSONL files in plain Python.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from seq_assets.core.kernel import assemble_sequences
from seq_assets.orchestration.schedules import (
    build_schedules,
    closing_range,
)
from seq_assets.storage.lake import Lake
from tests.support.oracle import (
    DEMO_DAYS,
    EVENT_FILTERS,
    end_of_day,
    materialize_day,
    oracle_sequences,
)
from tests.support.sequences import sequences_day

REPO = Path(__file__).resolve().parents[2]
EVENT_TYPES = tuple(EVENT_FILTERS)
FEATURES = ("engagements_v1", "saves_v1")


def short_reason(reason: str) -> str:
    m = re.match(r"(unparseable JSON|missing field '\w+'|mistyped field '\w+'|record larger than)", reason)
    assert m, f"unexpected dead-letter reason {reason!r}"
    return m.group(1)


# ---- the run itself ----------------------------------------------------------------------------


def test_every_asset_is_materialized_for_each_day(demo_lake):
    expected = {
        ("raw", "user_engagements"), ("dead_letter", "user_engagements"),
        ("enrichments", "item_embedding"), ("enrichments", "item_category"), ("enrichments", "item_popularity"),
        *(("events", et) for et in EVENT_TYPES), *(("sequences", f) for f in FEATURES),
    }
    for day, result in demo_lake.results.items():
        assert result.success
        events = result.get_asset_materialization_events()
        assert {tuple(e.asset_key.path) for e in events} == expected
        assert {e.partition for e in events} == {day.isoformat()}
    for kind, name in expected:
        days = Lake(str(demo_lake.lake)).read(kind, name, columns=["date"])["date"].unique().sort().to_list()
        assert days == list(DEMO_DAYS), (kind, name)


# ---- raw and dead letters ----------------------------------------------------------------------


@pytest.mark.parametrize("day", DEMO_DAYS, ids=str)
def test_raw_rows_are_the_valid_unique_events_of_the_day(lake, oracle, day):
    raw = lake.read("raw", "user_engagements", days=[day])
    expected = oracle.raw(day)
    assert raw.height == len(expected) > 1000
    assert raw["event_id"].n_unique() == raw.height
    assert set(raw["event_id"]) == set(expected)
    assert set(raw["date"]) == {day}
    assert set(raw["origin"]) == {"batch"}
    sample = raw.sort("event_id").head(200).to_dicts()
    for row in sample:
        want = expected[row["event_id"]]
        for f in ("user_id", "action", "item_id", "ts", "surface", "device", "country", "dwell_ms", "is_bot"):
            assert row[f] == want.get(f), (row["event_id"], f)


def test_landing_really_holds_duplicates_and_late_records(oracle):
    """The demo data exercises dedup and the late horizon (else the raw test proves little)."""
    good = [r for r in oracle.records if r.reason is None]
    ids = Counter(r.obj["event_id"] for r in good)
    assert any(n > 1 for n in ids.values())
    assert any(r.arrival > r.event_day for r in good)


@pytest.mark.parametrize("day", DEMO_DAYS, ids=str)
def test_dead_letters_of_the_day_have_reasons(lake, oracle, day):
    dead = lake.read("dead_letter", "user_engagements", days=[day])
    expected = oracle.dead(day)
    assert dead.height == len(expected)
    assert dead["reason"].null_count() == 0
    got = sorted((v, short_reason(r)) for v, r in zip(dead["value"], dead["reason"]))
    assert got == expected


def test_dead_letters_exist_with_several_kinds_of_reason(lake):
    dead = lake.read("dead_letter", "user_engagements")
    assert dead.height >= 5
    kinds = {short_reason(r).split(" '")[0] for r in dead["reason"]}
    assert {"unparseable JSON", "missing field", "mistyped field"} <= kinds


# ---- events ------------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_events_of_each_day_are_the_filtered_raw_rows(lake, oracle, compiled, event_type):
    keep = EVENT_FILTERS[event_type]
    for day in DEMO_DAYS:
        events = lake.read("events", event_type, days=[day])
        expected = {eid for eid, o in oracle.raw(day).items() if keep(o)}
        assert events.height == len(expected) > 0
        assert set(events["event_id"]) == expected
        assert events["event_id"].n_unique() == events.height
        assert set(events["date"]) == {day} and set(events["event_type"]) == {event_type}
        assert set(events["def_version"]) == {compiled.event_types[event_type]["hash"]}
    whole = lake.read("events", event_type)
    assert whole["event_id"].n_unique() == whole.height


def test_lookups_use_the_snapshot_of_the_events_day(lake, demo_lake):
    checked_embeddings = 0
    for day in DEMO_DAYS:
        snap_dir = demo_lake.landing / "enrichments"
        cats = pl.read_parquet(snap_dir / "item_category" / f"date={day}" / "snapshot.parquet")
        embs = pl.read_parquet(snap_dir / "item_embedding" / f"date={day}" / "snapshot.parquet")
        cat_of = dict(zip(cats["item_id"].to_list(), cats["item_category"].to_list()))
        emb_of = dict(zip(embs["item_id"].to_list(), embs["item_embedding"].to_list()))
        for et in EVENT_TYPES:
            events = lake.read("events", et, days=[day])
            for item, cat, vec in events.select("item_id", "item_category", "item_embedding").iter_rows():
                assert cat == cat_of.get(item)
                if item in emb_of:
                    assert vec == list(emb_of[item])  # float32 both sides: exact
                    checked_embeddings += 1
                else:
                    assert vec is None
    assert checked_embeddings > 1000


def test_embeddings_differ_between_days_so_the_day_matters(demo_lake):
    base = demo_lake.landing / "enrichments" / "item_embedding"
    a = pl.read_parquet(base / f"date={DEMO_DAYS[0]}" / "snapshot.parquet").sort("item_id")
    b = pl.read_parquet(base / f"date={DEMO_DAYS[-1]}" / "snapshot.parquet").sort("item_id")
    assert a["item_id"].to_list() == b["item_id"].to_list()
    assert a["item_embedding"].to_list() != b["item_embedding"].to_list()


def test_counter_is_point_in_time(lake, oracle):
    count = oracle.counter_30d()
    nonzero = 0
    for et in EVENT_TYPES:
        for row in lake.read("events", et).select("event_id", "user_id", "item_id", "ts", "user_item_count_30d").to_dicts():
            assert row["user_item_count_30d"] == count(row), row["event_id"]
            nonzero += row["user_item_count_30d"] > 0
    assert nonzero > 50


# ---- sequences ---------------------------------------------------------------------------------


@pytest.mark.parametrize("feature_table", FEATURES)
def test_sequences_match_the_oracle(lake, oracle, compiled, feature_table):
    f = compiled.features[feature_table]
    events = oracle.all_events()
    fields = compiled.stored_fields(f)
    assert "item_popularity" not in fields  # serving-time: joined when served, not stored
    for day in DEMO_DAYS:
        seqs = sequences_day(lake, feature_table, day)
        assert seqs.columns == list(compiled.sequence_schema(f))
        assert set(seqs["date"]) == {day}
        expected = oracle_sequences(events, f["event_types"], end_of_day(day), f["window_days"], f["max_length"])
        assert seqs.height == len(expected) > 50
        assert seqs["user_id"].n_unique() == seqs.height
        for row in seqs.to_dicts():
            want = expected[row["user_id"]]
            assert row["event_id"] == [e["event_id"] for e in want]
            assert row["ts"] == [e["ts"] for e in want]
            assert row["event_type"] == [e["event_type"] for e in want]
            assert row["item_id"] == [e["item_id"] for e in want]
            assert all(len(row[x]) == len(want) for x in fields)
            assert all(e["ts"] < end_of_day(day) for e in want)


def test_sequences_grow_with_the_days_and_hold_ties(lake):
    lengths = [sequences_day(lake, "engagements_v1", d)["event_id"].list.len().sum() for d in DEMO_DAYS]
    assert lengths[0] < lengths[1] < lengths[2]
    seqs = sequences_day(lake, "engagements_v1", DEMO_DAYS[-1])
    ties = seqs.select(pl.col("ts").list.eval(pl.element().is_duplicated().any()).list.first()).to_series().sum()
    assert ties > 0  # equal timestamps exist, so the event_id tie-break is exercised


def _events_frame(events: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(
        [{k: e[k] for k in ("event_id", "user_id", "ts", "event_type", "item_id")} for e in events],
        schema={"event_id": pl.String, "user_id": pl.Int64, "ts": pl.Int64, "event_type": pl.String, "item_id": pl.Int64},
    )


@pytest.mark.parametrize("day", DEMO_DAYS[1:], ids=str)
def test_assemble_sequences_truncates_and_windows(compiled, oracle, day):
    feature = dict(compiled.features["engagements_v1"], max_length=3, window_days=1)
    events = oracle.all_events()
    # Duplicated deliveries and an event type the feature does not read must not count.
    noise = [dict(e, event_type="pin_hide", event_id=e["event_id"] + "-x") for e in events[:300]]
    frame = _events_frame(events + events[:200] + noise).sample(fraction=1.0, shuffle=True, seed=3)
    end = end_of_day(day)
    seqs = assemble_sequences(feature, frame, end, ["event_id", "ts", "item_id"], day)
    expected = oracle_sequences(events, feature["event_types"], end, 1, 3)
    got = {u: list(zip(e, t)) for u, e, t in seqs.select("user_id", "event_id", "ts").iter_rows()}
    assert got == {u: [(e["event_id"], e["ts"]) for e in evs] for u, evs in expected.items()}
    assert max(len(v) for v in got.values()) == 3
    assert any(len(v) < 3 for v in got.values())
    assert all(end - 86_400_000 <= ts < end for v in got.values() for _, ts in v)
    assert set(seqs["date"]) == {day}


def test_assemble_sequences_window_bounds_ties_and_dedup(compiled):
    feature = dict(compiled.features["engagements_v1"], max_length=4, window_days=2)
    day = date(2026, 3, 2)
    end = end_of_day(day)
    start = end - 2 * 86_400_000
    rows = [
        ("at_end", 1, end, "pin_click"),  # the window is [start, end): excluded
        ("at_start", 1, start, "pin_click"),  # included
        ("before_start", 1, start - 1, "pin_save"),  # excluded
        ("b", 1, end - 10, "pin_save"),  # three at one time: event_id ascending
        ("c", 1, end - 10, "pin_click"),
        ("a", 1, end - 10, "pin_closeup"),
        ("a", 1, end - 10, "pin_closeup"),  # a duplicate delivery
        ("other_type", 1, end - 5, "pin_hide"),  # not an event type of the feature
        ("u2", 2, end - 1, "pin_click"),
    ]
    frame = pl.DataFrame(rows, schema={"event_id": pl.String, "user_id": pl.Int64, "ts": pl.Int64,
                                       "event_type": pl.String}, orient="row")
    for shuffled in (frame, frame.reverse(), frame.sample(fraction=1.0, shuffle=True, seed=1)):
        seqs = assemble_sequences(feature, shuffled, end, ["event_id", "ts"], day)
        got = dict(zip(seqs["user_id"].to_list(), seqs["event_id"].to_list()))
        assert got == {1: ["a", "b", "c", "at_start"], 2: ["u2"]}
    narrow = assemble_sequences(dict(feature, max_length=2), frame, end, ["event_id"], day)
    assert narrow["event_id"].to_list() == [["a", "b"], ["u2"]]


# ---- re-running a partition ---------------------------------------------------------------------


def _table_dirs(root: Path) -> list[tuple[str, str]]:
    return sorted((p.parent.name, p.name) for p in root.glob("*/*") if (p / "_delta_log").is_dir())


def _canonical(lake: Lake, kind: str, name: str) -> pl.DataFrame:
    df = lake.read(kind, name).drop("ingested_at", strict=False)
    keys = {"raw": ["event_id"], "events": ["event_id"], "dead_letter": ["date", "value"],
            "enrichments": ["date", "item_id"], "sequences": ["date", "user_id"]}[kind]
    return df.sort(keys).select(sorted(df.columns))


def test_rerunning_a_partition_changes_nothing(demo_lake, tmp_path, monkeypatch):
    copy = tmp_path / "lake"
    shutil.copytree(demo_lake.lake, copy)
    monkeypatch.setenv("SEQ_LAKE_URI", str(copy))
    monkeypatch.setenv("SEQ_LANDING_DIR", str(demo_lake.landing))
    monkeypatch.delenv("SEQ_DEFS_DIR", raising=False)
    before, after = Lake(str(demo_lake.lake)), Lake(str(copy))
    tables = _table_dirs(demo_lake.lake)
    assert len(tables) == 10
    versions = {t: after.table(*t).version() for t in tables}

    materialize_day(DEMO_DAYS[1].isoformat())
    materialize_day(DEMO_DAYS[0].isoformat())  # an older day, after the newer ones exist

    assert _table_dirs(copy) == tables
    for kind, name in tables:
        assert after.table(kind, name).version() > versions[(kind, name)], (kind, name)  # it really ran
        old, new = _canonical(before, kind, name), _canonical(after, kind, name)
        assert new.height == old.height, (kind, name)
        assert_frame_equal(new, old, check_exact=True)


# ---- Dagster: definitions and the schedule -------------------------------------------------------


def test_dagster_definitions_validate(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQ_")}
    env["DAGSTER_HOME"] = str(tmp_path)
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def test_closing_range():
    assert closing_range(date(2026, 3, 5), 3) == ("2026-03-01", "2026-03-04")
    assert closing_range(date(2026, 3, 1), 0) == ("2026-02-28", "2026-02-28")
    assert closing_range(date(2026, 1, 2), 3) == ("2025-12-29", "2026-01-01")


def test_schedule_requests_the_late_horizon_as_one_range(compiled):
    assert compiled.horizon_days() == 3
    (schedule,) = build_schedules(compiled)
    assert schedule.cron_schedule == "30 0 * * *"
    ctx = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 5, 0, 30, tzinfo=timezone.utc))
    data = schedule.evaluate_tick(ctx)
    (request,) = data.run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2026-03-01"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-03-04"
    assert request.run_key == "close-2026-03-04"
