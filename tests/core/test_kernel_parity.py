"""Every runtime builds the same sequences: the kernel's rules, run five ways on random histories.

The runtimes: the batch build (``assemble_sequences``), the day-to-day extension
(``extend_sequences``, chained from the first day), the serving request path (fetch -> filter ->
size over a ``FeatureStore``, as ``SequenceService.run`` calls it) with every event fresh, the same
with the day before's closed snapshot and the events indexed after it (what the stream tail and the
``events/`` poll feed the store), and point-in-time training reads with labels at the as-of end.

The histories hold equal timestamps, copies of an event id with another time and payload (in one
day, as an event id lives in one day), exact re-deliveries, events exactly at the window's start
and end, more than N events per user, and an event type no feature reads.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from seq_assets.core.compiled import Compiled, compile_definitions
from seq_assets.core.kernel import (
    USER,
    assemble_sequences,
    extend_sequences,
    extendable,
    sequence_rows,
    window_slice,
)
from seq_assets.serving import filter as filter_stage
from seq_assets.serving import size
from seq_assets.serving.fetch import FeatureStore
from seq_assets.storage.lake import Lake
from seq_assets.training import point_in_time_sequences
from signal_defs.model import (
    EventType,
    Ordering,
    Registry,
    SequenceFeature,
    Source,
    col,
)
from tests.support.oracle import DAY_MS, end_of_day

DAYS = [date(2026, 3, 1) + timedelta(days=i) for i in range(5)]
AS_OF = DAYS[3]  # sequences as of the end of day 4; day 5 is after the end
END = end_of_day(AS_OF)
USERS = list(range(1, 8))  # user 7 has no events
SEEDS = [1, 2, 3, 4, 5]
KINDS = ["click", "save", "hide"]  # one event type each; no feature reads "hide"


def _source(name: str, event_id: str, time: str, payload: dict[str, str]) -> list:
    """A source whose events carry ``payload`` and one event type per kind (the last is unread)."""
    schema = {event_id: "string", USER: "int64", time: "int64", "kind": "string", **payload}
    src = Source(name=name, topic=name, batch_location=name, schema=schema, required=tuple(schema),
                 event_id_field=event_id, time_field=time)
    fields = (event_id, USER, time, *payload)
    return [src, *(EventType(name=f"{name}_{k}", source=name, filter=col("kind") == k, fields=fields)
                   for k in KINDS)]


def _feature(name: str, source: str, fields: tuple[str, ...], **settings) -> SequenceFeature:
    return SequenceFeature(name=name, version=1, event_types=(f"{source}_click", f"{source}_save"),
                           fields=fields, owner="parity", **settings)


@pytest.fixture(scope="module")
def compiled() -> Compiled:
    posts = ("post_id", "posted_at", "event_type", "topic", "lang", "rank")
    registry = Registry().add(
        *_source("acts", "event_id", "ts", {"item_id": "int64", "surface": "string"}),
        *_source("posts", "post_id", "posted_at", {"topic": "string", "lang": "string", "rank": "int64"}),
        # The demo's rules: newest first by ts, event_id breaks ties and is the dedup key.
        _feature("acts", "acts", ("event_id", "ts", "event_type", "item_id", "surface"), max_length=50, window_days=3),
        # Other rules: another time column, oldest or newest first, ties by rank, a two-field dedup key.
        *(_feature(f"posts_{d}", "posts", posts, max_length=4, window_days=2, dedup_key=("topic", "lang"),
                   ordering=Ordering(by="posted_at", descending=d == "desc", tie_break="rank"))
          for d in ("asc", "desc")),
    )
    return Compiled(compile_definitions(registry))


def _history(seed: int, event_id: str, time: str, payload) -> pl.DataFrame:
    """Random indexed events of every day, with ``date`` the day of their time."""
    rng = random.Random(seed)
    rows = []
    for d in DAYS:
        start = end_of_day(d) - DAY_MS
        for i in range(120):
            at = start + rng.choice([0, 0, 5, 5, 60_000, DAY_MS - 1, rng.randrange(DAY_MS)])  # ties on purpose
            row = {event_id: f"{d.isoformat()}-{i:03d}", USER: rng.choice([1, 1, 1, 1, 2, 2, 3, 4, 5, 6]), time: at,
                   "event_type": rng.choice(KINDS), **payload(rng)}
            rows.append(row)
            if rng.random() < 0.1:  # the same event id again, at another time of the day, other payload
                rows.append(dict(row, **payload(rng), **{time: start + rng.randrange(DAY_MS), "event_type": rng.choice(KINDS)}))
            if rng.random() < 0.1:  # an exact re-delivery
                rows.append(dict(row))
    rng.shuffle(rows)
    return pl.DataFrame(rows).with_columns(pl.col(time).cast(pl.Int64), pl.col(USER).cast(pl.Int64))


def _acts(seed: int) -> pl.DataFrame:
    events = _history(seed, "event_id", "ts", lambda r: {"item_id": r.randrange(30), "surface": r.choice(["home", "search"])})
    return _typed(events, "acts", "ts")


def _posts(seed: int) -> pl.DataFrame:
    events = _history(seed, "post_id", "posted_at", lambda r: {"topic": r.choice("abcd"), "lang": r.choice("xy")})
    # Unique ranks break every tie on time, so the order of two events is always defined.
    ranks = list(range(events.height))
    random.Random(seed).shuffle(ranks)
    events = events.with_columns(pl.Series("rank", ranks, dtype=pl.Int64))
    return _typed(events, "posts", "posted_at")


def _typed(events: pl.DataFrame, source: str, time: str) -> pl.DataFrame:
    day = (pl.col(time) // DAY_MS).cast(pl.Int32).cast(pl.Date)
    return events.with_columns(pl.concat_str(pl.lit(source + "_"), "event_type").alias("event_type"), day.alias("date"))


# ---- the runtimes ------------------------------------------------------------------------------


def _by_user(frame: pl.DataFrame, fields: list[str]) -> dict[int, dict[str, list]]:
    return {r[USER]: {f: r[f] for f in fields} for r in frame.iter_rows(named=True) if r[fields[0]]}


def batch(feature: dict, events: pl.DataFrame, fields: list[str]) -> dict:
    return _by_user(assemble_sequences(feature, events, END, fields, AS_OF), fields)


def extension(feature: dict, events: pl.DataFrame, fields: list[str]) -> dict:
    seqs = assemble_sequences(feature, events, end_of_day(DAYS[0]), fields, DAYS[0])
    for d in DAYS[1:DAYS.index(AS_OF) + 1]:
        seqs = extend_sequences(feature, seqs, events.filter(pl.col("date") == d), end_of_day(d), fields, d)
    return _by_user(seqs, fields)


def serving(store: FeatureStore, fresh: pl.DataFrame) -> dict:
    """What the service serves each user as of ``END``: fetch -> filter -> size."""
    store.add_fresh(fresh)
    f = store.feature
    start = filter_stage.window_start(f, END, None)
    out = {}
    for user in USERS:
        events = size.apply(filter_stage.apply(*store.fetch(user), f, start, END), f["max_length"])
        if len(events):
            out[user] = {c: events.cols[c].tolist() for c in store.fields}
    return out


def point_in_time(compiled: Compiled, table: str, events: pl.DataFrame, fields: list[str]) -> dict:
    labels = pl.DataFrame({USER: USERS, "request_ts": [END] * len(USERS)}, schema={USER: pl.Int64, "request_ts": pl.Int64})
    return _by_user(point_in_time_sequences(table, labels, fields=fields, compiled=compiled, events=events), fields)


def _snapshot_lake(tmp_path, compiled: Compiled, table: str, events: pl.DataFrame, day: date) -> Lake:
    """A lake holding the feature's closed sequences of ``day``, as the batch path writes them."""
    feature, schema = compiled.features[table], compiled.sequence_schema(compiled.features[table])
    seqs = assemble_sequences(feature, events, end_of_day(day), compiled.stored_fields(feature), day)
    lake = Lake(str(tmp_path / "lake"))
    lake.replace_partitions("sequences", table, seqs.select([pl.col(c).cast(t) for c, t in schema.items()]), [day])
    return lake


