"""Dagster assets, generated from the compiled definitions: a thin shell around the engine.

For each source: ``raw/<source>`` and ``dead_letter/<source>``; for each lookup enrichment:
``enrichments/<name>``; for each event type: ``events/<event_type>``; for each feature:
``sequences/<feature>_v<version>``. Every asset is daily-partitioned; a backfill of any range runs
as one run that walks its days oldest first, so each day sees the corrected days before it.
"""


from datetime import date

import dagster as dg
import polars as pl

from seq_assets.core import quality, snapshots
from seq_assets.core.compiled import Compiled
from seq_assets.core.engine import LakeContext
from seq_assets.core.enrichers import _pred_cols
from seq_assets.orchestration.metadata import preview_md, table_metadata
from seq_assets.orchestration.partitions import DAILY, partition_days
from seq_assets.orchestration.resources import LakeResource

SINGLE_RUN = dg.BackfillPolicy.single_run()


def key(kind: str, name: str) -> dg.AssetKey:
    return dg.AssetKey([kind, name])


def _day_label(days: list[date]) -> str:
    return days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]}"


def raw_assets(compiled: Compiled, source: str) -> dg.AssetsDefinition:
    src = compiled.sources[source]

    @dg.multi_asset(
        name=f"raw__{source}",
        specs=[
            dg.AssetSpec(key("raw", source), group_name="raw", kinds={"delta", "polars"},
                         description=f"Every delivery of source {source!r}, decoded and typed, by event day. "
                                     f"Batch rows come from the landing files, stream rows from topic {src['topic']!r}."),
            dg.AssetSpec(key("dead_letter", source), group_name="raw", kinds={"delta"},
                         description=f"Records of {source!r} that could not be decoded, with the reason."),
        ],
        partitions_def=DAILY,
        backfill_policy=SINGLE_RUN,
        can_subset=False,
    )
    def _raw(context: dg.AssetExecutionContext, lake: LakeResource):
        engine = lake.engine()
        totals = {"rows": 0, "dead_letters": 0, "duplicates_dropped": 0, "files": 0}
        for day in partition_days(context):
            out = engine.write_raw_batch_day(source, day)
            for k in totals:
                totals[k] += out[k]
            context.log.info(f"{source} {day}: {out['rows']} rows, {out['dead_letters']} dead letters from {out['files']} files")
        days = partition_days(context)
        sample = engine.lake.read("raw", source, days=[days[-1]])
        yield dg.MaterializeResult(
            asset_key=key("raw", source),
            metadata=table_metadata(
                engine.lake.stats("raw", source),
                rows=dg.MetadataValue.int(totals["rows"]),
                duplicates_dropped=dg.MetadataValue.int(totals["duplicates_dropped"]),
                landing_files=dg.MetadataValue.int(totals["files"]),
                days=_day_label(days),
                preview=preview_md(sample if sample is not None else pl.DataFrame()),
            ),
        )
        yield dg.MaterializeResult(
            asset_key=key("dead_letter", source),
            metadata=table_metadata(engine.lake.stats("dead_letter", source),
                                    rows=dg.MetadataValue.int(totals["dead_letters"])),
        )

    return _raw


