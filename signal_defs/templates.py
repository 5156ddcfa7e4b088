"""Templates of definitions to fill in (``seqctl defs new``) and the module ``seqctl init`` writes.

Each template is valid Python in the definition language and mentions every parameter with a
comment. They share one example so they fit together as written: a source ``ratings`` (a member
rates a title with stars), an event type ``title_rated`` over it and a feature ``recent_ratings``
over that. Replace the example's names and fields with your own.
"""

from __future__ import annotations

EXAMPLE_SOURCE = "ratings"
EXAMPLE_EVENT_TYPE = "title_rated"
EXAMPLE_FEATURE = "recent_ratings"
KINDS = ("source", "event-type", "feature")


def source(name: str = EXAMPLE_SOURCE) -> str:
    return f'''{name} = Source(
    name="{name}",  # lower_snake_case, unique among sources; raw/<name> in the lake
    topic="{name}",  # the Kafka topic of the stream; one source per topic
    batch_location="{name}",  # batch files: <SEQ_LANDING_DIR>/<batch_location>/arrival_date=YYYY-MM-DD/*.jsonl
    schema={{  # every field of a record -> its type: string, int64, float32, float64, bool, timestamp, list_of("float32", 32)
        "rating_id": "string",
        "member_id": "int64",
        "title_id": "int64",
        "stars": "int64",
        "rated_at": "int64",
        "device": "string",
    }},
    required=("rating_id", "member_id", "title_id", "stars", "rated_at"),  # present and non-null, or dead-lettered
    event_id_field="rating_id",  # the unique id of an event (deduplication)
    event_id_from=(),  # no id in the records: the fields a stable id is derived from, e.g. ("member_id", "title_id", "rated_at")
    user_field="member_id",  # whose sequence the event belongs to
    time_field="rated_at",  # event time: an int64 since the epoch, or a "timestamp" field (ISO 8601); the lake keeps epoch ms
    time_unit="ms",  # unit of time_field: "ms", "s" or "us"
    batch_format="jsonl",  # batch files as "jsonl", "csv" or "parquet"; or "delta": batch_location is a Delta table read by event day
    retention_days=400,  # retention of raw/{name}, in days
    max_record_bytes=64 * 1024,  # larger records are dead-lettered
    freshness_slo_seconds=60,  # the freshness check fails when the newest event is older than this
    kafka_partitions=3,  # partitions of the topic when seqctl broker creates it
    description="A member rated a title from one to five stars.",  # what the records are
)
'''


def event_type(name: str = EXAMPLE_EVENT_TYPE, source: str = EXAMPLE_SOURCE) -> str:
    return f'''{name} = EventType(
    name="{name}",  # lower_snake_case, unique among event types; events/<name> in the lake
    source="{source}",  # the source whose records it selects
    filter=col("stars") >= 1,  # which records count: col(...) compared with ==, !=, <, >=, .is_in([...]), .is_null(), &, |, ~
    enrichments=(),  # names of index-time enrichments written onto each event
    retention_days=400,  # retention of events/{name}, in days
    late_arrival_days=3,  # closed days recomputed for late events
    fields=("rating_id", "member_id", "rated_at", "title_id", "stars", "device"),  # source fields kept; must keep the id, user and time
    executor="standard",  # the plugin that turns raw records into events; "standard" applies filter and enrichments
    description="A rating of at least one star.",  # what the event means
)
'''


def feature(name: str = EXAMPLE_FEATURE, event_types: tuple[str, ...] = (EXAMPLE_EVENT_TYPE,)) -> str:
    return f'''{name}_v1 = SequenceFeature(
    name="{name}",  # lower_snake_case; sequences/<name>_v<version> in the lake
    version=1,  # a production feature whose output changes needs a new version
    event_types=({"".join(f'"{e}", ' for e in event_types).rstrip()}),  # the event types the sequence is made of
    fields=("rating_id", "rated_at", "event_type", "title_id", "stars"),  # per-event columns, from the event types and their enrichments
    max_length=200,  # N: the newest N events
    window_days=180,  # only events of the last window_days days
    owner="my-team",  # who answers for it
    lifecycle=Lifecycle.EXPERIMENTAL,  # EXPERIMENTAL, PRODUCTION (version-locked) or DEPRECATED
    dedup_key=("rating_id",),  # events with the same key are one event (the newest copy is kept); default: the source's event id
    ordering=Ordering(by="rated_at", descending=True, tie_break="rating_id"),  # newest first, ties ascending; default: time, id
    description="The last 200 ratings of a member within 180 days.",  # what the sequence is for
    snapshot_retention_days=35,  # days of daily snapshots sequences/ keeps (older ones are deleted)
    freshness_hours=6,  # yesterday's snapshot is due this many hours after midnight UTC
    full_snapshot_every_days=7,  # sequences/ holds every user every 7th day, only the changed users between
)
'''


# What each template needs from the definition language.
_NEEDS = {"source": ("Source",), "event-type": ("EventType", "col"), "feature": ("Lifecycle", "Ordering", "SequenceFeature")}


def template(kind: str, name: str) -> str:
    """The template of one definition (``kind`` one of :data:`KINDS`), headed by what it imports."""
    makers = {"source": source, "event-type": event_type, "feature": feature}
    if kind not in makers:
        raise ValueError(f"unknown kind {kind!r} (one of: {', '.join(KINDS)})")
    variable = f"{name}_v1" if kind == "feature" else name
    return (f"# Add to your definitions module and list {variable} in REGISTRY = Registry().add(...).\n"
            f"# Needs: from signal_defs import {', '.join(_NEEDS[kind])}\n" + makers[kind](name))


IMPORTS = """from signal_defs import (  # the definition language
    EventType,
    Lifecycle,
    Ordering,
    Registry,
    SequenceFeature,
    Source,
    col,
    list_of,  # noqa: F401  (list types, e.g. list_of("float32", 32))
)
"""


def project_module(module: str) -> str:
    """The definitions module ``module`` of a new project: the example source, event type and feature."""
    return (
        f'"""Our sequence definitions. Check them with: SEQ_DEFS_MODULE={module} seqctl defs validate"""\n\n'
        + IMPORTS + "\n# ---- sources ----\n\n" + source()
        + "\n# ---- event types ----\n\n" + event_type()
        + "\n# ---- features ----\n\n" + feature()
        + f"\nREGISTRY = Registry().add({EXAMPLE_SOURCE}, {EXAMPLE_EVENT_TYPE}, {EXAMPLE_FEATURE}_v1)\n"
    )
