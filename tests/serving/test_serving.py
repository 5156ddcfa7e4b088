"""The serving contract in-process (``SequenceService``), on a lake built by the real batch path.

1. Consistency: the served sequence of every user equals ``read_sequences`` of the closed day,
   event by event and field by field, both from the closed snapshot and (before the day is closed)
   from the previous snapshot merged with the day's indexed events; n, since, fields, the arrays
   format, unknown users, the serving-time enrichment and every bad request.
2. Freshness: events the stream tail indexes (``KafkaTail.ingest``) are served at once, newest
   first, enriched like the batch would, deduplicated against the snapshot and against the same
   events arriving again through the lake; late events land in their place.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from seq_assets import settings
from seq_assets.serving.service import RequestError, SequenceService
from seq_assets.serving.tail import KafkaTail
from seq_assets.settings import load_compiled
from seq_assets.storage.lake import Lake
from seq_assets.training import read_sequences
from tests.support.serving_helpers import (
    DAY_MS,
    DAYS,
    FEATURES,
    SOURCE,
    as_of_param,
    avoid_midnight,
    close_day,
    copy_lake,
    day_start_ms,
    end_of_day_ms,
    event,
    now_ms,
    open_day,
    records_frame,
    shared_lake,
)

pytestmark = pytest.mark.timeout(180)

CLOSED = DAYS[-1]
AS_OF = as_of_param(CLOSED)  # "2026-03-04": the end of the closed day 2026-03-03
EMB = "item_embedding"
MISSING_ITEM = 10**9  # in no enrichment snapshot


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slake(tmp_path_factory):
    return shared_lake(tmp_path_factory)


@pytest.fixture(scope="module")
def defs():
    return load_compiled()


@pytest.fixture(scope="module")
def svc(slake) -> SequenceService:
    """A service over the shared lake (reads only)."""
    return SequenceService(load_compiled(), Lake(str(slake.lake)))


@pytest.fixture(scope="module")
def closed(slake, defs) -> dict[str, dict[int, dict]]:
    """{feature: {user: row of read_sequences(feature, closed day)}}."""
    lake = Lake(str(slake.lake))
    return {f: {r["user_id"]: r for r in read_sequences(f, CLOSED, lake=lake, compiled=defs).to_dicts()}
            for f in FEATURES}


@pytest.fixture(scope="module")
def popularity(slake) -> dict[int, float]:
    """item -> item_popularity of the newest enrichments/item_popularity snapshot."""
    lake = Lake(str(slake.lake))
    latest = lake.scan("enrichments", "item_popularity").select(pl.col("date").max()).collect().item()
    assert latest == CLOSED
    df = lake.read("enrichments", "item_popularity", days=[latest])
    return dict(zip(df["item_id"].to_list(), df["item_popularity"].to_list()))


@pytest.fixture
def fresh(tmp_path, slake):
    """A service over a copy of the lake, with a stream tail whose ``ingest`` the test calls."""
    lake = copy_lake(slake, tmp_path / "copy")
    service = SequenceService(load_compiled(), Lake(str(lake.lake)))
    tail = KafkaTail(service, "127.0.0.1:9")  # never started: the test hands it records
    service.tail = tail
    avoid_midnight()
    return service, tail, lake


def heavy_users(rows: dict[int, dict], k: int = 3) -> list[int]:
    return sorted(rows, key=lambda u: (-len(rows[u]["event_id"]), u))[:k]


# ---- comparing -------------------------------------------------------------------------------

def plain(v):
    """A served value as plain Python (numpy arrays and scalars -> lists / numbers)."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def assert_events_equal_row(events: list[dict], row: dict, fields: list[str], what) -> None:
    assert len(events) == len(row["event_id"]), (what, len(events), len(row["event_id"]))
    for f in fields:
        got = [plain(e[f]) for e in events]
        assert got == row[f], (what, f)


# ---- 1. consistency with the batch path ------------------------------------------------------

