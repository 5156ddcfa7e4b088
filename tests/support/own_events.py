"""A definitions project shaped unlike the demo, and a lake of its events, for the read runtimes.

``ratings``: string user ids in ``uid``, event time ``event_time`` (epoch ms), an int64 event id
``rating_id``, an index-time lookup (``genre`` by ``movie_id``). ``plays``: int64 user ids in
``account``, time ``played_at``, a string event id ``play_id``. Their events are written straight
into ``events/`` (columns per ``Compiled.event_schema``) and their sequences built by the engine;
:func:`expected` recomputes a sequence in plain Python from the events, sharing no code with
``seq_assets``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

DAY_MS = 86_400_000
DAYS = [date(2026, 3, 1) + timedelta(days=i) for i in range(4)]
BUILT = DAYS[:3]  # sequences/ partitions; the events of the last day come after the newest snapshot
# Sorted differently by length, case, digits and code points: a fetch must find each by binary search.
USERS = ["alice", "Bob", "b10", "b9", "émile", "zoë-7", "u 1", "007"]
QUIET = "nobody"  # a user with no events
RATINGS = ("liked_v1", "opinions_v1", "movies_v1")  # movies_v1 stores neither its time nor its event id


def day_start(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp() * 1000)


def end_of(d: date) -> int:
    return day_start(d) + DAY_MS


def registry():
    import signal_defs as sd

    ratings = sd.Source(
        name="ratings", topic="ratings", batch_location="ratings",
        schema={"rating_id": "int64", "uid": "string", "movie_id": "int64", "rating": "int64",
                "event_time": "int64", "device": "string"},
        required=("rating_id", "uid", "movie_id", "rating", "event_time"),
        event_id_field="rating_id", user_field="uid", time_field="event_time", time_unit="ms",
    )
    plays = sd.Source(
        name="plays", topic="plays", batch_location="plays",
        schema={"play_id": "string", "account": "int64", "track": "string", "played_at": "int64"},
        required=("play_id", "account", "track", "played_at"),
        event_id_field="play_id", user_field="account", time_field="played_at",
    )
    genre = sd.LookupEnrichment(name="movie_genre", key="movie_id", key_type="int64", columns={"genre": "string"},
                                snapshot_location="enrichments/movie_genre", min_coverage=0.0)
    by_time = sd.Ordering(by="event_time", tie_break="rating_id")
    return sd.Registry().add(
        ratings, plays, genre,
        sd.EventType(name="rated_high", source="ratings", filter=sd.col("rating") >= 4, enrichments=("movie_genre",)),
        sd.EventType(name="rated_low", source="ratings", filter=sd.col("rating") <= 2, enrichments=("movie_genre",)),
        sd.EventType(name="played", source="plays", filter=sd.col("track") != ""),
        sd.SequenceFeature(name="liked", version=1, event_types=("rated_high",),
                           fields=("rating_id", "event_time", "movie_id", "rating", "genre"),
                           max_length=6, window_days=2, owner="recs", lifecycle=sd.Lifecycle.PRODUCTION,
                           ordering=by_time, dedup_key=("rating_id",)),
        sd.SequenceFeature(name="opinions", version=1, event_types=("rated_high", "rated_low"),
                           fields=("rating_id", "event_time", "event_type", "movie_id", "rating"),
                           max_length=4, window_days=3, owner="recs", ordering=by_time, dedup_key=("rating_id",)),
        # Ordered and deduplicated by the source's time and event id (the defaults), storing neither.
        sd.SequenceFeature(name="movies", version=1, event_types=("rated_high", "rated_low"),
                           fields=("movie_id", "rating"), max_length=3, window_days=2, owner="recs"),
        sd.SequenceFeature(name="plays", version=1, event_types=("played",), fields=("play_id", "played_at", "track"),
                           max_length=5, window_days=3, owner="music",
                           ordering=sd.Ordering(by="played_at", tie_break="play_id"), dedup_key=("play_id",)),
    )


def compiled():
    from seq_assets.core.compiled import Compiled, compile_definitions

    return Compiled(compile_definitions(registry()))


def rating_events(seed: int = 11) -> list[dict]:
    """Rows of ``events/rated_high`` and ``events/rated_low``: ties in time, copies of an id, events
    at the window edges, more than N per user."""
    rng = random.Random(seed)
    rows, next_id = [], 1
    for d in DAYS:
        for _ in range(60):
            user = rng.choice(USERS + USERS[:2])  # the first two are busy
            rating = rng.choice([1, 2, 4, 5, 5])
            t = day_start(d) + rng.choice([0, 0, 7, 7, 3_600_000, DAY_MS - 1, rng.randrange(DAY_MS)])
            row = {"rating_id": next_id, "uid": user, "movie_id": rng.randrange(1, 40), "rating": rating,
                   "event_time": t, "device": rng.choice(["tv", "web", None]),
                   "event_type": "rated_high" if rating >= 4 else "rated_low"}
            next_id += rng.choice([1, 1, 1, 1000])
            rows.append(row)
            if rng.random() < 0.1:  # the same event again (a re-delivery the index kept twice)
                rows.append(dict(row))
    for row in rows:
        row["genre"] = None if row["movie_id"] % 7 == 0 else f"genre-{row['movie_id'] % 5}"
    return rows


def play_events() -> list[dict]:
    rows = []
    for i, d in enumerate(DAYS):
        for account in (1, 42, 2**40):
            for k in range(3):
                rows.append({"play_id": f"p-{d.isoformat()}-{account}-{k}", "account": account,
                             "track": f"t{(i * 3 + k) % 4}", "played_at": day_start(d) + 1000 * (k + account % 7),
                             "event_type": "played"})
    return rows


def frames(compiled, rows: list[dict], event_type: str):
    """``rows`` of one event type as ``events/<event_type>`` holds them (``Compiled.event_schema``)."""
    import polars as pl

    schema = compiled.event_schema(event_type)
    mine = [r for r in rows if r["event_type"] == event_type]
    now = datetime(2026, 3, 10, tzinfo=timezone.utc)
    full = [{**{c: r.get(c) for c in schema}, "def_version": "test", "ingested_at": now,
             "date": datetime.fromtimestamp(r[_time(r)] / 1000, tz=timezone.utc).date()} for r in mine]
    return pl.DataFrame(full, schema=schema)


def _time(row: dict) -> str:
    return "event_time" if "event_time" in row else "played_at"


@dataclass
class OwnLake:
    root: Path
    compiled: object
    lake: object
    ratings: list[dict]
    plays: list[dict]


def build_lake(root: Path) -> OwnLake:
    """Events of every day in ``events/``, sequences of :data:`BUILT` built by the engine."""
    from seq_assets.core.engine import Engine
    from seq_assets.storage.lake import Lake

    comp = compiled()
    lake = Lake(str(root / "lake"))
    ratings, plays = rating_events(), play_events()
    for et, rows in (("rated_high", ratings), ("rated_low", ratings), ("played", plays)):
        df = frames(comp, rows, et)
        lake.replace_partitions("events", et, df, sorted(set(df.get_column("date").to_list())))
    engine = Engine(comp, lake)
    for table in comp.features:
        for _ in engine.sequences_days(table, BUILT):
            pass
    return OwnLake(root, comp, lake, ratings, plays)


FEATURES = {  # table: (event types, user, time, event id, N, window days, fields)
    "liked_v1": (("rated_high",), "uid", "event_time", "rating_id", 6, 2,
                 ("rating_id", "event_time", "movie_id", "rating", "genre")),
    "opinions_v1": (("rated_high", "rated_low"), "uid", "event_time", "rating_id", 4, 3,
                    ("rating_id", "event_time", "event_type", "movie_id", "rating")),
    "movies_v1": (("rated_high", "rated_low"), "uid", "event_time", "rating_id", 3, 2, ("movie_id", "rating")),
    "plays_v1": (("played",), "account", "played_at", "play_id", 5, 3, ("play_id", "played_at", "track")),
}


def expected(table: str, rows: list[dict], user, end_ms: int, start_ms: int | None = None) -> dict[str, list]:
    """The user's sequence as of ``end_ms`` (events strictly before it), in plain Python: newest
    first, ties by event id, one copy per event id, at most N, inside the window (and from
    ``start_ms`` when given)."""
    types, ucol, tcol, eid, n, window, fields = FEATURES[table]
    start = end_ms - window * DAY_MS if start_ms is None else max(start_ms, end_ms - window * DAY_MS)
    mine = [r for r in rows if r["event_type"] in types and r[ucol] == user and start <= r[tcol] < end_ms]
    mine.sort(key=lambda r: (-r[tcol], r[eid]))
    seen, out = set(), []
    for r in mine:
        if r[eid] not in seen:
            seen.add(r[eid])
            out.append(r)
    return {f: [r[f] for r in out[:n]] for f in fields}
