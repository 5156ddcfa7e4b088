"""The demo definitions that ship with the project: Pinterest-style pin engagements."""

from __future__ import annotations

from signal_defs.model import (
    CounterEnrichment,
    EventType,
    Lifecycle,
    LookupEnrichment,
    SequenceFeature,
    Source,
    Stage,
    col,
    list_of,
)

# ---- source ---------------------------------------------------------------------------------

user_engagements = Source(
    name="user_engagements",
    topic="user_engagements",
    batch_location="user_engagements",
    schema={
        "event_id": "string",
        "user_id": "int64",
        "action": "string",
        "item_id": "int64",
        "ts": "int64",
        "surface": "string",
        "device": "string",
        "country": "string",
        "dwell_ms": "int64",
        "is_bot": "bool",
    },
    required=("event_id", "user_id", "action", "item_id", "ts", "surface", "device", "country", "is_bot"),
    freshness_slo_seconds=60,
    description="Every engagement of a user with a pin, as logged by the clients. Kafka key = user id.",
)

# ---- enrichments ----------------------------------------------------------------------------

# The lookups join daily snapshots on the pin id.
_BY_ITEM = dict(key="item_id", key_type="int64")

item_embedding = LookupEnrichment(
    name="item_embedding", columns={"item_embedding": list_of("float32", 32)}, stage=Stage.INDEX,
    snapshot_location="enrichments/item_embedding", min_coverage=0.9,
    description="32-d content embedding of the pin, from the daily embedding snapshot.", **_BY_ITEM)

item_category = LookupEnrichment(
    name="item_category", columns={"item_category": "string"}, stage=Stage.INDEX,
    snapshot_location="enrichments/item_category", min_coverage=0.9,
    description="Top-level interest category of the pin.", **_BY_ITEM)

user_item_count_30d = CounterEnrichment(
    name="user_item_count_30d",
    source="user_engagements",
    keys=("user_id", "item_id"),
    window_days=30,
    counts=col("action").is_in(["click", "save", "closeup"]) & ~col("is_bot").is_true(),
    stage=Stage.INDEX,
    description="How many times this user engaged with this pin in the 30 days before the event.",
)

item_popularity = LookupEnrichment(
    name="item_popularity", columns={"item_popularity": "float64"}, stage=Stage.SERVING,
    snapshot_location="enrichments/item_popularity", min_coverage=0.5,
    description="How popular the pin is today; changes fast, so it is joined when the sequence is served.",
    **_BY_ITEM)

# ---- event types ----------------------------------------------------------------------------

_human = ~col("is_bot").is_true()
# What the three engagement event types share: their source, the fields each event keeps, the
# index-time enrichments, two-year retention and a three-day late-arrival horizon.
_ENGAGEMENT = dict(
    source="user_engagements",
    fields=("event_id", "user_id", "ts", "action", "item_id", "surface", "device", "country", "dwell_ms"),
    enrichments=("item_embedding", "item_category", "user_item_count_30d"),
    retention_days=400,
    late_arrival_days=3,
)

pin_click = EventType(name="pin_click", filter=(col("action") == "click") & _human,
                      description="A click through to the pin's link.", **_ENGAGEMENT)
pin_save = EventType(name="pin_save", filter=(col("action") == "save") & _human,
                     description="A save of the pin to a board.", **_ENGAGEMENT)
pin_closeup = EventType(name="pin_closeup", filter=(col("action") == "closeup") & (col("dwell_ms") >= 1000) & _human,
                        description="A close-up view of the pin held for at least one second.", **_ENGAGEMENT)

# ---- features -------------------------------------------------------------------------------

_FIELDS = (
    "event_id", "ts", "event_type", "item_id", "surface", "device", "country",
    "item_category", "item_embedding", "user_item_count_30d", "item_popularity",
)

# Both features are production features of the same team, with the same fields.
_PIN_FEATURE = dict(fields=_FIELDS, owner="user-understanding", lifecycle=Lifecycle.PRODUCTION)

engagements_v1 = SequenceFeature(
    name="engagements", version=1, event_types=("pin_click", "pin_save", "pin_closeup"),
    max_length=500, window_days=90,
    description="The last 500 meaningful pin engagements of a user within 90 days.", **_PIN_FEATURE)

saves_v1 = SequenceFeature(
    name="saves", version=1, event_types=("pin_save",), max_length=100, window_days=365,
    description="The last 100 pin saves of a user within a year.", **_PIN_FEATURE)

DEFINITIONS = (
    user_engagements,
    item_embedding, item_category, user_item_count_30d, item_popularity,
    pin_click, pin_save, pin_closeup,
    engagements_v1, saves_v1,
)
