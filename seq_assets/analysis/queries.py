"""The analysis queries: plain functions of a DuckDB connection holding the lake views.

Each returns a polars frame with a fixed schema (``SCHEMAS``), one row group per ``date``. The
analysis assets (``seq_assets.orchestration.analysis_assets``) store them as Delta; ``seqctl report``
plots them. This module does not import Dagster, so the command line stays quick.

Every query takes its column names from the compiled definitions, so it works for any project: the
event time is the source's ``time_field`` (epoch ms in the lake), a sequence's length is that of one
of its stored list columns, coverage covers each event type's own index-time enrichments. The action
mix is the demo's: it reads the sources that have ``action``, ``surface`` and ``country`` fields
(``ACTION_MIX_FIELDS``; bots excluded when there is a boolean ``is_bot``) and is empty without any.
"""

from __future__ import annotations

import polars as pl

from seq_assets.core.compiled import Compiled
from seq_assets.storage.sql import views

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "sequence_lengths": {"feature": pl.String, "length": pl.Int64, "users": pl.Int64, "date": pl.Date},
    "action_mix": {"source": pl.String, "surface": pl.String, "country": pl.String, "action": pl.String,
                   "events": pl.Int64, "share": pl.Float64, "date": pl.Date},
    "late_arrival_lag": {"source": pl.String, "origin": pl.String, "lag_days": pl.Int64, "events": pl.Int64,
                         "share": pl.Float64, "p50_lag_s": pl.Float64, "p99_lag_s": pl.Float64, "date": pl.Date},
    "enrichment_coverage": {"event_type": pl.String, "enrichment": pl.String, "column": pl.String,
                            "events": pl.Int64, "covered": pl.Int64, "coverage": pl.Float64,
                            "min_coverage": pl.Float64, "date": pl.Date},
    "events_per_hour": {"event_type": pl.String, "hour": pl.Int64, "events": pl.Int64, "date": pl.Date},
    "late_events_recorded": {"source": pl.String, "late_events": pl.Int64, "date": pl.Date},
    "stream_lag": {"events": pl.Int64, "p50_lag_s": pl.Float64, "p99_lag_s": pl.Float64, "date": pl.Date},
}
TABLES = ("sequence_lengths", "action_mix", "late_arrival_lag", "enrichment_coverage")
ACTION_MIX_FIELDS = ("action", "surface", "country")


def _days_sql(days) -> str:
    return ", ".join(f"DATE '{str(d)[:10]}'" for d in sorted(set(days)))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _s(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _columns(conn, view: str) -> set[str]:
    kind, name = view.split(".", 1)
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
                        [kind, name]).fetchall()
    return {r[0] for r in rows}


def _present(conn, kind: str, names, needs: tuple[str, ...] = ()):
    """``(name, columns)`` of each of ``names`` whose view ``<kind>.<name>`` is on ``conn`` and has
    every column of ``needs``."""
    present = set(views(conn))
    for name in names:
        view = f"{kind}.{name}"
        if view in present:
            cols = _columns(conn, view)
            if set(needs) <= cols:
                yield name, cols


def _run(conn, name: str, parts: list[str], order: str) -> pl.DataFrame:
    schema = SCHEMAS[name]
    if not parts:
        return pl.DataFrame(schema=schema)
    sql = " UNION ALL ".join(f"({p})" for p in parts) + f" ORDER BY {order}"
    rel = conn.sql(sql)
    df = pl.from_arrow(rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow())
    return df.select([pl.col(c).cast(t) for c, t in schema.items()])


def sequence_lengths(conn, compiled: Compiled, days) -> pl.DataFrame:
    """Users per sequence length, per feature table and day."""
    parts = []
    for table, cols in _present(conn, "sequences", compiled.features):
        f = compiled.features[table]
        stored = [c for c in compiled.stored_fields(f) if c in cols]
        if not stored:  # every field is joined at serving time: no list to measure
            continue
        col = f["ordering"]["by"] if f["ordering"]["by"] in stored else stored[0]
        parts.append(f"SELECT {_s(table)} AS feature, len({_q(col)}) AS length, count(*) AS users, date "
                     f"FROM sequences.{_q(table)} WHERE date IN ({_days_sql(days)}) GROUP BY ALL")
    return _run(conn, "sequence_lengths", parts, "date, feature, length")


def action_mix_sources(compiled: Compiled) -> list[str]:
    """The sources whose schema has the action mix's fields."""
    return [name for name, s in compiled.sources.items() if set(ACTION_MIX_FIELDS) <= set(s["schema"])]


def action_mix(conn, compiled: Compiled, days) -> pl.DataFrame:
    """Events per action within each surface and country (bots excluded), per source and day; empty
    when no source has those fields."""
    parts = []
    for source, cols in _present(conn, "raw", action_mix_sources(compiled), needs=ACTION_MIX_FIELDS):
        humans = " AND NOT coalesce(is_bot, false)" if compiled.sources[source]["schema"].get("is_bot") == "bool" \
            and "is_bot" in cols else ""
        parts.append(
            f"SELECT {_s(source)} AS source, surface, country, action, count(*) AS events, "
            f"count(*) / sum(count(*)) OVER (PARTITION BY date, surface, country) AS share, date "
            f"FROM raw.{_q(source)} WHERE date IN ({_days_sql(days)}){humans} GROUP BY date, surface, country, action")
    return _run(conn, "action_mix", parts, "date, source, surface, country, action")


