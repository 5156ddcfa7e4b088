"""Refuse a bad definition before anything runs, naming the object and the field at fault."""

from __future__ import annotations

import re
from typing import Any, Iterable

from signal_defs import plugins
from signal_defs.model import (
    BATCH_FORMATS,
    SCALAR_TYPES,
    TIME_UNITS,
    Col,
    ContextEnrichment,
    CounterEnrichment,
    EventType,
    LookupEnrichment,
    Pred,
    Registry,
    SequenceFeature,
    Source,
    Stage,
    event_fields,
    resolved_dedup_key,
    resolved_ordering,
)

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_LIST = re.compile(r"^list<(\w+)>(\[(\d+)\])?$")
_PRED_OPS = {"eq": 2, "ne": 2, "ge": 2, "gt": 2, "le": 2, "lt": 2, "in": 2, "and": 2, "or": 2, "not": 1, "is_null": 1, "is_true": 1}
# The types of the fields an event id can be derived from (their text is exact; floats' is not).
ID_FIELD_TYPES = ("string", "int64", "bool", "timestamp")
# Fields every event carries besides the source's own, added by the engine.
ENGINE_FIELDS = {"event_type": "string", "date": "date", "ingested_at": "timestamp", "def_version": "string"}


class DefinitionError(ValueError):
    """One problem with one field of one definition."""

    def __init__(self, obj: str, field: str, message: str):
        self.obj, self.field, self.message = obj, field, message
        super().__init__(f"{obj}: field '{field}': {message}")


class DefinitionErrors(ValueError):
    """Every problem found in a registry; refused as a whole."""

    def __init__(self, errors: list[DefinitionError]):
        self.errors = errors
        super().__init__("invalid definitions:\n" + "\n".join(f"  - {e}" for e in errors))


def valid_type(t: str) -> bool:
    m = _LIST.match(t)
    return t in SCALAR_TYPES or bool(m and m.group(1) in SCALAR_TYPES)


def pred_columns(p: Any) -> Iterable[str]:
    if isinstance(p, Col):
        yield p.name
    elif isinstance(p, Pred):
        for a in p.args:
            yield from pred_columns(a)


def _check_pred(p: Any, obj: str, field: str, schema: dict, errors: list) -> None:
    if not isinstance(p, Pred):
        errors.append(DefinitionError(obj, field, f"expected a predicate built from col(...), got {type(p).__name__}"))
        return
    if p.op not in _PRED_OPS or len(p.args) != _PRED_OPS[p.op]:
        errors.append(DefinitionError(obj, field, f"bad predicate node {p.op!r}"))
    for c in pred_columns(p):
        if c not in schema:
            errors.append(DefinitionError(obj, field, f"unknown field {c!r} (source fields: {', '.join(schema)})"))