# ---- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_every_runtime_builds_the_same_sequences(tmp_path, compiled, seed):
    table = "acts_v1"
    feature, fields = compiled.features[table], compiled.stored_fields(compiled.features[table])
    assert extendable(feature, fields, "event_id", "ts")
    events = _acts(seed)
    want = batch(feature, events, fields)

    closed = DAYS[DAYS.index(AS_OF) - 1]
    tail = FeatureStore(compiled, table, _snapshot_lake(tmp_path, compiled, table, events, closed))
    tail.load_snapshot(closed)
    assert tail.snapshot.users > 0
    got = {
        "extension": extension(feature, events, fields),
        "serving, every event fresh": serving(FeatureStore(compiled, table, None), events),
        "serving, snapshot and the events after it": serving(tail, events.filter(pl.col("date") > closed)),
        "point in time": point_in_time(compiled, table, events, fields),
    }
    for runtime, seqs in got.items():
        assert seqs == want, runtime

    # The cases the rules decide really occur.
    start = END - feature["window_days"] * DAY_MS
    kept = [t for s in want.values() for t in s["ts"]]
    assert start in kept and END not in kept and END in events["ts"].to_list()
    assert max(len(s["ts"]) for s in want.values()) == feature["max_length"]
    in_window = events.filter(pl.col("ts").is_between(start, END, closed="left")
                              & pl.col("event_type").is_in(feature["event_types"]))
    assert in_window.group_by(USER).len()["len"].max() > feature["max_length"]
    copies = in_window.group_by("event_id").agg(pl.col("ts").n_unique().alias("times"), pl.len())
    assert copies.filter(pl.col("times") > 1).height and copies.filter((pl.col("times") == 1) & (pl.col("len") > 1)).height
    assert any(len(set(s["ts"])) < len(s["ts"]) for s in want.values())  # equal times, ordered by event id