def test_the_snapshot_is_the_latest_closed_day(svc, closed, defs):
    for f in FEATURES:
        store = svc.stores[f]
        assert store.snapshot.day == CLOSED
        assert store.snapshot.users == len(closed[f]) > 50
        assert store.fresh.frame is None  # nothing was indexed after the closed day
    # Serving-time enrichments come from the compiled definitions, not from code.
    assert set(svc.enrichers) == {e["name"] for e in defs.enrichments.values() if e["stage"] == "serving"} == {"item_popularity"}
    assert "item_popularity" not in defs.stored_fields(defs.features["engagements_v1"])


@pytest.mark.parametrize("feature", FEATURES)
def test_served_equals_read_sequences_for_every_user(svc, closed, defs, popularity, feature):
    """Event by event and field by field, item_embedding values and user_item_count_30d included."""
    fields = defs.stored_fields(defs.features[feature])
    rows = closed[feature]
    n_max = defs.features[feature]["max_length"]
    for user, row in rows.items():
        body = svc.get(feature, user, as_of=AS_OF)
        assert (body["feature"], body["user_id"], body["n"]) == (feature, user, n_max)
        events = body["events"]
        assert_events_equal_row(events, row, fields, user)
        assert [list(e) for e in events[:1]] in ([], [list(defs.features[feature]["fields"])])
        # The serving-time enrichment is joined on top, from the newest snapshot.
        assert [e["item_popularity"] for e in events] == [popularity.get(i) for i in row["item_id"]]
        # The same, as fixed-length arrays.
        arr = svc.get(feature, user, as_of=AS_OF, fmt="arrays")
        k = len(row["event_id"])
        assert arr["length"] == k and arr["mask"].tolist() == [1] * k + [0] * (n_max - k)
        for f in fields:
            vals = plain(arr[f])
            assert len(vals) == n_max
            if f == EMB:
                pad = [0.0] * 32
            else:
                pad = "" if isinstance(arr[f], list) else 0  # text fields come as lists, numbers as arrays
            assert vals == [v if v is not None else pad for v in row[f]] + [pad] * (n_max - k), (user, f)
    non_empty = sum(1 for r in rows.values() if r["event_id"])
    assert non_empty == len(rows) > 50


def test_batch_equals_single_requests(svc, closed):
    users = sorted(closed["engagements_v1"])[:20] + [987_654_321]
    batch = svc.get_batch("engagements_v1", users, as_of=AS_OF, n=7, fields="event_id,ts,item_popularity")
    assert batch["feature"] == "engagements_v1"
    assert [r["user_id"] for r in batch["results"]] == users
    for r in batch["results"]:
        assert r == svc.get("engagements_v1", r["user_id"], as_of=AS_OF, n=7, fields="event_id,ts,item_popularity")
    assert batch["results"][-1]["events"] == []


