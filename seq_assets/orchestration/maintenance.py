"""The lake's upkeep in Dagster: the ``maintain_lake`` job on two schedules and a sensor, and a
files-per-partition check on every table asset. A thin shell around :mod:`seq_assets.storage.maintenance`.

- ``compact_on_file_count`` (a sensor, every 30 s): as soon as a day the stream still writes into
  (today, or a late day inside the late horizon) of a streamed table has ``COMPACT_TRIGGER_FILES``
  files, a run compacts those tables' open days, incrementally; one such run at a time.
- ``compact_streamed_days`` (every 5 minutes): the same compaction for every streamed table whose
  open days have ``COMPACT_MIN_FILES`` small files.
- ``maintain_lake_daily`` (01:30 UTC, after ``close_days``): retention, compaction (yesterday once
  more, and any day past the file count), vacuum and log checkpoints on every table.

Each run records per table an observation of the table's asset with the figures as numbers
(files and bytes before and after, files compacted, days dropped, files deleted, bytes
reclaimed...), so the asset's page plots them over time.
"""

import json
import time
from datetime import date

import dagster as dg

from seq_assets import settings
from seq_assets.analysis.queries import TABLES as ANALYSIS_TABLES
from seq_assets.core.compiled import Compiled
from seq_assets.core.days import today_utc
from seq_assets.orchestration.assets import key
from seq_assets.orchestration.resources import LakeResource
from seq_assets.storage import maintenance
from seq_assets.storage.lake import Lake
from seq_assets.storage.sql import format_table

# The check's bound. The stream adds up to 12 files a minute to a day (a micro-batch every 5 s);
# compact_on_file_count compacts a day at COMPACT_TRIGGER_FILES (32) within a minute or so, and an
# incrementally compacted day keeps about log2(its rounds) bigger files: past 50, compaction fell behind.
MAX_FILES_PER_PARTITION = 50
COUNT_SENSOR_INTERVAL_SECONDS = 30
MAINTENANCE_TAG = "seq/maintenance"
_IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
EVERY_FIFTEEN_MINUTES = dg.AutomationCondition.cron_tick_passed("*/15 * * * *")


class MaintainConfig(dg.Config):
    scope: str = "full"  # "today": compact the streamed days still written into; "full": everything, every table
    dry_run: bool = False  # compute what would happen, change nothing
    tables: list[str] = []  # KIND/NAME of the tables to maintain; empty: every table
    today: str = ""  # YYYY-MM-DD retention counts back from; empty: today (UTC)


def report_metadata(report: maintenance.TableReport, scope: str) -> dict:
    return {**{k: dg.MetadataValue.int(v) for k, v in report.figures().items()},
            "scope": scope, "dry_run": dg.MetadataValue.bool(report.dry_run),
            "settling_days": ", ".join(report.settling) or "none"}


@dg.op(out={}, description="Compaction, retention, vacuum and log checkpoints over the lake's tables.")
def maintain_tables(context: dg.OpExecutionContext, config: MaintainConfig, lake: LakeResource):
    lk, compiled = lake.lake(), lake.compiled()
    specs = maintenance.select_tables(maintenance.lake_tables(compiled, lk), config.tables)
    today = date.fromisoformat(config.today) if config.today else today_utc()
    reports = []
    for spec in specs:
        report = maintenance.maintain_table(
            lk, spec, scope=config.scope, today=today, now_ms=int(time.time() * 1000),
            retention_hours=settings.vacuum_retention_hours(), horizon_days=compiled.horizon_days(),
            dry_run=config.dry_run, log_retention_hours=settings.log_retention_hours())
        if not report.exists:
            continue
        reports.append(report)
        if report.settling:
            context.log.info(f"{spec.label}: left {', '.join(report.settling)} alone while a partition replace settles")
        yield dg.AssetObservation(asset_key=key(spec.kind, spec.name), metadata=report_metadata(report, config.scope),
                                  description=f"maintenance ({config.scope}{', dry run' if config.dry_run else ''})")
    context.log.info(f"maintenance ({config.scope}) of {len(reports)} tables, today {today}:\n"
                     + format_table(maintenance.report_frame(reports), max_rows=len(reports) or 1))


@dg.job(name="maintain_lake", executor_def=dg.in_process_executor,
        description="Keeps the lake fast and bounded: compaction, retention, vacuum, log checkpoints.")
def maintain_lake_job():
    maintain_tables()