@pytest.mark.parametrize("seed", SEEDS[:3])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_other_rules_build_the_same_sequences(compiled, seed, direction):
    """Another ordering column, both directions, ties by rank, copies keyed on (topic, lang).

    Not extendable (the dedup key does not hold the event id, and oldest first cannot grow from the
    day before), and a closed snapshot cut to N cannot be merged with fresh events under such a key;
    batch, serving and point-in-time reads can. A point-in-time read drops copies once over the
    events it reads, keeping the first in sequence order, so it reads from the edge that order meets
    first: from the window's start when oldest first, up to the label when newest first.
    """
    table = f"posts_{direction}_v1"
    feature, fields = compiled.features[table], compiled.stored_fields(compiled.features[table])
    assert not extendable(feature, fields, "post_id", "posted_at")
    events = _posts(seed)
    want = batch(feature, events, fields)
    start = END - feature["window_days"] * DAY_MS
    read = events.filter(pl.col("posted_at") >= start) if direction == "asc" else events.filter(pl.col("posted_at") < END)
    assert serving(FeatureStore(compiled, table, None), events) == want
    assert point_in_time(compiled, table, read, fields) == want

    for s in want.values():
        pairs = list(zip(s["posted_at"], s["rank"]))
        assert pairs == sorted(pairs, key=lambda p: (p[0] if direction == "asc" else -p[0], p[1]))
        assert len(set(zip(s["topic"], s["lang"]))) == len(pairs) <= feature["max_length"]
        assert all(start <= t < END for t in s["posted_at"])
    assert max(len(s["posted_at"]) for s in want.values()) == feature["max_length"]


@pytest.mark.parametrize("descending", [True, False])
def test_the_window_of_an_ordered_slice_equals_the_rules_on_it(descending):
    """Serving windows a snapshot slice (already a sequence) by binary search; the full rules on the
    same rows give the same rows, for bounds on, between and outside the events' times."""
    rng = np.random.default_rng(7)
    feature = {"ordering": {"by": "t", "descending": descending, "tie_break": "k"}, "dedup_key": ["k"],
               "event_types": ["e"]}
    for _ in range(200):
        t = np.sort(rng.choice([0, 10, 10, 20, 30, 30, 30, 40], size=rng.integers(0, 12)))
        cols = {"t": t[::-1].copy() if descending else t, "k": np.arange(len(t))}  # ties by k ascending
        bounds = [-5, 0, 10, 15, 30, 40, 45]
        lo = int(rng.choice(bounds))
        hi = None if rng.random() < 0.2 else int(rng.choice([b for b in bounds if b >= lo]))
        rows = sequence_rows(feature, cols, lo, hi)
        assert np.arange(len(t))[window_slice(feature, cols, lo, hi)].tolist() == rows.tolist()