def validate(registry: Registry, executors: Iterable[str] | None = None,
             serving_kinds: Iterable[str] | None = None) -> None:
    """Raise :class:`DefinitionErrors` listing every problem; return None when the registry is sound."""
    executors = plugins.EXECUTOR_NAMES if executors is None else executors
    serving_kinds = plugins.SERVING_ENRICHER_KINDS if serving_kinds is None else serving_kinds
    executors, serving_kinds = set(executors), set(serving_kinds)
    errors: list[DefinitionError] = []
    err = lambda obj, field, msg: errors.append(DefinitionError(obj, field, msg))  # noqa: E731

    seen: dict[tuple[str, ...], str] = {}
    for d in registry.definitions:
        label = _label(d)
        if not isinstance(getattr(d, "name", None), str) or not _NAME.match(d.name):
            err(label, "name", "must be lower_snake_case letters, digits and underscores")
        group = "feature" if d.kind == "feature" else ("enrichment" if d.kind in ("lookup", "counter", "context") else d.kind)
        key = (group, d.name, str(getattr(d, "version", "")))
        if key in seen:
            err(label, "name", f"duplicate name: {seen[key]} already uses it")
        seen[key] = label

    sources = {d.name: d for d in registry.of_kind("source")}
    enrichments = {d.name: d for d in registry.of_kind("lookup", "counter", "context")}
    event_types = {d.name: d for d in registry.of_kind("event_type")}

    for s in sources.values():
        _check_source(s, err)
    topics: dict[str, str] = {}
    for s in registry.of_kind("source"):
        if s.topic in topics and topics[s.topic] != s.name:
            err(_label(s), "topic", f"topic {s.topic!r} is already the topic of source {topics[s.topic]!r}; "
                "a topic belongs to one source")
        topics.setdefault(s.topic, s.name)
    for e in enrichments.values():
        label = _label(e)
        if not isinstance(e.stage, Stage):
            err(label, "stage", f"must be Stage.INDEX or Stage.SERVING, got {e.stage!r}")
        if isinstance(e, LookupEnrichment):
            if not valid_type(e.key_type):
                err(label, "key_type", f"unknown type {e.key_type!r}")
            if not e.columns:
                err(label, "columns", "a lookup needs at least one column")
            for c, t in e.columns.items():
                if not valid_type(t):
                    err(label, "columns", f"column {c!r} has unknown type {t!r}")
            if not e.snapshot_location:
                err(label, "snapshot_location", "a lookup needs the location of its daily snapshots")
            if not 0 <= e.min_coverage <= 1:
                err(label, "min_coverage", "must be between 0 and 1")
        elif isinstance(e, CounterEnrichment):
            if e.source not in sources:
                err(label, "source", f"unknown source {e.source!r}")
            else:
                schema = dict(sources[e.source].schema)
                for k in e.keys:
                    if k not in schema:
                        err(label, "keys", f"unknown field {k!r} of source {e.source!r}")
                _check_pred(e.counts, label, "counts", schema, errors)
            if not isinstance(e.window_days, int) or e.window_days <= 0:
                err(label, "window_days", f"must be a positive number of days, got {e.window_days!r}")
        if e.stage is Stage.SERVING and e.kind not in serving_kinds:
            err(label, "stage", f"no serving enricher provides {e.kind!r} enrichments (serving enrichers: {', '.join(sorted(serving_kinds))})")

    provided: dict[str, dict[str, str]] = {}  # event type -> field -> type
    for et in event_types.values():
        provided[et.name] = _check_event_type(et, sources, enrichments, executors, err)

    for f in registry.of_kind("feature"):
        _check_feature(f, sources, event_types, enrichments, provided, serving_kinds, err)

    if errors:
        raise DefinitionErrors(errors)


def _label(d: Any) -> str:
    kind = getattr(d, "kind", type(d).__name__)
    name = getattr(d, "name", "?")
    if kind == "feature":
        return f"feature {name!r} v{getattr(d, 'version', '?')}"
    if kind in ("lookup", "counter", "context"):
        return f"enrichment {name!r}"
    return f"{kind.replace('_', ' ')} {name!r}"


