"""The compiled definitions as every runtime sees them: plain JSON dicts with typed accessors."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from seq_assets.core.kernel import EVENT_TYPE
from signal_defs.compile import enrichment_columns

_SCALARS = {
    "string": pl.String,
    "int64": pl.Int64,
    "float32": pl.Float32,
    "float64": pl.Float64,
    "bool": pl.Boolean,
    "date": pl.Date,
    "timestamp": pl.Datetime("us", "UTC"),
}


def polars_type(t: str) -> pl.DataType:
    """Map a definition type to the polars type stored in Delta (fixed-size lists are stored as lists)."""
    if t.startswith("list<"):
        inner = t[5:t.index(">")]
        return pl.List(_SCALARS[inner])
    return _SCALARS[t]


def derives_event_id(source: dict) -> bool:
    """Whether the source's records carry no id of their own, so one is derived (``event_id_from``)."""
    return bool(source.get("event_id_from")) and source["event_id_field"] not in source["schema"]


def source_types(source: dict) -> dict[str, pl.DataType]:
    """The typed columns of a compiled source's decoded records, as ``raw/`` stores them: the derived
    event id (a string) when there is one, then the schema's fields, the event time as Int64 epoch
    milliseconds whatever it arrives as (see :func:`seq_assets.core.days.event_time_ms`)."""
    cols: dict[str, pl.DataType] = {source["event_id_field"]: pl.String} if derives_event_id(source) else {}
    for f, t in source["schema"].items():
        cols[f] = pl.Int64 if f == source["time_field"] else polars_type(t)
    return cols


@dataclass(frozen=True)
class Compiled:
    """Accessors over ``{definition id: compiled dict}``."""

    defs: dict[str, dict]

    def _of(self, *kinds: str) -> dict[str, dict]:
        return {d["name"]: d for d in self.defs.values() if d["kind"] in kinds}

    @functools.cached_property
    def sources(self) -> dict[str, dict]:
        return self._of("source")

    @functools.cached_property
    def enrichments(self) -> dict[str, dict]:
        return self._of("lookup", "counter", "context")

    @functools.cached_property
    def event_types(self) -> dict[str, dict]:
        return self._of("event_type")

    @functools.cached_property
    def features(self) -> dict[str, dict]:
        """Keyed by table name, ``engagements_v1``."""
        return {f"{d['name']}_v{d['version']}": d for d in self.defs.values() if d["kind"] == "feature"}

    def feature(self, name: str) -> dict:
        """Resolve ``engagements_v1``, or ``engagements`` to its newest version."""
        if name in self.features:
            return self.features[name]
        versions = [f for f in self.features.values() if f["name"] == name]
        if not versions:
            raise KeyError(f"unknown feature {name!r} (known: {', '.join(sorted(self.features))})")
        return max(versions, key=lambda f: f["version"])

    def source_of(self, feature: dict) -> dict:
        """The source of the feature's events (that of its first event type)."""
        return self.sources[self.event_types[feature["event_types"][0]]["source"]]

    def user_field(self, feature: dict) -> str:
        """The user column of the feature's events and of its ``sequences/`` table: its source's
        ``user_field`` (every source of a feature shares it)."""
        return self.source_of(feature)["user_field"]

    def user_type(self, feature: dict) -> pl.DataType:
        """The polars type of the feature's user ids (``int64`` or ``string``, from the source schema)."""
        src = self.source_of(feature)
        return polars_type(src["schema"][src["user_field"]])

    def event_types_of(self, source: str) -> list[dict]:
        return [et for et in self.event_types.values() if et["source"] == source]

    def source_schema(self, source: str) -> dict[str, pl.DataType]:
        """See :func:`source_types`."""
        return source_types(self.sources[source])

    def lookups(self, stage: str) -> list[dict]:
        return [e for e in self.enrichments.values() if e["kind"] == "lookup" and e["stage"] == stage]

    def event_schema(self, event_type: str) -> dict[str, pl.DataType]:
        """Columns of ``events/<event_type>`` in order."""
        et = self.event_types[event_type]
        src = source_types(self.sources[et["source"]])
        cols: dict[str, Any] = {f: src[f] for f in et["fields"]}
        cols[EVENT_TYPE] = pl.String
        for name in et["enrichments"]:
            e = self.enrichments[name]
            for c in enrichment_columns(e):
                if e["kind"] == "lookup":
                    cols[c] = polars_type(e["columns"][c])
                elif e["kind"] == "counter":
                    cols[c] = pl.Int64
                else:
                    cols[c] = src[e["fields"][c]]
        cols["def_version"] = pl.String
        cols["ingested_at"] = pl.Datetime("us", "UTC")
        cols["date"] = pl.Date
        return cols

    def index_enrichment_columns(self, event_type: str) -> list[tuple[str, str, float | None]]:
        """(enrichment, column, min_coverage) of each index-time enrichment column of an event type."""
        out = []
        for name in self.event_types[event_type]["enrichments"]:
            e = self.enrichments[name]
            if e.get("stage", "index") == "index":
                out.extend((name, c, e.get("min_coverage")) for c in enrichment_columns(e))
        return out

    def horizon_days(self, source: str | None = None) -> int:
        """The longest late-arrival horizon of the event types (of one source, if given)."""
        ets = self.event_types_of(source) if source is not None else self.event_types.values()
        return max((et["late_arrival_days"] for et in ets), default=0)

    def stored_fields(self, feature: dict) -> list[str]:
        """The feature's fields kept in ``sequences/``; serving-time ones are joined when served."""
        serving = {c for e in self.lookups("serving") for c in e["columns"]}
        return [f for f in feature["fields"] if f not in serving]

    def sequence_schema(self, feature: dict, fields: list[str] | None = None) -> dict[str, pl.DataType]:
        """Columns of ``sequences/<feature>_v<version>``: the user (named and typed by the source), one
        list per stored field (or per event column of ``fields``), ``date``."""
        ets = [self.event_schema(et) for et in feature["event_types"]]
        cols: dict[str, Any] = {self.user_field(feature): self.user_type(feature)}
        for f in self.stored_fields(feature) if fields is None else fields:
            cols[f] = pl.List(next(s[f] for s in ets if f in s))
        cols["date"] = pl.Date
        return cols


def compile_definitions(registry) -> dict[str, dict]:
    """Compile a registry, round-tripped through JSON so only the JSON form survives (exactly what
    a compiled folder holds)."""
    from signal_defs.compile import compile_registry

    return json.loads(json.dumps(compile_registry(registry)))
