"""Data and an independent oracle for the second definitions project (tests/projects/ratings_defs.py).

The landing area holds Parquet files by arrival day (some rows arrive a day late, some twice, some
lack a required field) and a daily genre snapshot per movie; the oracle recomputes, in plain
Python, what every table and read of the platform must give: the derived ids, seconds turned into
milliseconds, the genre of the event's day, and each feature's sequences as of any time.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl

DAYS = (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4))
DAY_MS = 86_400_000
MODULE = "tests.projects.ratings_defs"
SOURCE = "ratings"
TOPIC = "movie_ratings"
FEATURES = {
    "liked_movies_v1": {"event_types": ("liked",), "fields": ("rating_id", "event_time", "movie_id", "rating", "genre"),
                        "max_length": 20, "window_days": 30},
    "opinions_v1": {"event_types": ("liked", "disliked"), "fields": ("event_time", "movie_id", "rating"),
                    "max_length": 8, "window_days": 10},
}
FILTERS = {"liked": lambda r: r["rating"] >= 4, "disliked": lambda r: r["rating"] <= 2}
RAW_SCHEMA = {"uid": pl.String, "movie_id": pl.String, "event_time": pl.Int64, "rating": pl.Int64, "device": pl.String}


def day_start_s(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp())


def day_of_ms(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date()


def end_of_day_ms(d: date) -> int:
    return (day_start_s(d) + 86_400) * 1000


def rating_id(uid: str, movie_id: str, event_time_s: int) -> str:
    """The documented derivation, computed here on its own: the SHA-256 of the id fields' values
    as a JSON array (strings as they are, the time as epoch milliseconds), first 32 hex digits."""
    text = json.dumps([uid, movie_id, event_time_s * 1000], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class RatingsData:
    """What the landing area holds, row by row, as the generator wrote it."""

    deliveries: list[tuple[date, dict]] = field(default_factory=list)  # (arrival day, row)
    genres: dict[date, dict[str, str]] = field(default_factory=dict)  # snapshot day -> movie -> genre

    def bad(self) -> list[tuple[date, dict]]:
        return [(a, r) for a, r in self.deliveries if r["uid"] is None or r["rating"] is None]

    def valid(self) -> dict[str, dict]:
        """Distinct valid events by derived id (a re-delivery is the same event)."""
        out: dict[str, dict] = {}
        for _, r in self.deliveries:
            if r["uid"] is None or r["rating"] is None:
                continue
            rid = rating_id(r["uid"], r["movie_id"], r["event_time"])
            out.setdefault(rid, dict(r, rating_id=rid, event_time=r["event_time"] * 1000))
        return out

    def genre(self, movie: str, day: date) -> str | None:
        usable = [d for d in self.genres if d <= day]
        return self.genres[max(usable)].get(movie) if usable else None

    def events(self, event_type: str) -> list[dict]:
        return [dict(e, genre=self.genre(e["movie_id"], day_of_ms(e["event_time"])), event_type=event_type)
                for e in self.valid().values() if FILTERS[event_type](e)]

    def sequences_before(self, feature: str, end_ms: int) -> dict[str, list[dict]]:
        """{uid: events newest first} of the feature strictly before ``end_ms``, inside its window."""
        f = FEATURES[feature]
        start = end_ms - f["window_days"] * DAY_MS
        per_user: dict[str, list[dict]] = defaultdict(list)
        for et in f["event_types"]:
            for e in self.events(et):
                if start <= e["event_time"] < end_ms:
                    per_user[e["uid"]].append(e)
        return {u: sorted(evs, key=lambda e: (-e["event_time"], e["rating_id"]))[: f["max_length"]]
                for u, evs in per_user.items()}

    def sequences(self, feature: str, day: date) -> dict[str, dict[str, list]]:
        """{uid: {field: list newest first}} as the ``sequences/`` partition of ``day`` holds them."""
        fields = FEATURES[feature]["fields"]
        return {u: {c: [e[c] for e in evs] for c in fields}
                for u, evs in self.sequences_before(feature, end_of_day_ms(day)).items()}


def write_ratings_landing(landing: Path, users: int = 40, movies: int = 60, per_day: int = 400,
                          seed: int = 11) -> RatingsData:
    """Parquet landing files and genre snapshots for :data:`DAYS`; returns what was written."""
    rng = random.Random(seed)
    data = RatingsData()
    uids = [f"member-{i:04d}" for i in range(users)]
    movie_ids = [f"tt{i:07d}" for i in range(movies)]
    genres = ("drama", "comedy", "horror", "documentary")
    for d in DAYS:
        # Each day's catalogue knows most movies; a movie's genre may change from one day to the next.
        data.genres[d] = {m: rng.choice(genres) for m in movie_ids if rng.random() < 0.85}
        for i in range(per_day):
            t = day_start_s(d) + rng.randrange(86_400)
            if i % 50 == 0:  # several events of one member in the same second: ties on time
                t = day_start_s(d) + 43_200
            row = {"uid": rng.choice(uids[: users // 2] if i % 3 else uids), "movie_id": rng.choice(movie_ids),
                   "event_time": t, "rating": rng.randint(1, 5), "device": rng.choice(("tv", "phone", None))}
            if i % 97 == 0:
                row["uid"] = None  # a required field missing: a dead letter
            elif i % 89 == 0:
                row["rating"] = None
            late = rng.random() < 0.06 and d != DAYS[-1]
            arrival = d + timedelta(days=1) if late else d
            data.deliveries.append((arrival, row))
            if i % 31 == 0:  # the same row delivered again, in the next file
                data.deliveries.append((arrival, dict(row)))
    by_arrival: dict[date, list[dict]] = defaultdict(list)
    for arrival, row in data.deliveries:
        by_arrival[arrival].append(row)
    for arrival, rows in by_arrival.items():
        folder = landing / "ratings" / f"arrival_date={arrival.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        half = len(rows) // 2
        for n, part in enumerate((rows[:half], rows[half:])):
            pl.DataFrame(part, schema=RAW_SCHEMA).write_parquet(folder / f"part-{n}.parquet")
    for d, snap in data.genres.items():
        folder = landing / "enrichments" / "movie_genre" / f"date={d.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"movie_id": list(snap), "genre": list(snap.values())}).write_parquet(folder / "part-0.parquet")
    return data
