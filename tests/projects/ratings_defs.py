"""A second definitions project, shaped unlike the demo: movie ratings.

String user ids (``uid``), event times in seconds (``event_time``), no event id of its own (one
is derived from the user, the movie and the time into ``rating_id``), Parquet landing files, a
lookup on a string key, and features without an ``event_type`` or ``ts`` field. The tests run it
through every runtime with ``SEQ_DEFS_MODULE=tests.projects.ratings_defs``.
"""

from __future__ import annotations

from signal_defs import EventType, Lifecycle, LookupEnrichment, Registry, SequenceFeature, Source, col

ratings = Source(
    name="ratings",
    topic="movie_ratings",
    batch_location="ratings",
    batch_format="parquet",
    schema={"uid": "string", "movie_id": "string", "event_time": "int64", "rating": "int64", "device": "string"},
    required=("uid", "movie_id", "event_time", "rating"),
    event_id_field="rating_id",
    event_id_from=("uid", "movie_id", "event_time"),
    user_field="uid",
    time_field="event_time",
    time_unit="s",
    kafka_partitions=2,
    description="One row per rating a member gives a movie, 1 to 5 stars.",
)

movie_genre = LookupEnrichment(
    name="movie_genre",
    key="movie_id",
    key_type="string",
    columns={"genre": "string"},
    snapshot_location="enrichments/movie_genre",
    min_coverage=0.5,
    description="The movie's main genre, from a daily catalogue snapshot.",
)

liked = EventType(name="liked", source="ratings", filter=col("rating") >= 4, enrichments=("movie_genre",),
                  late_arrival_days=2, description="A rating of four or five stars.")
disliked = EventType(name="disliked", source="ratings", filter=col("rating") <= 2, enrichments=("movie_genre",),
                     late_arrival_days=2, description="A rating of one or two stars.")

liked_movies_v1 = SequenceFeature(
    name="liked_movies", version=1, event_types=("liked",),
    fields=("rating_id", "event_time", "movie_id", "rating", "genre"),
    max_length=20, window_days=30, owner="recs", lifecycle=Lifecycle.PRODUCTION,
    description="The last 20 movies a member liked within 30 days.",
)
opinions_v1 = SequenceFeature(
    name="opinions", version=1, event_types=("liked", "disliked"),
    fields=("event_time", "movie_id", "rating"),
    max_length=8, window_days=10, owner="recs",
    description="The last 8 strong opinions of a member within 10 days.",
)

REGISTRY = Registry().add(ratings, movie_genre, liked, disliked, liked_movies_v1, opinions_v1)