def _check_source(s: Source, err) -> None:
    label = _label(s)
    if not s.schema:
        err(label, "schema", "a source needs a schema")
    for f, t in s.schema.items():
        if not valid_type(t):
            err(label, "schema", f"field {f!r} has unknown type {t!r}")
    for attr in ("event_id_field", "user_field", "time_field"):
        if attr == "event_id_field" and s.event_id_from:
            continue  # derived from event_id_from, checked below
        if getattr(s, attr) not in s.schema:
            err(label, attr, f"{getattr(s, attr)!r} is not in the schema")
        elif getattr(s, attr) not in s.required:
            err(label, "required", f"{getattr(s, attr)!r} ({attr}) must be required")
    if s.time_unit not in TIME_UNITS:
        err(label, "time_unit", f"unknown time unit {s.time_unit!r} (one of: {', '.join(TIME_UNITS)})")
    if s.batch_format not in BATCH_FORMATS:
        err(label, "batch_format", f"unknown batch format {s.batch_format!r} (one of: {', '.join(BATCH_FORMATS)})")
    if s.time_field in s.schema and s.schema[s.time_field] not in ("int64", "timestamp"):
        err(label, "time_field", f"event time {s.time_field!r} must be an int64 count of {s.time_unit} since the epoch "
            f"or a timestamp, not {s.schema[s.time_field]!r}")
    if s.user_field in s.schema and s.schema[s.user_field] not in ("int64", "string"):
        err(label, "user_field", f"user id {s.user_field!r} must be int64 or string, not {s.schema[s.user_field]!r}")
    if not isinstance(s.event_id_from, tuple) or not all(isinstance(f, str) for f in s.event_id_from):
        err(label, "event_id_from", f"must be a tuple of field names, got {s.event_id_from!r}")
    else:
        for f in s.event_id_from:
            if f not in s.schema:
                err(label, "event_id_from", f"unknown field {f!r}: the event id is derived from fields of the schema")
            elif s.schema[f] not in ID_FIELD_TYPES:
                err(label, "event_id_from", f"field {f!r} is {s.schema[f]}: an id is derived from "
                    f"{', '.join(ID_FIELD_TYPES)} fields only")
        if s.event_id_from and s.event_id_field in s.schema:
            err(label, "event_id_field", f"{s.event_id_field!r} is derived from event_id_from, so it cannot also be "
                "a field of the schema")
        if len(set(s.event_id_from)) != len(s.event_id_from):
            err(label, "event_id_from", "lists a field more than once")
    if not isinstance(s.retention_days, int) or s.retention_days <= 0:
        err(label, "retention_days", f"must be a positive number of days, got {s.retention_days!r}")
    for r in s.required:
        if r not in s.schema:
            err(label, "required", f"unknown field {r!r}")
    if s.max_record_bytes <= 0:
        err(label, "max_record_bytes", "must be positive")
    if s.kafka_partitions <= 0:
        err(label, "kafka_partitions", "must be positive")


def _check_event_type(et: EventType, sources, enrichments, executors, err) -> dict[str, str]:
    label = _label(et)
    if et.source not in sources:
        err(label, "source", f"unknown source {et.source!r}")
        return {}
    schema = dict(sources[et.source].schema)
    errors: list[DefinitionError] = []
    _check_pred(et.filter, label, "filter", schema, errors)
    for e in errors:
        err(e.obj, e.field, e.message)
    if et.executor not in executors:
        err(label, "executor", f"unknown executor {et.executor!r} (registered: {', '.join(sorted(executors))})")
    if not isinstance(et.retention_days, int) or et.retention_days <= 0:
        err(label, "retention_days", "must be a positive number of days")
    if not isinstance(et.late_arrival_days, int) or et.late_arrival_days < 0:
        err(label, "late_arrival_days", "must be zero or a positive number of days")
    src = sources[et.source]
    kept = dict(schema)
    if src.event_id_from:
        kept.setdefault(src.event_id_field, "string")  # the derived id
    out: dict[str, str] = {}
    fields = event_fields(et, src)
    for f in fields:
        if f not in kept:
            err(label, "fields", f"unknown field {f!r} of source {et.source!r}")
        else:
            out[f] = kept[f]
    for required in (src.event_id_field, src.user_field, src.time_field):
        if required not in fields:
            err(label, "fields", f"must keep {required!r}")
    out.update({k: v for k, v in ENGINE_FIELDS.items()})
    for name in et.enrichments:
        e = enrichments.get(name)
        if e is None:
            err(label, "enrichments", f"unknown enrichment {name!r}")
            continue
        if e.stage is not Stage.INDEX:
            err(label, "enrichments", f"enrichment {name!r} is serving-time; event types apply index-time enrichments only")
            continue
        if isinstance(e, LookupEnrichment):
            if e.key not in schema:
                err(_label(e), "key", f"join key {e.key!r} is not a field of source {et.source!r} (used by {label})")
            elif schema[e.key] != e.key_type:
                err(_label(e), "key_type", f"join key type {e.key_type!r} does not match {et.source}.{e.key} of type {schema[e.key]!r} (used by {label})")
            out.update(e.columns)
        elif isinstance(e, CounterEnrichment):
            if e.source != et.source:
                err(label, "enrichments", f"counter {name!r} counts source {e.source!r}, not this event type's source {et.source!r}")
            out[e.output_column] = "int64"
        elif isinstance(e, ContextEnrichment):
            for out_col, raw in e.fields.items():
                if raw not in schema:
                    err(_label(e), "fields", f"unknown field {raw!r} of source {et.source!r} (used by {label})")
                else:
                    out[out_col] = schema[raw]
    return out