def enrichment_asset(compiled: Compiled, name: str) -> dg.AssetsDefinition:
    e = compiled.enrichments[name]

    @dg.asset(
        key=key("enrichments", name),
        group_name="enrichments",
        partitions_def=DAILY,
        backfill_policy=SINGLE_RUN,
        kinds={"delta"},
        description=f"Daily snapshot of {name} ({e['stage']} time): {e.get('description', '')}",
    )
    def _enrichment(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        engine = lake.engine()
        rows, carried = 0, []
        for day in partition_days(context):
            out = engine.write_enrichment_day(name, day)
            rows += out["rows"]
            if out["snapshot_day"] != day:
                carried.append(f"{day}<-{out['snapshot_day']}")
        return dg.MaterializeResult(metadata=table_metadata(
            engine.lake.stats("enrichments", name),
            rows=dg.MetadataValue.int(rows),
            carried_forward=", ".join(carried) or "none",
        ))

    return _enrichment


EVENT_CHECKS = ("schema_matches_definition", "event_id_unique", "complete_vs_raw", "enrichment_coverage")
SEQUENCE_CHECKS = ("schema_matches_definition", "sequence_invariants")


def _check_result(asset_key: dg.AssetKey, name: str, outcomes: list[tuple[date, quality.Outcome]]) -> dg.AssetCheckResult:
    """One result for a run's days: it passes when every day passes; metadata of the last day."""
    failed = [(d, o) for d, o in outcomes if not o.passed]
    last = outcomes[-1][1]
    meta = {k: v for k, v in last.metadata.items() if isinstance(v, (int, float))}
    meta["failed_days"] = ", ".join(str(d) for d, _ in failed) or "none"
    desc = "; ".join(f"{d}: {o.description}" for d, o in failed) if failed else last.description
    return dg.AssetCheckResult(asset_key=asset_key, check_name=name, passed=not failed, metadata=meta,
                               description=desc[:2000], severity=dg.AssetCheckSeverity.ERROR)


def events_assets(compiled: Compiled, source: str) -> dg.AssetsDefinition:
    event_types = compiled.event_types_of(source)
    specs, checks = [], []
    for et in event_types:
        lookups = [e for e in et["enrichments"] if compiled.enrichments[e]["kind"] == "lookup"]
        specs.append(dg.AssetSpec(
            key("events", et["name"]),
            group_name="events",
            kinds={"delta", "polars"},
            deps=[key("raw", source), *(key("enrichments", e) for e in lookups)],
            description=f"{et['name']}: {et.get('description', '')} Enriched with {', '.join(et['enrichments']) or 'nothing'}.",
            metadata={"definition_hash": et["hash"], "late_arrival_days": et["late_arrival_days"]},
        ))
        # Blocking: a broken events partition must not be assembled into sequences.
        checks += [dg.AssetCheckSpec(name, asset=key("events", et["name"]), blocking=True) for name in EVENT_CHECKS]

    @dg.multi_asset(
        name=f"events__{source}",
        specs=specs,
        check_specs=checks,
        partitions_def=DAILY,
        backfill_policy=SINGLE_RUN,
        can_subset=True,
    )
    def _events(context: dg.AssetExecutionContext, lake: LakeResource):
        engine = lake.engine()
        selected = [k.path[1] for k in context.selected_asset_keys]
        wanted_checks = {(c.asset_key.path[1], c.name) for c in context.selected_asset_check_keys}
        days = partition_days(context)
        landed = engine.index_batch_days(source, days, selected, LakeContext(engine.lake))
        yield from events_results(compiled, engine, source, selected, wanted_checks, days, landed)

    return _events


def events_results(compiled: Compiled, engine, source: str, selected: list[str], wanted_checks: set, days: list[date],
                   landed):
    """The materializations of ``events/`` and their in-body checks, for the days of ``landed`` (an
    iterable of days, or of ``(day, {event_type: events})`` as :meth:`Engine.index_batch_days`
    yields them, as each day's writes land).

    The event ids are read back from the table (uniqueness and completeness are checked on what is
    stored, against every delivery of the day in ``raw/``, read in the columns the filters need);
    the coverage, the users and the preview come from the frames the run wrote when ``landed``
    hands them over, instead of reading the day's enrichment columns back."""
    rows = {et: 0 for et in selected}
    src = compiled.sources[source]
    eid = src["event_id_field"]
    outcomes: dict[tuple[str, str], list] = {}
    last: dict[str, pl.DataFrame] = {}
    raw_columns = sorted({eid, *(c for et in selected for c in _pred_cols(compiled.event_types[et]["filter"]))})
    for item in landed:
        day, frames = item if isinstance(item, tuple) else (item, None)
        raw = engine.lake.read("raw", source, days=[day], columns=raw_columns)
        raw = raw if raw is not None else pl.DataFrame(schema={c: compiled.source_schema(source)[c] for c in raw_columns})
        late = quality.late_arrivals(engine.lake, source, day)  # the source's day: once, not per event type
        for et in selected:
            if frames is not None and et in frames:
                written = frames[et].filter(pl.col("date") == day)
                stored = engine.lake.read("events", et, days=[day], columns=[eid])
            else:
                written = engine.lake.read("events", et, days=[day])
                stored = written
            written = written if written is not None else pl.DataFrame(schema=compiled.event_schema(et))
            stored = stored if stored is not None else written.select(eid).head(0)
            rows[et] += stored.height
            last[et] = written
            outcomes.setdefault((et, "event_id_unique"), []).append((day, quality.uniqueness(stored, eid)))
            done = quality.completeness(compiled, et, raw, stored)
            done.metadata["late_arrivals"] = late
            outcomes.setdefault((et, "complete_vs_raw"), []).append((day, done))
            outcomes.setdefault((et, "enrichment_coverage"), []).append((day, quality.coverage(compiled, et, written)))
    for et in selected:
        outcomes[(et, "schema_matches_definition")] = [
            (days[-1], quality.table_schema_drift(engine.lake, "events", et, compiled.event_schema(et)))]
        df = last.get(et, pl.DataFrame())
        done = outcomes[(et, "complete_vs_raw")][-1][1].metadata
        cov = outcomes[(et, "enrichment_coverage")][-1][1].metadata
        yield dg.MaterializeResult(
            asset_key=key("events", et),
            metadata=table_metadata(
                engine.lake.stats("events", et),
                rows=dg.MetadataValue.int(rows[et]),
                users=dg.MetadataValue.int(df.get_column(src["user_field"]).n_unique() if df.height else 0),
                days=_day_label(days),
                completeness=dg.MetadataValue.float(float(done["completeness"])),
                late_arrivals=dg.MetadataValue.int(int(done.get("late_arrivals", 0))),
                **{k: dg.MetadataValue.float(v) for k, v in cov.items() if k.startswith("coverage_")},
                preview=preview_md(df.select(c for c, t in df.schema.items() if not isinstance(t, pl.List))),
            ),
            check_results=[_check_result(key("events", et), name, outcomes[(et, name)])
                           for name in EVENT_CHECKS if (et, name) in wanted_checks],
        )


def sequence_asset(compiled: Compiled, table: str) -> dg.AssetsDefinition:
    f = compiled.features[table]
    checks = sequence_checks(compiled, table)
    predecessor = f"{f['name']}_v{f['version'] - 1}"
    shadow = predecessor in compiled.features

    @dg.asset(
        key=key("sequences", table),
        check_specs=checks,
        group_name="sequences",
        partitions_def=DAILY,
        backfill_policy=SINGLE_RUN,
        kinds={"delta", "polars"},
        # The shadow check reads the predecessor's partition of the same day: build that first.
        deps=[key("events", et) for et in f["event_types"]] + ([key("sequences", predecessor)] if shadow else []),
        owners=[],
        tags={"lifecycle": f["lifecycle"]},
        description=(f"{f['name']} v{f['version']} ({f['lifecycle']}, owner {f['owner']}): last {f['max_length']} "
                     f"events of {', '.join(f['event_types'])} within {f['window_days']} days, as of the end of each day."),
        metadata={"output_hash": f["output_hash"], "max_length": f["max_length"], "window_days": f["window_days"]},
    )
    def _sequences(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        engine = lake.engine()
        days = partition_days(context)
        return sequence_result(compiled, engine, table, days, engine.sequences_days(table, days), context.log)

    return _sequences


def sequence_checks(compiled: Compiled, table: str) -> list[dg.AssetCheckSpec]:
    f = compiled.features[table]
    checks = [dg.AssetCheckSpec(name, asset=key("sequences", table), blocking=True) for name in SEQUENCE_CHECKS]
    predecessor = f"{f['name']}_v{f['version'] - 1}"
    if predecessor in compiled.features:
        # A new version is compared with the one it replaces, day by day (informational, not blocking).
        checks.append(dg.AssetCheckSpec(f"shadow_vs_v{f['version'] - 1}", asset=key("sequences", table), blocking=False,
                                        description=f"Shadow comparison against {predecessor}"))
    return checks


def sequence_result(compiled: Compiled, engine, table: str, days: list[date], built, log) -> dg.MaterializeResult:
    """The materialization of ``sequences/<table>`` and its checks for ``days``; ``built`` yields
    ``(day, sequences)`` or ``(day, sequences, SequencesWrite)`` as each day's write lands (the
    writes' changed users and bytes go into the metadata, per day)."""
    f = compiled.features[table]
    user = compiled.user_field(f)
    stored = compiled.stored_fields(f)
    predecessor = f"{f['name']}_v{f['version'] - 1}"
    shadow = f"shadow_vs_v{f['version'] - 1}" if predecessor in compiled.features else None
    seqs = pl.DataFrame()
    invariants, writes = [], {}
    checked = invariant_columns(f, stored)
    for day, seqs, *info in built:
        # What the readers see for the day (the full snapshot and the changes since), not the
        # partition; only the columns the invariants look at (not the enrichments' lists).
        written = snapshots.sequences_as_of(engine.lake, compiled, table, day, columns=checked)
        invariants.append((day, quality.sequence_invariants(f, written, day, user)))
        if info:
            writes[day] = info[0]
        log.info(f"{table} {day}: {seqs.height} users" + (
            f", {info[0].changed_users} changed, {info[0].rows} rows, {info[0].bytes_written:,} bytes"
            f"{' (full snapshot)' if info[0].full_snapshot else ''}{' (re-derived)' if info[0].rederived else ''}"
            if info else ""))
    drift = [(days[-1], quality.table_schema_drift(engine.lake, "sequences", table, compiled.sequence_schema(f)))]
    check_results = [_check_result(key("sequences", table), "sequence_invariants", invariants),
                     _check_result(key("sequences", table), "schema_matches_definition", drift)]
    if shadow:
        check_results.append(_shadow_result(engine.lake, compiled, predecessor, table, days, shadow))
    lengths = seqs.get_column(stored[0]).list.len() if seqs.height else pl.Series([0])
    return dg.MaterializeResult(asset_key=key("sequences", table), metadata=table_metadata(
        engine.lake.stats("sequences", table),
        users=dg.MetadataValue.int(seqs.height),
        events=dg.MetadataValue.int(int(lengths.sum())),
        mean_length=dg.MetadataValue.float(float(lengths.mean() or 0.0)),
        max_length=dg.MetadataValue.int(int(lengths.max() or 0)),
        users_at_cap=dg.MetadataValue.int(int((lengths >= f["max_length"]).sum())),
        **write_metadata(writes),
        preview=preview_md(seqs.select(user, "date", *stored[:4]).with_columns(
            pl.col(stored[:4]).list.head(3))) if seqs.height else "empty",
    ), check_results=check_results)


def invariant_columns(feature: dict, stored: list[str]) -> list[str]:
    """The stored fields :func:`quality.sequence_invariants` reads, in stored order: the ordering
    column, its tie-break and the dedup key (each where stored; a user's lists all have one
    length, so any of them gives the length check). The first stored field when none is."""
    o = feature["ordering"]
    wanted = {o["by"], o["tie_break"], *feature["dedup_key"]}
    return [c for c in stored if c in wanted] or stored[:1]


def write_metadata(writes: dict) -> dict:
    """What the day writes of a run wrote (``{day: SequencesWrite}``): changed users and bytes of the
    last day, their sums over the run, and a table per day (re-derived days included)."""
    if not writes:
        return {}
    last = writes[max(writes)]
    table = "| day | kind | changed users | rows | bytes |\n|---|---|---|---|---|\n" + "".join(
        f"| {d} | {'full' if w.full_snapshot else 'changes'}{' (re-derived)' if w.rederived else ''} | "
        f"{w.changed_users} | {w.rows} | {w.bytes_written} |\n" for d, w in sorted(writes.items()))
    return {
        "changed_users": dg.MetadataValue.int(last.changed_users),
        "bytes_written": dg.MetadataValue.int(last.bytes_written),
        "rows_written": dg.MetadataValue.int(last.rows),
        "full_snapshot": dg.MetadataValue.bool(last.full_snapshot),
        "changed_users_total": dg.MetadataValue.int(sum(w.changed_users for w in writes.values())),
        "bytes_written_total": dg.MetadataValue.int(sum(w.bytes_written for w in writes.values())),
        "days_rederived": dg.MetadataValue.int(sum(w.rederived for w in writes.values())),
        "writes": dg.MetadataValue.md(table),
    }


def _shadow_result(lake, compiled: Compiled, baseline: str, candidate: str, days: list[date],
                   name: str) -> dg.AssetCheckResult:
    from seq_assets.analysis.compare import compare, format_report

    have = lake.scan("sequences", baseline)
    base_days = set() if have is None else set(have.select(pl.col("date").unique()).collect().get_column("date").to_list())
    common = [d for d in days if d in base_days]
    if not common:
        return dg.AssetCheckResult(asset_key=key("sequences", candidate), check_name=name, passed=True,
                                   severity=dg.AssetCheckSeverity.WARN,
                                   description=f"{baseline} has no partition for {_day_label(days)}: nothing to compare")
    reports = compare(lake, baseline, candidate, common, compiled=compiled)
    last = reports[-1]
    return dg.AssetCheckResult(
        asset_key=key("sequences", candidate), check_name=name, passed=True, severity=dg.AssetCheckSeverity.WARN,
        metadata={**{k: dg.MetadataValue.float(v) for k, v in last.metadata().items()},
                  "report": dg.MetadataValue.md("```\n" + format_report(baseline, candidate, reports) + "\n```")},
        description=f"exact match {last.exact_match_rate:.1%}, overlap {last.mean_overlap:.1%} on {last.day}",
    )


def build_assets(compiled: Compiled, events_builder=None, sequences_builder=None) -> list[dg.AssetsDefinition]:
    """Every asset of the definitions; ``events_builder(compiled, source)`` and
    ``sequences_builder(compiled, table)`` replace :func:`events_assets` and :func:`sequence_asset`
    (``orchestration.buckets.build_assets`` builds them in user buckets)."""
    events_builder = events_builder or events_assets
    sequences_builder = sequences_builder or sequence_asset
    out: list[dg.AssetsDefinition] = []
    for source in compiled.sources:
        out.append(raw_assets(compiled, source))
    for name, e in compiled.enrichments.items():
        if e["kind"] == "lookup":
            out.append(enrichment_asset(compiled, name))
    for source in compiled.sources:
        if compiled.event_types_of(source):
            out.append(events_builder(compiled, source))
    for table in compiled.features:
        out.append(sequences_builder(compiled, table))
    return out
