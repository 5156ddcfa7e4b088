"""Executors on small hand-made frames: filters, lookups by the event's day, point-in-time counters."""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timezone

import polars as pl
import pytest

from seq_assets import settings
from seq_assets.core.decode import decode_records
from seq_assets.core.engine import Engine
from seq_assets.storage.lake import Lake

DAY_MS = 86_400_000
D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
T1 = int(datetime(2026, 3, 1, 12, tzinfo=timezone.utc).timestamp() * 1000)  # noon on D1
T2 = T1 + DAY_MS  # noon on D2
EMB_DIM = 32


def record(event_id: str, *, ts: int = T1, user_id: int = 1, action: str = "click", item_id: int = 10,
           dwell_ms: int | None = None, is_bot: bool = False, **extra) -> dict:
    return {"event_id": event_id, "user_id": user_id, "action": action, "item_id": item_id, "ts": ts,
            "surface": "home_feed", "device": "ios", "country": "US", "dwell_ms": dwell_ms, "is_bot": is_bot, **extra}


def decode(compiled, records: list[dict]) -> pl.DataFrame:
    values = pl.Series("value", [json.dumps(r) for r in records], dtype=pl.String)
    decoded = decode_records(compiled.sources["user_engagements"], values)
    assert decoded.dead.is_empty(), decoded.dead
    return decoded.valid


class MemoryContext:
    """An in-memory EnrichmentContext: snapshots by (enrichment, day), history from one raw frame."""

    def __init__(self, snapshots: dict[tuple[str, date], pl.DataFrame] | None = None,
                 history: pl.DataFrame | None = None):
        self.snapshots = snapshots or {}
        self.raw = history
        self.snapshot_calls: list[tuple[str, date]] = []

    def snapshot(self, enrichment: dict, day: date) -> pl.DataFrame | None:
        self.snapshot_calls.append((enrichment["name"], day))
        return self.snapshots.get((enrichment["name"], day))

    def history(self, source: dict, columns: list[str], start_ms: int, end_ms: int, users) -> pl.DataFrame:
        ts = source["time_field"]
        frame = self.raw.filter((pl.col(ts) >= start_ms) & (pl.col(ts) < end_ms))
        if users is not None:
            frame = frame.filter(pl.col(source["user_field"]).is_in(pl.Series(users).implode()))
        return frame.unique(subset=[source["event_id_field"]], keep="first").select(sorted({*columns, "event_id"}))


def emb(v: float) -> list[float]:
    return [v] * EMB_DIM


def snapshots(day_items: dict[date, dict[int, tuple[str, float]]]) -> dict[tuple[str, date], pl.DataFrame]:
    out = {}
    for day, items in day_items.items():
        ids = list(items)
        out[("item_category", day)] = pl.DataFrame(
            {"item_id": ids, "item_category": [items[i][0] for i in ids]},
            schema={"item_id": pl.Int64, "item_category": pl.String},
        )
        out[("item_embedding", day)] = pl.DataFrame(
            {"item_id": ids, "item_embedding": [emb(items[i][1]) for i in ids]},
            schema={"item_id": pl.Int64, "item_embedding": pl.List(pl.Float32)},
        )
    return out


def run_index(compiled, tmp_path, records, ctx=None, history_records=None):
    raw = decode(compiled, records)
    if ctx is None:
        ctx = MemoryContext(snapshots({D1: {}, D2: {}}))
    if ctx.raw is None:
        ctx.raw = decode(compiled, history_records if history_records is not None else records)
    result = Engine(compiled, Lake(str(tmp_path / "lake")), settings.landing()).index("user_engagements", raw, ctx=ctx)
    return result


def ids(df: pl.DataFrame) -> set[str]:
    return set(df.get_column("event_id").to_list())


# ---- filters -----------------------------------------------------------------------------------


def test_filters_keep_only_meaningful_human_actions(compiled, tmp_path):
    records = [
        record("click", action="click"),
        record("save", action="save"),
        record("closeup_1000", action="closeup", dwell_ms=1000),
        record("closeup_5000", action="closeup", dwell_ms=5000),
        record("closeup_999", action="closeup", dwell_ms=999),
        record("closeup_null", action="closeup", dwell_ms=None),
        record("bot_click", action="click", is_bot=True),
        record("bot_save", action="save", is_bot=True),
        record("bot_closeup", action="closeup", dwell_ms=3000, is_bot=True),
        record("impression", action="impression"),
        record("hide", action="hide"),
        record("share", action="share"),
        record("unknown", action="frobnicate"),
        record("click_with_dwell", action="click", dwell_ms=10),
    ]
    result = run_index(compiled, tmp_path, records)
    assert set(result.events) == {"pin_click", "pin_save", "pin_closeup"}
    assert ids(result.events["pin_click"]) == {"click", "click_with_dwell"}
    assert ids(result.events["pin_save"]) == {"save"}
    assert ids(result.events["pin_closeup"]) == {"closeup_1000", "closeup_5000"}
    assert result.rows == 5 and result.days == {D1}


