"""Analysis assets: daily summaries of the lake computed with DuckDB, stored as Delta.

``analysis/<name>``, each partitioned by ``date`` like every other table, computed through the
``duckdb`` resource (dagster-duckdb) over the lake views of ``seq_assets.sql``:

- ``analysis/sequence_lengths``: users per sequence length, per feature and day.
- ``analysis/action_mix``: events per action, surface and country (bots excluded), with the share
  of each action within its surface and country, for the sources that have those fields (the
  demo's); empty partitions for a project without them.
- ``analysis/late_arrival_lag``: events per source, day, origin and lag in days between the event
  day and the day it was delivered (``arrival_date``), with stream lag percentiles in seconds.
- ``analysis/enrichment_coverage``: share of events carrying each index-time enrichment column,
  per event type and day, against the enrichment's ``min_coverage``.

The queries are plain functions of a DuckDB connection in ``seq_assets.analysis.queries`` (``seqctl
report`` uses them too) and take every column name from the compiled definitions, so the assets work
for any project; they add the resource, the Delta write and the metadata the Dagster UI shows and
plots.
"""


import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource

from seq_assets.analysis.queries import (
    COMPUTE,
    READS,
    SCHEMAS,
    TABLES,
    action_mix_sources,
    late_events_recorded,
    stream_lag,
)
from seq_assets.core.compiled import Compiled
from seq_assets.orchestration.metadata import preview_md, table_metadata
from seq_assets.orchestration.partitions import DAILY, partition_days
from seq_assets.orchestration.resources import LakeResource
from seq_assets.storage.sql import register_views

GROUP = "analysis"
SINGLE_RUN = dg.BackfillPolicy.single_run()


# ---- metadata: numbers the UI plots across partitions, and a markdown table ---------------------


def _md(df: pl.DataFrame, rows: int = 20) -> dg.MetadataValue:
    return preview_md(df, rows=rows) if df.height else dg.MetadataValue.md("no rows")


def _f(v) -> dg.MetadataValue:
    return dg.MetadataValue.float(float(v) if v is not None else 0.0)


def _i(v) -> dg.MetadataValue:
    return dg.MetadataValue.int(int(v or 0))


def summarize_sequence_lengths(df: pl.DataFrame, compiled: Compiled) -> dict:
    md: dict = {}
    rows = []
    for table in compiled.features:
        d = df.filter(pl.col("feature") == table)
        users = int(d.get_column("users").sum() or 0)
        lengths = d.select(pl.col("length").repeat_by("users").explode(empty_as_null=False)).get_column("length") \
            if users else pl.Series("length", [], dtype=pl.Int64)
        stats = {
            "users": users,
            "mean_length": float(lengths.mean() or 0.0) if users else 0.0,
            "p50_length": float(lengths.quantile(0.5) or 0.0) if users else 0.0,
            "p90_length": float(lengths.quantile(0.9) or 0.0) if users else 0.0,
            "max_length": int(lengths.max() or 0) if users else 0,
            "users_at_cap": int(d.filter(pl.col("length") >= compiled.features[table]["max_length"])
                                .get_column("users").sum() or 0),
        }
        md[f"{table}_users"] = _i(stats["users"])
        md[f"{table}_mean_length"] = _f(stats["mean_length"])
        md[f"{table}_p50_length"] = _f(stats["p50_length"])
        md[f"{table}_p90_length"] = _f(stats["p90_length"])
        md[f"{table}_max_length"] = _i(stats["max_length"])
        md[f"{table}_users_at_cap"] = _i(stats["users_at_cap"])
        rows.append({"feature": table, **{k: round(v, 2) if isinstance(v, float) else v for k, v in stats.items()}})
    md["summary"] = _md(pl.DataFrame(rows))
    return md


def summarize_action_mix(df: pl.DataFrame, compiled: Compiled) -> dict:
    total = int(df.get_column("events").sum() or 0)
    by_action = df.group_by("action").agg(pl.col("events").sum()).sort("events", descending=True)
    md: dict = {"events": _i(total), "surfaces": _i(df.get_column("surface").n_unique()),
                "countries": _i(df.get_column("country").n_unique())}
    for action, n in by_action.iter_rows():
        md[f"share_{action}"] = _f(n / total if total else 0.0)
    pivot = (df.group_by("surface", "action").agg(pl.col("events").sum())
             .with_columns((pl.col("events") / pl.col("events").sum().over("surface")).round(3).alias("share"))
             .sort("surface", "action")
             .pivot(on="action", index="surface", values="share")) if df.height else df
    md["share_by_surface"] = _md(pivot)
    return md