def _request(scope: str, context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    today = context.scheduled_execution_time.date().isoformat()
    return dg.RunRequest(run_config={"ops": {"maintain_tables": {"config": {"scope": scope, "today": today}}}},
                         tags={MAINTENANCE_TAG: scope})


@dg.schedule(job=maintain_lake_job, cron_schedule="*/5 * * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description=f"Compacts, incrementally, the days the stream still writes into (today and the late "
                         f"horizon) of every table it writes, once a day has {maintenance.COMPACT_MIN_FILES} "
                         "small files.")
def compact_streamed_days(context: dg.ScheduleEvaluationContext):
    return _request("today", context)


@dg.schedule(job=maintain_lake_job, cron_schedule="30 1 * * *", execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.RUNNING,
             description="After close_days: retention, compaction of yesterday and of any day past the file count, "
                         "vacuum and log checkpoints, on every table.")
def maintain_lake_daily(context: dg.ScheduleEvaluationContext):
    return _request("full", context)


def tables_past_trigger(lk: Lake, compiled: Compiled, today: date) -> dict[str, dict[date, int]]:
    """The streamed tables (``KIND/NAME``) with an open day at ``COMPACT_TRIGGER_FILES`` files or
    more, and those days' file counts."""
    out = {}
    for spec in maintenance.lake_tables(compiled, lk):
        if spec.kind in maintenance.NOT_COMPACTED:
            continue
        days = maintenance.days_past_trigger(lk, spec.kind, spec.name, today, compiled.horizon_days())
        if days:
            out[spec.label] = days
    return out


def count_triggered_config(today: date, over: dict[str, dict[date, int]]) -> dict:
    """The ``maintain_tables`` config of the run ``compact_on_file_count`` asks for."""
    return {"scope": "today", "today": today.isoformat(), "tables": sorted(over)}


@dg.sensor(job=maintain_lake_job, minimum_interval_seconds=COUNT_SENSOR_INTERVAL_SECONDS,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description=f"Compacts a streamed table's open days (today and the late horizon) as soon as one has "
                       f"{maintenance.COMPACT_TRIGGER_FILES} files; one such run at a time.")
def compact_on_file_count(context: dg.SensorEvaluationContext, lake: LakeResource):
    today = today_utc()
    over = tables_past_trigger(lake.lake(), lake.compiled(), today)
    if not over:
        return dg.SkipReason(f"no open day of a streamed table has {maintenance.COMPACT_TRIGGER_FILES} files")
    running = context.instance.get_run_records(
        dg.RunsFilter(job_name=maintain_lake_job.name, statuses=_IN_FLIGHT, tags={MAINTENANCE_TAG: "count"}), limit=1)
    if running:
        return dg.SkipReason(f"run {running[0].dagster_run.run_id} is still compacting")
    tables = sorted(over)
    counts = {t: {d.isoformat(): n for d, n in sorted(over[t].items())} for t in tables}
    last = json.loads(context.cursor) if context.cursor else {}
    if last.get("tables") == counts:  # the last run saw these very files and could not do better
        return dg.SkipReason(f"nothing new since run request {last.get('requests')}")
    requests = int(last.get("requests", 0)) + 1  # the cursor numbers the requests: run keys never repeat
    worst = max(((t, d, n) for t in tables for d, n in over[t].items()), key=lambda x: x[2])
    return dg.SensorResult(
        run_requests=[dg.RunRequest(
            run_key=f"compact-on-file-count-{requests}",
            run_config={"ops": {"maintain_tables": {"config": count_triggered_config(today, over)}}},
            tags={MAINTENANCE_TAG: "count", "seq/most_files": f"{worst[0]} {worst[1]}: {worst[2]}"})],
        cursor=json.dumps({"requests": requests, "today": today.isoformat(), "tables": counts}))


def files_per_partition_check(kind: str, name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=key(kind, name), name="files_per_partition", blocking=False,
                    description=f"The most files of any day of {kind}/{name}, against {MAX_FILES_PER_PARTITION} "
                                "(compaction keeps it far below).",
                    automation_condition=EVERY_FIFTEEN_MINUTES)
    def _files(lake: LakeResource) -> dg.AssetCheckResult:
        counts = maintenance.partition_file_counts(lake.lake(), kind, name)
        worst = max(counts, key=counts.get) if counts else None
        most = counts[worst] if worst else 0
        return dg.AssetCheckResult(
            passed=most <= MAX_FILES_PER_PARTITION, severity=dg.AssetCheckSeverity.WARN,
            description=f"{most} files in {worst} (bound {MAX_FILES_PER_PARTITION})" if worst else "no partitions",
            metadata={"max_files_per_partition": most, "bound": MAX_FILES_PER_PARTITION, "partitions": len(counts),
                      "files": sum(counts.values()), "worst_day": str(worst or "none")})

    return _files


def table_checks(compiled: Compiled) -> list[dg.AssetChecksDefinition]:
    """A files-per-partition check on every table that is an asset."""
    tables = [(s.kind, s.name) for s in maintenance.lake_tables(compiled)]
    tables += [("analysis", t) for t in ANALYSIS_TABLES]
    return [files_per_partition_check(k, n) for k, n in tables]


def maintenance_defs(compiled: Compiled) -> dg.Definitions:
    return dg.Definitions(jobs=[maintain_lake_job], schedules=[compact_streamed_days, maintain_lake_daily],
                          sensors=[compact_on_file_count], asset_checks=table_checks(compiled))