def test_events_have_the_compiled_schema_and_provenance(compiled, tmp_path):
    result = run_index(compiled, tmp_path, [record("a", action="save"), record("b", action="save", ts=T2)])
    saves = result.events["pin_save"]
    assert saves.schema == pl.Schema(compiled.event_schema("pin_save"))
    assert set(saves.get_column("event_type")) == {"pin_save"}
    assert set(saves.get_column("def_version")) == {compiled.event_types["pin_save"]["hash"]}
    assert dict(zip(saves["event_id"], saves["date"])) == {"a": D1, "b": D2}
    assert result.days == {D1, D2}
    assert "is_bot" not in saves.columns and "item_popularity" not in saves.columns  # serving-time


def test_duplicate_deliveries_index_once(compiled, tmp_path):
    records = [record("a"), record("a"), record("b", ts=T1 + 1), record("a")]
    result = run_index(compiled, tmp_path, records)
    clicks = result.events["pin_click"]
    assert sorted(clicks.get_column("event_id").to_list()) == ["a", "b"]


def test_event_types_argument_limits_the_run(compiled, tmp_path):
    raw = decode(compiled, [record("a"), record("b", action="save")])
    ctx = MemoryContext(snapshots({D1: {}}), history=raw)
    result = Engine(compiled, Lake(str(tmp_path / "lake")), settings.landing()).index("user_engagements", raw, ctx=ctx,
                                                                   event_types=["pin_save"])
    assert set(result.events) == {"pin_save"} and ids(result.events["pin_save"]) == {"b"}


# ---- lookups -----------------------------------------------------------------------------------