def test_served_before_the_close_equals_read_sequences_after_it(tmp_path, slake, closed, defs):
    """Snapshot of day 2 + day 3's indexed events (lake poll) == the closed day 3; then the close swaps in."""
    lake = copy_lake(slake, tmp_path / "open")
    open_day(lake.lake, CLOSED)
    service = SequenceService(load_compiled(), Lake(str(lake.lake)))
    prev = DAYS[-2]
    for f in FEATURES:
        store = service.stores[f]
        assert store.snapshot.day == prev
        assert store.fresh.frame is not None and store.fresh.frame.height > 100
        assert (store.fresh.frame["ts"] // DAY_MS).unique().to_list() == [day_start_ms(CLOSED) // DAY_MS]
    feats = service.features()
    assert [f["completeness"]["snapshot_day"] for f in feats] == [prev.isoformat()] * 2
    assert all(f["completeness"]["fresh_events"] > 0 for f in feats)

    def check_all():
        for f in FEATURES:
            fields = defs.stored_fields(defs.features[f])
            for user, row in closed[f].items():
                assert_events_equal_row(service.get(f, user, as_of=AS_OF)["events"], row, fields, (f, user))

    check_all()
    # The backfill closes day 3: the next refresh serves the new snapshot and forgets what it holds.
    close_day(lake.lake, CLOSED)
    service.refresh()
    for f in FEATURES:
        assert service.stores[f].snapshot.day == CLOSED
        frame = service.stores[f].fresh.frame
        assert frame is None or frame.height == 0
    check_all()


def test_n_keeps_the_newest(svc, closed):
    rows = closed["engagements_v1"]
    user = heavy_users(rows, 1)[0]
    full = rows[user]
    assert len(full["event_id"]) > 100
    for n in (1, 5, 100):
        got = svc.get("engagements_v1", user, as_of=AS_OF, n=n, fields="event_id,ts")["events"]
        assert [e["event_id"] for e in got] == full["event_id"][:n]
        assert [e["ts"] for e in got] == sorted(full["ts"], reverse=True)[:n]
    got = svc.get("engagements_v1", user, as_of=AS_OF, n="3", fmt="arrays", fields="event_id")
    assert got["event_id"] == full["event_id"][:3] and got["mask"].tolist() == [1, 1, 1] and got["length"] == 3


def test_since_and_as_of_bound_the_time_range(svc, closed):
    rows = closed["engagements_v1"]
    user = heavy_users(rows, 1)[0]
    row = rows[user]
    by_ts = list(zip(row["event_id"], row["ts"]))

    def ids(**kw):
        return [e["event_id"] for e in svc.get("engagements_v1", user, fields="event_id", **kw)["events"]]

    start3 = day_start_ms(CLOSED)
    want = [e for e, t in by_ts if t >= start3]
    assert 0 < len(want) < len(by_ts)
    assert ids(as_of=AS_OF, since=CLOSED.isoformat()) == want
    assert ids(as_of=AS_OF, since="1d") == want  # a duration counts back from as_of
    assert ids(as_of=AS_OF, since="24h") == want
    assert ids(as_of=AS_OF, since=str(start3)) == want  # epoch ms
    assert ids(as_of=AS_OF, since=f"{CLOSED.isoformat()}T00:00:00Z") == want
    mid = start3 + 12 * 3_600_000
    assert ids(as_of=AS_OF, since=f"{CLOSED.isoformat()}T12:00:00+00:00") == [e for e, t in by_ts if t >= mid]
    # as_of is exclusive and cuts the closed snapshot too.
    assert ids(as_of=CLOSED.isoformat()) == [e for e, t in by_ts if t < start3]
    assert ids(as_of=str(by_ts[0][1])) == [e for e, t in by_ts if t < by_ts[0][1]]
    # Without as_of the window ends now: the 90-day window has moved past March, the 365-day one has not.
    assert ids() == []
    saves = closed["saves_v1"][heavy_users(closed["saves_v1"], 1)[0]]
    assert [e["event_id"] for e in svc.get("saves_v1", saves["user_id"], fields="event_id")["events"]] == saves["event_id"]


def test_fields_project_in_the_order_asked(svc, closed, popularity):
    rows = closed["saves_v1"]
    user = heavy_users(rows, 1)[0]
    got = svc.get("saves_v1", user, as_of=AS_OF, fields=" item_popularity, ts ,item_id")["events"]
    assert got and all(list(e) == ["item_popularity", "ts", "item_id"] for e in got)
    assert [e["ts"] for e in got] == rows[user]["ts"]
    assert [e["item_popularity"] for e in got] == [popularity[i] for i in rows[user]["item_id"]]
    arr = svc.get("saves_v1", user, as_of=AS_OF, fields=["item_id"], fmt="arrays")
    assert set(arr) == {"feature", "user_id", "n", "length", "mask", "item_id"}


def test_arrays_pad_to_n_with_a_mask(svc, closed):
    rows = closed["engagements_v1"]
    # A user with a null embedding and a null category (items missing from those snapshots).
    user = next(u for u in sorted(rows) if None in rows[u]["item_category"] and None in rows[u][EMB])
    row = rows[user]
    k = len(row["event_id"])
    n = min(500, k + 7)
    arr = svc.get("engagements_v1", user, as_of=AS_OF, n=n, fmt="arrays")
    assert arr["length"] == k and arr["mask"].dtype == np.int8
    assert arr["mask"].tolist() == [1] * k + [0] * (n - k)
    assert arr["event_id"] == row["event_id"] + [""] * (n - k)
    assert arr["item_category"] == [c if c is not None else "" for c in row["item_category"]] + [""] * (n - k)
    assert arr["ts"].tolist() == row["ts"] + [0] * (n - k)
    assert arr["item_id"].tolist() == row["item_id"] + [0] * (n - k)
    assert arr["user_item_count_30d"].tolist() == row["user_item_count_30d"] + [0] * (n - k)
    assert arr[EMB].shape == (n, 32) and arr[EMB].dtype == np.float32
    assert not arr[EMB][k:].any()
    for i, v in enumerate(row[EMB]):
        assert arr[EMB][i].tolist() == (v if v is not None else [0.0] * 32)
    assert arr["item_popularity"].shape == (n,) and not arr["item_popularity"][k:].any()


def test_a_user_without_events_gets_an_empty_sequence(svc, defs):
    for user in (987_654_321, 0, -5):
        for f in FEATURES:
            assert svc.get(f, user, as_of=AS_OF)["events"] == []
            assert svc.get(f, user)["events"] == []
        arr = svc.get("engagements_v1", user, n=4, fmt="arrays")
        assert arr["length"] == 0 and arr["mask"].tolist() == [0, 0, 0, 0]
        assert arr["event_id"] == [""] * 4 and arr["ts"].tolist() == [0] * 4
        assert arr[EMB].shape == (4, 32) and arr["item_popularity"].tolist() == [0.0] * 4


def test_a_feature_name_resolves_to_its_newest_version(svc):
    assert svc.get("engagements", 1, as_of=AS_OF, n=1)["feature"] == "engagements_v1"
    assert svc.get("saves", 1, as_of=AS_OF, n=1)["feature"] == "saves_v1"


@pytest.mark.parametrize("feature, params, status, words", [
    ("clicks_v9", {}, 404, ["unknown feature", "clicks_v9"]),
    ("engagements_v1", {"n": 0}, 400, ["n=0", "out of range", "500"]),
    ("engagements_v1", {"n": 501}, 400, ["n=501", "out of range", "500"]),
    ("saves_v1", {"n": 101}, 400, ["n=101", "100"]),
    ("engagements_v1", {"n": "ten"}, 400, ["n must be", "'ten'"]),
    ("engagements_v1", {"n": 11, "max_n": 10}, 400, ["n=11", "your limit is 10"]),
    ("engagements_v1", {"fields": "ts,colour"}, 400, ["unknown field", "colour"]),
    ("engagements_v1", {"fields": ["user_id"]}, 400, ["unknown field", "user_id"]),
    ("engagements_v1", {"since": "last tuesday"}, 400, ["bad since", "last tuesday"]),
    ("engagements_v1", {"since": "7 fortnights"}, 400, ["bad since"]),
    ("engagements_v1", {"as_of": "2026-13-45"}, 400, ["bad as_of", "2026-13-45"]),
    ("engagements_v1", {"fmt": "csv"}, 400, ["unknown format", "csv"]),
])
def test_bad_requests_raise_request_error(svc, feature, params, status, words):
    with pytest.raises(RequestError) as ei:
        svc.get(feature, 1, **params)
    assert ei.value.status == status
    for w in words:
        assert w in ei.value.message, ei.value.message


def test_n_at_the_limits_is_accepted(svc):
    assert svc.get("engagements_v1", 1, n=500, as_of=AS_OF)["n"] == 500
    assert svc.get("engagements_v1", 1, n=1, as_of=AS_OF)["n"] == 1
    assert svc.get("engagements_v1", 1, n=10, max_n=10)["n"] == 10
    assert svc.get("saves_v1", 1, n=100)["n"] == 100
    assert svc.get("saves_v1", 1, max_n=7)["n"] == 7  # no n: the tenant's limit when below N


# ---- 2. freshness: the stream tail and the lake poll -----------------------------------------

def _events_of(service, feature, user, **kw):
    return service.get(feature, user, **kw)["events"]


def _raw_count_30d(lake: Lake, user: int, item: int, ts: int) -> int:
    """The counter recomputed from raw/ with polars: prior click/save/closeup of the user on the item."""
    raw = lake.read("raw", SOURCE)
    return raw.filter((pl.col("user_id") == user) & (pl.col("item_id") == item)
                      & pl.col("action").is_in(["click", "save", "closeup"]) & ~pl.col("is_bot")
                      & (pl.col("ts") >= ts - 30 * DAY_MS) & (pl.col("ts") < ts)
                      ).select(pl.col("event_id").n_unique()).item()


def _snapshot_value(lake: Lake, name: str, day, item: int):
    df = lake.read("enrichments", name, days=[day])
    hit = df.filter(pl.col("item_id") == item)
    return hit[name].to_list()[0] if hit.height else None


def test_tail_events_are_served_at_once_newest_first_and_enriched(fresh, closed, popularity):
    service, tail, lake = fresh
    rows = closed["saves_v1"]
    user = heavy_users(rows, 1)[0]
    item = rows[user]["item_id"][0]
    assert popularity.get(item) is not None
    t = now_ms()
    s = 1000
    evs = [
        event("f-click", user, "click", item, t - 40 * s),
        event("f-closeup-short", user, "closeup", item, t - 35 * s, dwell=500),  # not an event type, but counted
        event("f-bot", user, "click", item, t - 32 * s, bot=True),  # a bot: neither
        event("f-save", user, "save", item, t - 30 * s, surface="search", device="web", country="DE"),
        event("f-impression", user, "impression", item, t - 25 * s),
        event("f-tie-b", user, "closeup", item, t - 20 * s, dwell=2500),
        event("f-tie-a", user, "click", item, t - 20 * s),
        event("f-closeup", user, "closeup", item, t - 10 * s, dwell=1200),
    ]
    assert tail.ingest(SOURCE, records_frame(evs)) > 0

    got = _events_of(service, "engagements_v1", user)
    # Newest first, equal times by event id; the March history is outside the 90-day window now.
    assert [e["event_id"] for e in got] == ["f-closeup", "f-tie-a", "f-tie-b", "f-save", "f-click"]
    assert [e["event_type"] for e in got] == ["pin_closeup", "pin_click", "pin_closeup", "pin_save", "pin_click"]
    assert [e["user_item_count_30d"] for e in got] == [5, 3, 3, 2, 0]
    save = got[3]
    assert (save["surface"], save["device"], save["country"], save["item_id"]) == ("search", "web", "DE", item)
    lk = Lake(str(lake.lake))
    emb = _snapshot_value(lk, EMB, CLOSED, item)  # the newest snapshot on or before today
    cat = _snapshot_value(lk, "item_category", CLOSED, item)
    for e in got:
        assert plain(e[EMB]) == emb and e["item_category"] == cat
        assert e["item_popularity"] == popularity[item]
    # The 365-day feature merges the fresh save on top of the snapshot.
    saves = _events_of(service, "saves_v1", user, fields="event_id")
    assert [e["event_id"] for e in saves] == ["f-save", *rows[user]["event_id"]][:100]
    # With as_of at the closed day, nothing fresh shows.
    assert [e["event_id"] for e in _events_of(service, "saves_v1", user, as_of=AS_OF, fields="event_id")] == rows[user]["event_id"]
    # since counts back from now (5 s of slack for a slow machine).
    assert [e["event_id"] for e in _events_of(service, "engagements_v1", user, since="35s", fields="event_id")] \
        == ["f-closeup", "f-tie-a", "f-tie-b", "f-save"]
    lag = service.freshness()[SOURCE]
    assert lag is not None and 0 <= lag < 60
    feats = {f["feature"]: f for f in service.features()}
    assert feats["engagements_v1"]["completeness"]["fresh_events"] == 5
    assert feats["saves_v1"]["completeness"]["fresh_events"] == 1
    assert feats["engagements_v1"]["freshness"]["lag_seconds"] is not None


def test_tail_and_lake_copies_of_an_event_are_served_once(fresh, defs):
    """The stream path writes the same records to the lake; the next refresh polls them: no doubles."""
    from seq_assets.core.engine import Engine
    from seq_assets.kafka.microbatch import index_records

    service, tail, lake = fresh
    t = now_ms()
    user = 4242  # a user the history has never seen
    evs = [event(f"dup-{i}", user, ("click", "save", "closeup")[i % 3], 100 + i % 4, t - 10_000 + i * 500, dwell=1500)
           for i in range(12)]
    frame = records_frame(evs)
    assert tail.ingest(SOURCE, frame) == 12 + 4  # 12 engagements, 4 of them saves (in both features)
    before = {f: service.get(f, user) for f in FEATURES}
    assert [e["event_id"] for e in before["engagements_v1"]["events"]] == [f"dup-{i}" for i in reversed(range(12))]

    assert tail.ingest(SOURCE, frame) == 0  # a re-delivery on the topic adds nothing
    index_records(Engine(defs, Lake(str(lake.lake)), settings.landing()), SOURCE, frame, batch_id="serving-test@0:0-12")
    service.refresh()  # polls events/ and finds the stream path's copies
    for f in FEATURES:
        assert canon(service.get(f, user)) == canon(before[f])
        assert service.stores[f].fresh.frame.height == len(before[f]["events"])
    # A server without a tail finds the same events through the lake alone.
    lake_only = SequenceService(load_compiled(), Lake(str(lake.lake)))
    for f in FEATURES:
        assert lake_only.stores[f].fresh.frame.height == len(before[f]["events"])
        assert canon(lake_only.get(f, user)) == canon(before[f])

    # What the stream path wrote to the lake is what the tail served, field by field.
    lk = Lake(str(lake.lake))
    fields = defs.stored_fields(defs.features["engagements_v1"])
    written = pl.concat([lk.read("events", et).filter(pl.col("user_id") == user).select(fields)
                         for et in ("pin_click", "pin_save", "pin_closeup")])
    by_id = {r["event_id"]: r for r in written.to_dicts()}
    assert set(by_id) == {e["event_id"] for e in before["engagements_v1"]["events"]}
    for e in before["engagements_v1"]["events"]:
        for fld in fields:
            assert plain(e[fld]) == by_id[e["event_id"]][fld], (e["event_id"], fld)


def canon(body: dict) -> dict:
    """A served body as plain Python, comparable with ==."""
    return {k: ([{f: plain(v) for f, v in e.items()} for e in val] if k == "events" else plain(val))
            for k, val in body.items()}


def test_late_events_land_in_their_place(fresh, closed):
    service, tail, lake = fresh
    lk = Lake(str(lake.lake))
    rows = closed["saves_v1"]
    user = heavy_users(rows, 1)[0]
    row = rows[user]
    # An item the user engaged with on day 1, so the late event's counter has history to count.
    raw = lk.read("raw", SOURCE).filter((pl.col("user_id") == user) & pl.col("action").is_in(["click", "save", "closeup"])
                                       & ~pl.col("is_bot")).sort("ts")
    item = raw["item_id"][0]
    late_day = DAYS[1]
    ts = day_start_ms(late_day) + 12 * 3_600_000 + 1
    late = event("late-save", user, "save", item, ts)
    redelivered = {k: raw.row(0, named=True)[k] for k in ("event_id", "user_id", "action", "item_id", "ts", "surface",
                                                          "device", "country", "dwell_ms", "is_bot")}
    assert tail.ingest(SOURCE, records_frame([late, redelivered])) >= 2  # the late save is in both features

    want = sorted([*zip(row["ts"], row["event_id"]), (ts, "late-save")], key=lambda p: (-p[0], p[1]))
    for kw in ({}, {"as_of": AS_OF}):
        got = _events_of(service, "saves_v1", user, fields="event_id", **kw)
        assert [e["event_id"] for e in got] == [e for _, e in want][:100]
    eng = closed["engagements_v1"][user]
    want = sorted([*zip(eng["ts"], eng["event_id"]), (ts, "late-save")], key=lambda p: (-p[0], p[1]))
    got = _events_of(service, "engagements_v1", user, as_of=AS_OF)
    assert [e["event_id"] for e in got] == [e for _, e in want][:500]
    assert len({e["event_id"] for e in got}) == len(got)  # the redelivered event is there once
    # Everything but the late event is what the batch closed, values included (the tail's copy of
    # the redelivered event was enriched exactly like the batch's).
    others = [e for e in got if e["event_id"] != "late-save"]
    assert_events_equal_row(others, eng, [f for f in eng if f not in ("user_id", "date")], user)
    mine = next(e for e in got if e["event_id"] == "late-save")
    assert mine["user_item_count_30d"] == _raw_count_30d(lk, user, item, ts) > 0
    assert plain(mine[EMB]) == _snapshot_value(lk, EMB, late_day, item)  # the snapshot of its own day
    # A one-millisecond range around it finds it alone.
    assert [e["event_id"] for e in _events_of(service, "saves_v1", user, as_of=str(ts + 1),
                                               since=str(ts), fields="event_id")] == ["late-save"]
    assert day_start_ms(late_day) < ts < end_of_day_ms(late_day) <= day_start_ms(CLOSED)


def test_fresh_events_of_unknown_items_serve_nulls(fresh, closed):
    """An item missing from every snapshot: null enrichments in json, zeros in arrays, still merged."""
    service, tail, _ = fresh
    rows = closed["saves_v1"]
    user = heavy_users(rows, 1)[0]
    t = now_ms()
    assert tail.ingest(SOURCE, records_frame([event("nothing-known", user, "save", MISSING_ITEM, t - 100)])) == 2
    saves = _events_of(service, "saves_v1", user)
    assert saves[0]["event_id"] == "nothing-known"
    assert saves[0][EMB] is None and saves[0]["item_category"] is None and saves[0]["item_popularity"] is None
    assert [e["event_id"] for e in saves[1:]] == rows[user]["event_id"][:99]
    arr = service.get("engagements_v1", user, n=3, fmt="arrays")
    assert arr["length"] == 1 and arr["mask"].tolist() == [1, 0, 0]
    assert arr[EMB].shape == (3, 32) and not arr[EMB].any()
    assert arr["item_popularity"].tolist() == [0.0, 0.0, 0.0] and arr["item_category"] == ["", "", ""]
    arr = service.get("saves_v1", user, n=3, fmt="arrays", fields=[EMB, "event_id"])
    assert arr[EMB].shape == (3, 32) and arr["event_id"][0] == "nothing-known"
    assert arr[EMB][1].tolist() == (rows[user][EMB][0] or [0.0] * 32)


def test_late_events_indexed_into_a_closed_day_are_served_from_the_lake(tmp_path, slake, closed, defs):
    """Without a tail: the stream path writes a late event into a day the snapshot already covers."""
    from seq_assets.core.engine import Engine
    from seq_assets.kafka.microbatch import index_records

    lake = copy_lake(slake, tmp_path / "late")
    lk = Lake(str(lake.lake))
    service = SequenceService(load_compiled(), lk)
    rows = closed["saves_v1"]
    user = heavy_users(rows, 2)[1]
    ts = day_start_ms(DAYS[1]) + 6 * 3_600_000 + 7
    late = event("lake-late", user, "save", rows[user]["item_id"][-1], ts)
    index_records(Engine(defs, lk, settings.landing()), SOURCE, records_frame([late]), batch_id="serving-late@0:0-1")
    assert lk.read("events", "pin_save").filter(pl.col("event_id") == "lake-late").height == 1

    def check(svc):
        for f in FEATURES:
            row = closed[f][user]
            want = sorted([*zip(row["ts"], row["event_id"]), (ts, "lake-late")], key=lambda p: (-p[0], p[1]))
            got = _events_of(svc, f, user, as_of=AS_OF, fields="event_id")
            assert [e["event_id"] for e in got] == [e for _, e in want][: defs.features[f]["max_length"]], f

    service.refresh()
    check(service)  # the running server, at its next refresh
    check(SequenceService(load_compiled(), lk))  # and a server started now
