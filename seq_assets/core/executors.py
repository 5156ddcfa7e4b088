"""Executors: the plugin that turns raw events of one event type into normalized, enriched records.

The framework (``seq_assets.engine``) owns sources, decoding, retries and writes; an executor owns
the business logic of its event type. Register a new one with ``@register_executor("name")`` and
name it in the event type's ``executor`` field.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

import polars as pl

from seq_assets.core.compiled import Compiled
from seq_assets.core.enrichers import INDEX_ENRICHERS, EnrichmentContext
from seq_assets.core.predicates import to_expr
from signal_defs.plugins import register_executor_name

EXECUTORS: dict[str, type["Executor"]] = {}


def register_executor(name: str) -> Callable[[type["Executor"]], type["Executor"]]:
    def deco(cls: type["Executor"]) -> type["Executor"]:
        EXECUTORS[name] = cls
        register_executor_name(name)  # so definitions naming it validate
        return cls

    return deco


class Executor:
    """Base executor: filter, normalize, enrich. Subclasses override the steps they change."""

    def __init__(self, event_type: dict, compiled: Compiled):
        self.event_type = event_type
        self.compiled = compiled
        self.source = compiled.sources[event_type["source"]]
        self.schema = compiled.event_schema(event_type["name"])

    def select(self, raw: pl.DataFrame) -> pl.DataFrame:
        return raw.filter(to_expr(self.event_type["filter"]))

    def normalize(self, events: pl.DataFrame) -> pl.DataFrame:
        return events.select(*self.event_type["fields"], "date").with_columns(
            pl.lit(self.event_type["name"]).alias("event_type")
        )

    def enrich(self, events: pl.DataFrame, ctx: EnrichmentContext) -> pl.DataFrame:
        for name in self.event_type["enrichments"]:
            e = self.compiled.enrichments[name]
            fn = INDEX_ENRICHERS[e["kind"]]
            events = fn(events, e, ctx, self.source) if e["kind"] == "counter" else fn(events, e, ctx)
        return events

    def run(self, raw: pl.DataFrame, ctx: EnrichmentContext, ingested_at: datetime | None = None) -> pl.DataFrame:
        events = self.enrich(self.normalize(self.select(raw)), ctx)
        stamp = ingested_at or datetime.now(timezone.utc)
        events = events.with_columns(
            pl.lit(self.event_type["hash"]).alias("def_version"),
            pl.lit(stamp).cast(pl.Datetime("us", "UTC")).alias("ingested_at"),
        )
        return events.select([pl.col(c).cast(t) for c, t in self.schema.items()])


@register_executor("standard")
class StandardExecutor(Executor):
    """Filter by the definition's predicate and apply its enrichments in order; nothing else."""
