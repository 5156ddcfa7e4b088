"""The definition language: declarative, typed, named objects that compile to portable JSON.

A definition says *what* a sequence is (which events, which filters, which enrichments, how the
sequence is assembled). The engine in ``seq_assets`` decides *how* to run it, in batch, in the
stream and at serving time, always from the compiled JSON rather than from these Python objects.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

# ---------------------------------------------------------------------------------------------
# Types. Kept to the few a sequence needs so that every runtime maps them the same way.
# ---------------------------------------------------------------------------------------------

SCALAR_TYPES = ("string", "int64", "float32", "float64", "bool", "timestamp")  # timestamp: ISO 8601 text in JSON
TIME_UNITS = ("ms", "s", "us")  # units of a source's event time since the epoch
# How a source's batch records arrive: files by arrival day (JSON lines, CSV with a header row,
# Parquet) under its batch location, or an existing Delta table read by event day.
BATCH_FORMATS = ("jsonl", "csv", "parquet", "delta")


def list_of(item: str, size: int | None = None) -> str:
    """A list type, e.g. ``list_of("float32", 32)`` -> ``"list<float32>[32]"`` (fixed size)."""
    return f"list<{item}>" + (f"[{size}]" if size else "")


# ---------------------------------------------------------------------------------------------
# Predicates: a tiny expression tree so that filters compile to JSON and run vectorized.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pred:
    """A node of a filter expression: ``col("action") == "click"``, ``a & b``, ``~a``."""

    op: str
    args: tuple[Any, ...] = ()

    def __and__(self, other: "Pred") -> "Pred":
        return Pred("and", (self, other))

    def __or__(self, other: "Pred") -> "Pred":
        return Pred("or", (self, other))

    def __invert__(self) -> "Pred":
        return Pred("not", (self,))

    def to_json(self) -> dict:
        out: list[Any] = []
        for a in self.args:
            out.append(a.to_json() if isinstance(a, (Pred, Col)) else a)
        return {"op": self.op, "args": out}


@dataclass(frozen=True)
class Col:
    """A reference to a raw event field inside a predicate."""

    name: str

    def _cmp(self, op: str, value: Any) -> Pred:
        return Pred(op, (self, value))

    def __eq__(self, value: Any) -> Pred:  # type: ignore[override]
        return self._cmp("eq", value)

    def __ne__(self, value: Any) -> Pred:  # type: ignore[override]
        return self._cmp("ne", value)

    def __ge__(self, value: Any) -> Pred:
        return self._cmp("ge", value)

    def __gt__(self, value: Any) -> Pred:
        return self._cmp("gt", value)

    def __le__(self, value: Any) -> Pred:
        return self._cmp("le", value)

    def __lt__(self, value: Any) -> Pred:
        return self._cmp("lt", value)

    def __hash__(self) -> int:
        return hash(("col", self.name))

    def is_in(self, values: list[Any]) -> Pred:
        return Pred("in", (self, list(values)))

    def is_null(self) -> Pred:
        return Pred("is_null", (self,))

    def is_true(self) -> Pred:
        return Pred("is_true", (self,))

    def to_json(self) -> dict:
        return {"col": self.name}


def col(name: str) -> Col:
    return Col(name)


# ---------------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------------


class Stage(str, enum.Enum):
    """When an enrichment is attached: when the event is indexed, or when it is served."""

    INDEX = "index"
    SERVING = "serving"


class Lifecycle(str, enum.Enum):
    EXPERIMENTAL = "experimental"
    PRODUCTION = "production"
    DEPRECATED = "deprecated"


@dataclass(frozen=True)
class Source:
    """Where raw events of one shape come from: a Kafka topic (stream) and a batch location."""

    name: str
    topic: str
    batch_location: str  # relative to SEQ_LANDING_DIR: files grouped by arrival day, or a Delta table URI
    schema: Mapping[str, str]  # field -> type
    required: tuple[str, ...]  # fields that must be present and non-null
    event_id_field: str = "event_id"
    user_field: str = "user_id"
    # Event time: an int64 count of ``time_unit`` since the epoch, or a "timestamp" field (ISO 8601
    # text). The lake stores it under this name as int64 epoch milliseconds either way.
    time_field: str = "ts"
    time_unit: str = "ms"  # "ms", "s" or "us"
    batch_format: str = "jsonl"  # one of BATCH_FORMATS
    # No event id in the records: the id is derived from these fields (then ``event_id_field`` names
    # the derived column and need not be in the schema).
    event_id_from: tuple[str, ...] = ()
    retention_days: int = 400  # how long raw/<source> keeps a day
    max_record_bytes: int = 64 * 1024
    freshness_slo_seconds: int = 60
    kafka_partitions: int = 3
    description: str = ""
    kind: str = field(default="source", init=False)


@dataclass(frozen=True)
class LookupEnrichment:
    """Join a daily snapshot table on a key and copy named columns onto each event."""

    name: str
    key: str  # event field to join on
    key_type: str
    columns: Mapping[str, str]  # column -> type, as written onto the event
    stage: Stage = Stage.INDEX
    snapshot_location: str = ""  # relative to SEQ_LANDING_DIR: <loc>/date=YYYY-MM-DD/*.parquet
    min_coverage: float = 0.9
    description: str = ""
    kind: str = field(default="lookup", init=False)


@dataclass(frozen=True)
class CounterEnrichment:
    """A point-in-time count per key over the source's prior events, e.g. user x item in 30 days.

    For an event at time t the value counts the source's events with the same key whose time is in
    [t - window_days, t) and that match ``counts`` (strictly before t: no leakage of the event itself).
    """

    name: str
    source: str
    keys: tuple[str, ...]
    window_days: int
    counts: Pred
    column: str = ""  # defaults to the enrichment name
    stage: Stage = Stage.INDEX
    min_coverage: float = 0.99
    description: str = ""
    kind: str = field(default="counter", init=False)

    @property
    def output_column(self) -> str:
        return self.column or self.name


@dataclass(frozen=True)
class ContextEnrichment:
    """Copy (and optionally rename) contextual fields of the raw event, e.g. surface or device."""

    name: str
    fields: Mapping[str, str]  # output column -> raw field
    stage: Stage = Stage.INDEX
    description: str = ""
    kind: str = field(default="context", init=False)


Enrichment = LookupEnrichment | CounterEnrichment | ContextEnrichment


@dataclass(frozen=True)
class EventType:
    """A meaningful action: the raw events of a source that pass a filter, enriched at index time."""

    name: str
    source: str
    filter: Pred
    enrichments: tuple[str, ...] = ()
    retention_days: int = 400
    late_arrival_days: int = 3
    fields: tuple[str, ...] = ()  # the source fields kept on each event; empty: every field of the source
    executor: str = "standard"
    description: str = ""
    kind: str = field(default="event_type", init=False)


def event_fields(event_type: "EventType", source: "Source") -> tuple[str, ...]:
    """The fields an event type keeps: the ones it names, else every field of its source's schema
    (with the derived event id when the source has none of its own)."""
    if event_type.fields:
        return tuple(event_type.fields)
    derived = (source.event_id_field,) if source.event_id_from and source.event_id_field not in source.schema else ()
    return (*derived, *source.schema)


@dataclass(frozen=True)
class Ordering:
    """Event time, newest first; equal timestamps are broken by ``tie_break`` ascending.

    ``by`` and ``tie_break`` left at None are the feature's source's ``time_field`` and
    ``event_id_field`` (resolved when the feature is compiled, see :func:`resolved_ordering`).
    """

    by: str | None = None
    descending: bool = True
    tie_break: str | None = None


@dataclass(frozen=True)
class SequenceFeature:
    """The last N meaningful actions of a user within a window, with named fields per event."""

    name: str
    version: int
    event_types: tuple[str, ...]
    fields: tuple[str, ...]
    max_length: int
    window_days: int
    owner: str
    lifecycle: Lifecycle = Lifecycle.EXPERIMENTAL
    dedup_key: tuple[str, ...] | None = None  # None: the source's event id; (): no dedup
    ordering: Ordering = Ordering()
    description: str = ""
    # Neither changes the rows: how many days before today sequences/ keeps a day's snapshot, and
    # how many hours after a day ends (UTC) its snapshot is due (the freshness check).
    snapshot_retention_days: int = 35
    freshness_hours: int = 6
    # Nor does this one: every how many days sequences/ holds a full snapshot of every user; the
    # days between hold only the users whose sequence changed (1: a full snapshot every day).
    full_snapshot_every_days: int = 7
    kind: str = field(default="feature", init=False)

    @property
    def table_name(self) -> str:
        return f"{self.name}_v{self.version}"


def resolved_ordering(feature: "SequenceFeature", source: Source) -> Ordering:
    """The feature's ordering with the defaults filled in from the source of its events: by its
    ``time_field``, ties by its ``event_id_field``."""
    o = feature.ordering
    return Ordering(by=o.by if o.by is not None else source.time_field, descending=o.descending,
                    tie_break=o.tie_break if o.tie_break is not None else source.event_id_field)


def resolved_dedup_key(feature: "SequenceFeature", source: Source) -> tuple[str, ...]:
    """The feature's dedup key, the source's ``event_id_field`` when it names none."""
    return (source.event_id_field,) if feature.dedup_key is None else tuple(feature.dedup_key)


Definition = Source | LookupEnrichment | CounterEnrichment | ContextEnrichment | EventType | SequenceFeature


@dataclass
class Registry:
    """All definitions of a project, in the order they were declared."""

    definitions: list[Definition] = field(default_factory=list)

    def add(self, *defs: Definition) -> "Registry":
        self.definitions.extend(defs)
        return self

    def of_kind(self, *kinds: str) -> list[Definition]:
        return [d for d in self.definitions if d.kind in kinds]