def summarize_late_arrival_lag(df: pl.DataFrame, recorded: pl.DataFrame, stream: pl.DataFrame | None = None) -> dict:
    total = int(df.get_column("events").sum() or 0)
    late = int(df.filter(pl.col("lag_days") >= 1).get_column("events").sum() or 0)
    stream = stream if stream is not None and stream.height else None
    md = {
        "events": _i(total),
        "late_events": _i(late),
        "late_share": _f(late / total if total else 0.0),
        "max_lag_days": _i(df.get_column("lag_days").max() if df.height else 0),
        "stream_events": _i(stream.get_column("events")[0] if stream is not None else 0),
        "stream_p50_lag_s": _f(stream.get_column("p50_lag_s")[0] if stream is not None else 0.0),
        "stream_p99_lag_s": _f(stream.get_column("p99_lag_s")[0] if stream is not None else 0.0),
        "stream_late_events_recorded": _i(recorded.get_column("late_events").sum() if recorded.height else 0),
    }
    table = (df.group_by("source", "origin", "lag_days").agg(pl.col("events").sum()).sort("source", "origin", "lag_days")
             if df.height else df)
    md["lag_distribution"] = _md(table)
    return md


def summarize_enrichment_coverage(df: pl.DataFrame) -> dict:
    per_col = (df.group_by("enrichment", "column").agg(
        pl.col("events").sum(), pl.col("covered").sum(), pl.col("min_coverage").first())
        .with_columns((pl.col("covered") / pl.col("events")).alias("coverage")).sort("enrichment", "column"))
    md: dict = {f"coverage_{c}": _f(v) for c, v in per_col.select("column", "coverage").iter_rows()}
    md["below_min_coverage"] = _i(df.filter(pl.col("coverage") < pl.col("min_coverage")).height)
    md["coverage_table"] = _md(df.select("event_type", "column", "events", pl.col("coverage").round(4), "min_coverage"))
    return md


def summarize(name: str, df: pl.DataFrame, compiled: Compiled, conn=None, days=None) -> dict:
    if name == "sequence_lengths":
        return summarize_sequence_lengths(df, compiled)
    if name == "action_mix":
        return summarize_action_mix(df, compiled)
    if name == "late_arrival_lag":
        if conn is None:
            return summarize_late_arrival_lag(df, pl.DataFrame(schema=SCHEMAS["late_events_recorded"]))
        return summarize_late_arrival_lag(df, late_events_recorded(conn, days), stream_lag(conn, compiled, days))
    return summarize_enrichment_coverage(df)


# ---- assets --------------------------------------------------------------------------------------


DESCRIPTIONS = {
    "sequence_lengths": "Users per sequence length, per feature and day (DuckDB over sequences/).",
    "action_mix": "Events per action within each surface and country, bots excluded (DuckDB over raw/).",
    "late_arrival_lag": "Events per delivery lag in days, per source, day and origin; stream lag percentiles "
                        "in seconds (DuckDB over raw/; metadata adds metrics/late_arrivals).",
    "enrichment_coverage": "Share of events carrying each index-time enrichment column, per event type and "
                           "day, against min_coverage (DuckDB over events/).",
}


def _deps(compiled: Compiled, name: str) -> list[dg.AssetKey]:
    if name == "sequence_lengths":
        return [dg.AssetKey(["sequences", t]) for t in compiled.features]
    if name == "action_mix":
        return [dg.AssetKey(["raw", s]) for s in action_mix_sources(compiled)]
    if name == "late_arrival_lag":
        return [dg.AssetKey(["raw", s]) for s in compiled.sources]
    return [dg.AssetKey(["events", et]) for et in compiled.event_types]


def analysis_asset(compiled: Compiled, name: str) -> dg.AssetsDefinition:
    compute = COMPUTE[name]

    @dg.asset(
        key=dg.AssetKey([GROUP, name]),
        group_name=GROUP,
        partitions_def=DAILY,
        backfill_policy=SINGLE_RUN,
        kinds={"delta", "duckdb"},
        deps=_deps(compiled, name),
        description=DESCRIPTIONS[name],
    )
    def _analysis(context: dg.AssetExecutionContext, lake: LakeResource, duckdb: DuckDBResource) -> dg.MaterializeResult:
        days = partition_days(context)
        lk = lake.lake()
        with duckdb.get_connection() as conn:
            register_views(conn, lk, tables=READS[name])
            df = compute(conn, compiled, days)
            last = df.filter(pl.col("date") == days[-1])
            extra = summarize(name, last, compiled, conn=conn, days=[days[-1]])
        lk.replace_partitions(GROUP, name, df, days)
        context.log.info(f"analysis/{name}: {df.height} rows for {len(days)} day(s)")
        return dg.MaterializeResult(metadata=table_metadata(
            lk.stats(GROUP, name),
            rows=dg.MetadataValue.int(df.height),
            days=days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]}",
            **extra,
        ))

    return _analysis


def build_analysis_assets(compiled: Compiled) -> list[dg.AssetsDefinition]:
    return [analysis_asset(compiled, name) for name in TABLES]


def duckdb_resource() -> DuckDBResource:
    """In memory: the views are registered on each connection, the results go to Delta."""
    return DuckDBResource(database=":memory:")


def analysis_defs(compiled: Compiled) -> dg.Definitions:
    """The analysis assets and the ``duckdb`` resource, merged into the code location."""
    return dg.Definitions(assets=build_analysis_assets(compiled), resources={"duckdb": duckdb_resource()})
