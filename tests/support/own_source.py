"""A small definitions project of a team's own, unlike the demo in every name the runtimes used to
assume: string user ids (``uid``), the event time ``event_time`` in seconds (or ISO 8601 text), no
event id in the records (``rating_id`` is derived from the user, the movie and the time), and a
feature without ``event_type``. Built with the definition language in the tests that use it."""

from __future__ import annotations

import hashlib
import json

from signal_defs import CounterEnrichment, EventType, Lifecycle, Registry, SequenceFeature, Source, col

SOURCE = "ratings"
RATING_ID = "rating_id"
USER = "uid"
TIME = "event_time"
FIELDS = ("rating_id", "event_time", "movie_id", "rating")
COUNTER = "ratings_7d"  # the member's ratings in the 7 days before the event
COUNTER_DAYS = 7


def ratings_source(time_type: str = "int64", time_unit: str = "s", **changes) -> Source:
    return Source(
        name=SOURCE, topic="ratings", batch_location="ratings",
        schema={"uid": "string", "movie_id": "int64", "event_time": time_type, "rating": "int64", "device": "string"},
        required=("uid", "movie_id", "event_time", "rating"),
        event_id_field=RATING_ID, event_id_from=("uid", "movie_id", "event_time"),
        user_field=USER, time_field=TIME, time_unit=time_unit, **changes)


def ratings_registry(time_type: str = "int64", time_unit: str = "s", max_length: int = 5,
                     window_days: int = 3) -> Registry:
    """The source, a counter of each member's ratings, an event type keeping ratings of 4 and 5
    (``liked``, with the counter), and ``liked_movies`` v1 with the ordering and dedup key left to
    their defaults."""
    counter = CounterEnrichment(name=COUNTER, source=SOURCE, keys=("uid",), window_days=COUNTER_DAYS,
                                counts=col("rating") >= 1)
    liked = EventType(name="liked", source=SOURCE, filter=col("rating") >= 4, enrichments=(COUNTER,),
                      late_arrival_days=1)
    feature = SequenceFeature(name="liked_movies", version=1, event_types=("liked",), fields=FIELDS,
                              max_length=max_length, window_days=window_days, owner="recs",
                              lifecycle=Lifecycle.EXPERIMENTAL)
    return Registry().add(ratings_source(time_type, time_unit), counter, liked, feature)


def rating_id(uid, movie_id, event_time_ms) -> str:
    """The documented id derivation, written out on its own: SHA-256 of the JSON array of the
    values (the time in epoch milliseconds), compact, non-ASCII as is; the first 32 hex digits."""
    text = json.dumps([uid, movie_id, event_time_ms], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