def late_arrival_lag(conn, compiled: Compiled, days) -> pl.DataFrame:
    """Events per lag in days (delivery day minus event day), per source, day and origin.

    Stream rows also carry the Kafka timestamp (``arrived_at``): their lag percentiles are in seconds.
    """
    parts = []
    for source, cols in _present(conn, "raw", compiled.sources, needs=("arrival_date",)):
        lag_ms = (f"epoch_ms(arrived_at) - {_q(compiled.sources[source]['time_field'])}" if "arrived_at" in cols
                  else "NULL::BIGINT")
        parts.append(
            f"SELECT {_s(source)} AS source, origin, date_diff('day', date, arrival_date) AS lag_days, "
            f"count(*) AS events, count(*) / sum(count(*)) OVER (PARTITION BY date) AS share, "
            f"quantile_cont({lag_ms}, 0.5) / 1000.0 AS p50_lag_s, quantile_cont({lag_ms}, 0.99) / 1000.0 AS p99_lag_s, "
            f"date FROM raw.{_q(source)} WHERE date IN ({_days_sql(days)}) GROUP BY date, origin, lag_days")
    return _run(conn, "late_arrival_lag", parts, "date, source, origin, lag_days")


def stream_lag(conn, compiled: Compiled, days) -> pl.DataFrame:
    """Per day, over every source: stream rows and the p50/p99 of Kafka time minus event time, in seconds."""
    parts = [f"SELECT epoch_ms(arrived_at) - {_q(compiled.sources[source]['time_field'])} AS lag_ms, date "
             f"FROM raw.{_q(source)} WHERE date IN ({_days_sql(days)}) AND arrived_at IS NOT NULL"
             for source, _ in _present(conn, "raw", compiled.sources, needs=("arrived_at",))]
    if not parts:
        return pl.DataFrame(schema=SCHEMAS["stream_lag"])
    union = " UNION ALL ".join(f"({p})" for p in parts)
    return _run(conn, "stream_lag", [
        f"SELECT count(*) AS events, quantile_cont(lag_ms, 0.5) / 1000.0 AS p50_lag_s, "
        f"quantile_cont(lag_ms, 0.99) / 1000.0 AS p99_lag_s, date FROM ({union}) GROUP BY date"], "date")


def late_events_recorded(conn, days) -> pl.DataFrame:
    """Late events the stream recorded (``metrics/late_arrivals``) per source and day."""
    if "metrics.late_arrivals" not in set(views(conn)):
        return pl.DataFrame(schema=SCHEMAS["late_events_recorded"])
    return _run(conn, "late_events_recorded", [
        f"SELECT source, sum(late_events) AS late_events, date FROM metrics.late_arrivals "
        f"WHERE date IN ({_days_sql(days)}) GROUP BY ALL"], "date, source")


def enrichment_coverage(conn, compiled: Compiled, days) -> pl.DataFrame:
    """Share of events with a non-null value, per event type, enrichment column and day."""
    def covered(et: str, name: str, col: str, minimum: float | None) -> str:
        return (f"SELECT {_s(et)} AS event_type, {_s(name)} AS enrichment, {_s(col)} AS \"column\", "
                f"count(*) AS events, count({_q(col)}) AS covered, count({_q(col)}) / count(*) AS coverage, "
                f"{'NULL' if minimum is None else float(minimum)} AS min_coverage, date "
                f"FROM events.{_q(et)} WHERE date IN ({_days_sql(days)}) GROUP BY date")

    parts = [covered(et, name, col, minimum) for et, cols in _present(conn, "events", compiled.event_types)
             for name, col, minimum in compiled.index_enrichment_columns(et) if col in cols]
    return _run(conn, "enrichment_coverage", parts, "date, event_type, enrichment, \"column\"")


def events_per_hour(conn, compiled: Compiled, days) -> pl.DataFrame:
    """Events per UTC hour of event time, per event type and day."""
    parts = []
    for et, cols in _present(conn, "events", compiled.event_types):
        time_field = compiled.sources[compiled.event_types[et]["source"]]["time_field"]
        if time_field not in cols:
            continue
        ts = _q(time_field)
        parts.append(f"SELECT {_s(et)} AS event_type, hour(epoch_ms({ts})) AS hour, count(*) AS events, date "
                     f"FROM events.{_q(et)} WHERE date IN ({_days_sql(days)}) GROUP BY ALL")
    return _run(conn, "events_per_hour", parts, "date, event_type, hour")


COMPUTE = {
    "sequence_lengths": sequence_lengths,
    "action_mix": action_mix,
    "late_arrival_lag": late_arrival_lag,
    "enrichment_coverage": enrichment_coverage,
}

# Views each analysis reads (kinds or kind.name), so an asset registers only those.
READS = {
    "sequence_lengths": ("sequences",),
    "action_mix": ("raw",),
    "late_arrival_lag": ("raw", "metrics"),
    "enrichment_coverage": ("events",),
}