def test_lookup_joins_the_snapshot_of_the_events_own_day(compiled, tmp_path):
    ctx = MemoryContext(snapshots({
        D1: {10: ("cat_day1", 0.1), 11: ("cat_eleven", 0.5)},
        D2: {10: ("cat_day2", 0.2)},  # item 11 left the catalogue on day 2
    }))
    records = [
        record("d1_item10", ts=T1, item_id=10),
        record("d2_item10", ts=T2, item_id=10),
        record("d1_item11", ts=T1 + 5, item_id=11),
        record("d2_item11", ts=T2 + 5, item_id=11),
        record("d1_missing", ts=T1 + 7, item_id=999),
        record("d1_last_ms", ts=T1 + DAY_MS // 2 - 1, item_id=10),  # 23:59:59.999 on day 1
        record("d2_first_ms", ts=T1 + DAY_MS // 2, item_id=10),  # 00:00:00.000 on day 2
    ]
    clicks = run_index(compiled, tmp_path, records, ctx=ctx).events["pin_click"]
    got = {r["event_id"]: r for r in clicks.to_dicts()}
    assert got["d1_item10"]["item_category"] == "cat_day1"
    assert got["d2_item10"]["item_category"] == "cat_day2"
    assert got["d1_last_ms"]["item_category"] == "cat_day1"
    assert got["d2_first_ms"]["item_category"] == "cat_day2"
    assert got["d1_item11"]["item_category"] == "cat_eleven"
    assert got["d2_item11"]["item_category"] is None and got["d2_item11"]["item_embedding"] is None
    assert got["d1_missing"]["item_category"] is None and got["d1_missing"]["item_embedding"] is None
    assert got["d1_item10"]["item_embedding"] == pytest.approx(emb(0.1))
    assert got["d2_item10"]["item_embedding"] == pytest.approx(emb(0.2))
    assert got["d1_item11"]["item_embedding"] == pytest.approx(emb(0.5))
    assert len(got["d1_item10"]["item_embedding"]) == EMB_DIM
    assert clicks.height == len(records)  # a left join: no event is lost or duplicated
    assert {d for _, d in ctx.snapshot_calls} == {D1, D2}


def test_lookup_without_a_snapshot_leaves_nulls(compiled, tmp_path):
    ctx = MemoryContext({})  # no snapshot at all
    clicks = run_index(compiled, tmp_path, [record("a"), record("b", ts=T2)], ctx=ctx).events["pin_click"]
    assert clicks.height == 2
    assert clicks.get_column("item_category").null_count() == 2
    assert clicks.get_column("item_embedding").null_count() == 2


def test_lookup_with_duplicate_snapshot_keys_does_not_duplicate_events(compiled, tmp_path):
    snaps = snapshots({D1: {10: ("cat_a", 0.1)}})
    snaps[("item_category", D1)] = pl.DataFrame({"item_id": [10, 10], "item_category": ["cat_a", "cat_a"]})
    ctx = MemoryContext(snaps)
    clicks = run_index(compiled, tmp_path, [record("a")], ctx=ctx).events["pin_click"]
    assert clicks.height == 1 and clicks["item_category"][0] == "cat_a"


# ---- the point-in-time counter -----------------------------------------------------------------

W = 30 * DAY_MS


def _count_of(result, event_id: str) -> int:
    for df in result.events.values():
        hit = df.filter(pl.col("event_id") == event_id)
        if hit.height:
            return hit["user_item_count_30d"][0]
    raise KeyError(event_id)


def test_counter_window_is_strictly_before_the_event_and_30_days_back(compiled, tmp_path):
    t = T2
    history = [
        record("exactly_30d", ts=t - W),  # counts: the window is [t - 30d, t)
        record("30d_plus_1ms", ts=t - W - 1),  # does not count
        record("one_ms_before", ts=t - 1),  # counts
        record("closeup_short", ts=t - 5 * DAY_MS, action="closeup", dwell_ms=200),  # counts (counter has no dwell rule)
        record("save_before", ts=t - 2 * DAY_MS, action="save"),  # counts
        record("tie_a", ts=t - 3 * DAY_MS),  # two at one time: both count
        record("tie_b", ts=t - 3 * DAY_MS, action="save"),
        record("same_ts", ts=t, action="save"),  # at the same ts: not counted
        record("after", ts=t + 1),  # later: not counted
        record("bot", ts=t - DAY_MS, is_bot=True),  # bots do not count
        record("impression", ts=t - DAY_MS, action="impression"),  # impressions do not count
        record("hide", ts=t - DAY_MS, action="hide"),
        record("other_item", ts=t - DAY_MS, item_id=11),  # another item
        record("other_user", ts=t - DAY_MS, user_id=2),  # another user
    ]
    probe = record("probe", ts=t)
    result = run_index(compiled, tmp_path, [probe, record("same_ts", ts=t, action="save")],
                       ctx=MemoryContext(snapshots({D2: {}})), history_records=[probe, *history])
    assert _count_of(result, "probe") == 6
    assert _count_of(result, "same_ts") == 6  # neither of two simultaneous events sees the other


def test_counter_counts_nothing_without_history(compiled, tmp_path):
    result = run_index(compiled, tmp_path, [record("first", ts=T1)])
    assert _count_of(result, "first") == 0


def test_counter_matches_an_oracle_on_random_history(compiled, tmp_path):
    rng = random.Random(42)
    actions = ["click", "save", "closeup", "impression", "hide"]
    base = T1 - 40 * DAY_MS
    history = []
    for i in range(1500):
        # Coarse times make exact ties and exact 30-day distances common.
        history.append(record(
            f"h{i:05d}", ts=base + rng.randrange(0, 45 * 4) * (DAY_MS // 4) + rng.choice([0, 0, 1, -1]),
            user_id=rng.randrange(1, 6), item_id=rng.randrange(1, 5), action=rng.choice(actions),
            dwell_ms=rng.choice([None, 500, 1500]), is_bot=rng.random() < 0.1,
        ))
    window = [r for r in history if r["ts"] >= T1 - 2 * DAY_MS]
    result = run_index(compiled, tmp_path, window, ctx=MemoryContext(snapshots({})), history_records=history)

    def oracle(e: dict) -> int:
        return sum(
            1 for h in history
            if h["user_id"] == e["user_id"] and h["item_id"] == e["item_id"] and h["action"] in ("click", "save", "closeup")
            and not h["is_bot"] and e["ts"] - W <= h["ts"] < e["ts"]
        )

    checked = 0
    by_id = {r["event_id"]: r for r in window}
    for df in result.events.values():
        for eid, count in df.select("event_id", "user_item_count_30d").iter_rows():
            assert count == oracle(by_id[eid]), eid
            checked += 1
    assert checked > 100
    assert len({r["ts"] for r in history}) < len(history)  # the data really has ties


# ---- the lake-backed context -------------------------------------------------------------------


def test_lake_context_reads_the_snapshot_valid_on_the_day(compiled, tmp_path):
    from seq_assets.core.engine import LakeContext

    lake = Lake(str(tmp_path / "lake"))
    e = compiled.enrichments["item_category"]
    d3 = date(2026, 3, 3)
    for day, cat in ((d3, "three"), (D1, "one")):  # later days already exist when an earlier one is read
        lake.replace_partitions("enrichments", "item_category",
                                pl.DataFrame({"item_id": [10], "item_category": [cat], "date": [day]}), [day])
    ctx = LakeContext(lake)
    assert ctx.snapshot(e, D1)["item_category"].to_list() == ["one"]  # not the newer 03-03 one
    assert ctx.snapshot(e, D2)["item_category"].to_list() == ["one"]  # no snapshot that day: the newest before
    assert ctx.snapshot(e, d3)["item_category"].to_list() == ["three"]
    assert ctx.snapshot(e, date(2026, 2, 28)) is None