def _check_feature(f: SequenceFeature, sources, event_types, enrichments, provided, serving_kinds, err) -> None:
    label = _label(f)
    if not isinstance(f.version, int) or f.version < 1:
        err(label, "version", "must be a whole number >= 1")
    if not isinstance(f.max_length, int) or f.max_length <= 0:
        err(label, "max_length", f"N must be a positive whole number, got {f.max_length!r}")
    if not isinstance(f.window_days, int) or f.window_days <= 0:
        err(label, "window_days", f"the window must be a positive number of days, got {f.window_days!r}")
    if not f.owner:
        err(label, "owner", "every feature needs an owner")
    for setting, what in (("snapshot_retention_days", "days of snapshots to keep"),
                          ("freshness_hours", "hours after a day ends by which its snapshot is due"),
                          ("full_snapshot_every_days", "days from one full snapshot of every user to the next")):
        value = getattr(f, setting)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            err(label, setting, f"must be a positive whole number ({what}), got {value!r}")
    if not f.event_types:
        err(label, "event_types", "a feature needs at least one event type")
    known = [et for et in f.event_types if et in event_types]
    for et in f.event_types:
        if et not in event_types:
            err(label, "event_types", f"unknown event type {et!r}")
    feature_sources = [sources[event_types[et].source] for et in known if event_types[et].source in sources]
    source = feature_sources[0] if feature_sources else None
    users = sorted({s.user_field for s in feature_sources})
    if len(users) > 1:
        err(label, "event_types", f"the event types' sources name their users differently ({', '.join(users)}): "
            "a sequence has one user column")
    row_columns = (source.user_field if source else "user_id", "date")
    serving_cols = {c: e for e in enrichments.values() if e.stage is Stage.SERVING for c in output_columns(e)}
    if not f.fields:
        err(label, "fields", "a feature needs at least one field")
    for field in f.fields:
        if field in row_columns:
            err(label, "fields", f"{field!r} is a column of every sequence row, not a per-event field")
            continue
        if field in serving_cols:
            e = serving_cols[field]
            if e.kind not in serving_kinds:
                err(label, "fields", f"reads serving-time enrichment {e.name!r}, which no serving enricher provides "
                    f"(serving enrichers: {', '.join(sorted(serving_kinds))})")
            for et in known:
                for k in serving_keys(e):
                    if k not in provided.get(et, {}):
                        err(label, "fields", f"serving enrichment {e.name!r} needs {k!r}, which event type {et!r} does not carry")
            continue
        missing = [et for et in known if field not in provided.get(et, {})]
        if missing:
            err(label, "fields", f"unknown field {field!r}: not provided by event type(s) {', '.join(missing)}")
    if source is None:
        return
    # Ordering and dedup run when the sequence is built: every event type must write the column
    # (the sequence keeps it only when it is one of the feature's fields). Unset, they are the
    # source's time and event id.
    ordering = resolved_ordering(f, source)
    keyed = ([("dedup_key", k) for k in resolved_dedup_key(f, source)]
             + [(f"ordering.{a}", getattr(ordering, a)) for a in ("by", "tie_break")])
    for attr, k in keyed:
        missing = [et for et in known if k not in provided.get(et, {})]
        if missing:
            err(label, attr, f"{k!r} is not produced by event type(s) {', '.join(missing)}")


def output_columns(e: Any) -> list[str]:
    """The columns an enrichment writes onto an event."""
    if isinstance(e, LookupEnrichment):
        return list(e.columns)
    if isinstance(e, CounterEnrichment):
        return [e.output_column]
    return list(e.fields)


def serving_keys(e: Any) -> list[str]:
    if isinstance(e, LookupEnrichment):
        return [e.key]
    if isinstance(e, CounterEnrichment):
        return list(e.keys)
    return list(e.fields.values())
