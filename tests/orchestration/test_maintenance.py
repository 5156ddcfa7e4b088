"""The lake's upkeep in Dagster and the shell: the maintain_lake job and its schedules, the
files-per-partition checks, the sequences freshness checks and ``seqctl maintain``."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import polars as pl
import pytest

from seq_assets.core import quality
from seq_assets.core.days import day_start_ms, today_utc
from seq_assets.orchestration import maintenance as orch
from seq_assets.orchestration.checks import (
    build_sequence_checks,
    sequences_freshness_check,
)
from seq_assets.orchestration.resources import LakeResource
from seq_assets.storage import maintenance
from seq_assets.storage.lake import Lake

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
HOUR_MS = 3_600_000


def frame(day: date, ids: list[str]) -> pl.DataFrame:
    return pl.DataFrame({"event_id": ids, "n": list(range(len(ids))), "date": [day] * len(ids)})


@pytest.fixture
def lake(tmp_path, monkeypatch) -> Lake:
    """An empty lake for the demo definitions, which SEQ_LAKE_URI points at."""
    monkeypatch.delenv("SEQ_DEFS_DIR", raising=False)
    monkeypatch.delenv("SEQ_DEFS_MODULE", raising=False)
    monkeypatch.delenv("SEQ_VACUUM_RETENTION_HOURS", raising=False)
    monkeypatch.delenv("SEQ_LOG_RETENTION_HOURS", raising=False)
    monkeypatch.setenv("SEQ_LAKE_URI", str(tmp_path / "lake"))
    return Lake(str(tmp_path / "lake"))


def small_files(lake: Lake, kind: str, name: str, day: date, n: int) -> None:
    for i in range(n):
        lake.append(kind, name, frame(day, [f"{kind}-{day}-{i}-{j}" for j in range(3)]))


def run(lake: Lake, **config) -> dg.ExecuteInProcessResult:
    result = orch.maintain_lake_job.execute_in_process(
        run_config={"ops": {"maintain_tables": {"config": config}}}, resources={"lake": LakeResource(uri=lake.root)})
    assert result.success
    return result


def observations(result) -> dict[str, dict]:
    out = {}
    for e in result.all_events:
        if e.event_type_value == "ASSET_OBSERVATION":
            obs = e.event_specific_data.asset_observation
            out[obs.asset_key.to_user_string()] = obs.metadata
    return out


# ---- the job ----------------------------------------------------------------------------------


def test_the_job_maintains_every_table_and_records_its_figures(lake):
    small_files(lake, "events", "pin_click", D2, 15)
    small_files(lake, "raw", "user_engagements", D2, 12)
    lake.replace_partitions("sequences", "engagements_v1", frame(D1, ["u1"]), [D1])
    before = lake.read("events", "pin_click").sort("event_id")

    dry = observations(run(lake, scope="full", today="2026-03-03", dry_run=True))
    assert maintenance.partition_file_counts(lake, "events", "pin_click") == {D2: 15}  # nothing changed
    assert dry["events/pin_click"]["files_after"].value == 1 and dry["events/pin_click"]["dry_run"].value is True

    seen = observations(run(lake, scope="full", today="2026-03-03"))
    assert set(seen) == {"events/pin_click", "raw/user_engagements", "sequences/engagements_v1"}  # the tables there are
    m = seen["events/pin_click"]
    for k in ("files_before", "files_after", "bytes_before", "bytes_after", "files_deleted", "bytes_reclaimed",
              "partitions_dropped", "files_compacted", "max_partition_files_after"):
        assert isinstance(m[k], dg.IntMetadataValue), k
    assert (m["files_before"].value, m["files_after"].value, m["files_compacted"].value) == (15, 1, 15)
    assert m["scope"].value == "full" and m["dry_run"].value is False
    assert seen["raw/user_engagements"]["files_after"].value == 1
    assert seen["sequences/engagements_v1"]["files_compacted"].value == 0
    assert maintenance.partition_file_counts(lake, "events", "pin_click") == {D2: 1}
    assert lake.read("events", "pin_click").sort("event_id").equals(before)
    # Retention from the definition: a sequences snapshot 40 days old goes (35 are kept).
    old = date(2026, 3, 3) - timedelta(days=40)
    lake.replace_partitions("sequences", "engagements_v1", frame(old, ["u0"]), [old])
    seen = observations(run(lake, scope="full", today="2026-03-03", tables=["sequences/engagements_v1"]))
    assert set(seen) == {"sequences/engagements_v1"} and seen["sequences/engagements_v1"]["partitions_dropped"].value == 1
    assert lake.read("sequences", "engagements_v1")["date"].to_list() == [D1]


def test_todays_scope_compacts_the_days_the_stream_still_writes_into(lake, compiled):
    horizon = compiled.horizon_days()
    closed = D2 - timedelta(days=horizon + 1)  # the day before the late horizon
    for day in (closed, D1, D2):
        small_files(lake, "events", "pin_save", day, 12)
    seen = observations(run(lake, scope="today", today=D2.isoformat()))
    assert maintenance.partition_file_counts(lake, "events", "pin_save") == {closed: 12, D1: 1, D2: 1}
    assert seen["events/pin_save"]["files_compacted"].value == 24 and seen["events/pin_save"]["files_deleted"].value == 0


def test_schedules_run_the_job_for_their_day_and_are_on_by_default():
    at = datetime(2026, 3, 2, 1, 30, tzinfo=timezone.utc)
    for schedule, scope in ((orch.compact_streamed_days, "today"), (orch.maintain_lake_daily, "full")):
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
        req = schedule(dg.build_schedule_context(scheduled_execution_time=at))
        assert req.run_config == {"ops": {"maintain_tables": {"config": {"scope": scope, "today": "2026-03-02"}}}}
    assert orch.compact_streamed_days.cron_schedule == "*/5 * * * *"
    assert orch.maintain_lake_daily.cron_schedule == "30 1 * * *"  # after close_days (00:30)


def test_the_code_location_has_the_job_schedules_and_checks(lake):
    from seq_assets.definitions import defs
    from seq_assets.settings import load_compiled

    d = defs()
    assert d.resolve_job_def("maintain_lake") is not None
    assert {"compact_streamed_days", "maintain_lake_daily"} <= {s.name for s in d.schedules}
    assert "compact_on_file_count" in {s.name for s in d.sensors}
    graph = d.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    for key in graph.get_all_asset_keys():
        assert (key.to_user_string(), "files_per_partition") in checks, key
    compiled = load_compiled()
    for table in compiled.features:
        assert (f"sequences/{table}", "freshness") in checks
    for c in build_sequence_checks(compiled):
        (spec,) = c.check_specs
        assert spec.blocking and "6h" in spec.description
    batch = d.resolve_job_def("daily_batch").asset_layer.asset_graph.asset_check_keys
    assert {(k.asset_key.to_user_string(), k.name) for k in batch} >= {(f"sequences/{t}", "freshness")
                                                                      for t in compiled.features}


# ---- the count-triggered compaction ----------------------------------------------------------


@pytest.mark.parametrize("project", ["demo", "ratings"])
def test_the_file_count_sensor_compacts_open_days_past_the_trigger_one_run_at_a_time(lake, monkeypatch, project):
    from seq_assets.settings import load_compiled

    if project == "ratings":
        from tests.support.ratings import MODULE

        monkeypatch.setenv("SEQ_DEFS_MODULE", MODULE)
    compiled = load_compiled()
    source = next(iter(compiled.sources))
    kind, name = ("raw", source)  # every project has a raw/ table per source
    label = f"{kind}/{name}"
    trigger, today = maintenance.COMPACT_TRIGGER_FILES, today_utc()
    late = today - timedelta(days=compiled.horizon_days())  # the oldest day still inside the horizon
    closed = late - timedelta(days=1)
    resource = LakeResource(uri=lake.root)
    instance = dg.DagsterInstance.ephemeral()
    sensor = orch.compact_on_file_count
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING

    def evaluate(cursor=None):
        return sensor(dg.build_sensor_context(instance=instance, resources={"lake": resource}, cursor=cursor))

    small_files(lake, kind, name, today, trigger - 1)
    small_files(lake, kind, name, closed, trigger + 5)  # past the horizon: the daily run's
    assert isinstance(evaluate(), dg.SkipReason)
    small_files(lake, kind, name, today, 1)
    small_files(lake, kind, name, late, trigger)
    result = evaluate()
    (req,) = result.run_requests
    config = req.run_config["ops"]["maintain_tables"]["config"]
    assert config == {"scope": "today", "today": today.isoformat(), "tables": [label]}
    assert req.tags[orch.MAINTENANCE_TAG] == "count"
    cursor = json.loads(result.cursor)
    assert cursor["tables"] == {label: {late.isoformat(): trigger, today.isoformat(): trigger}}
    assert "nothing new" in evaluate(result.cursor).skip_message  # the same files ask for no second run

    # While that run has not finished, no other is asked for.
    pending = instance.create_run_for_job(orch.maintain_lake_job, run_config=req.run_config, tags=req.tags)
    small_files(lake, kind, name, today, 1)
    assert "still compacting" in evaluate(result.cursor).skip_message
    instance.report_run_failed(pending)
    again = evaluate(result.cursor)
    assert again.run_requests[0].run_key != req.run_key and json.loads(again.cursor)["requests"] == 2
    run(lake, **config)
    counts = maintenance.partition_file_counts(lake, kind, name)
    assert counts[today] == 1 and counts[late] == 1 and counts[closed] == trigger + 5
    assert isinstance(evaluate(again.cursor), dg.SkipReason)


# ---- files per partition ----------------------------------------------------------------------


def test_the_files_per_partition_check_fails_past_its_bound_and_passes_after_compaction(lake, monkeypatch):
    assert orch.MAX_FILES_PER_PARTITION == 50
    monkeypatch.setattr(orch, "MAX_FILES_PER_PARTITION", 10)
    small_files(lake, "events", "pin_click", D1, 12)
    small_files(lake, "events", "pin_click", D2, 3)
    check = orch.files_per_partition_check("events", "pin_click")
    out = check(lake=LakeResource(uri=lake.root))
    assert not out.passed and out.severity == dg.AssetCheckSeverity.WARN
    assert out.metadata["max_files_per_partition"].value == 12 and out.metadata["bound"].value == 10
    assert out.metadata["worst_day"].value == D1.isoformat() and "12 files in 2026-03-01" in out.description
    run(lake, scope="full", today=D2.isoformat())
    out = check(lake=LakeResource(uri=lake.root))
    assert out.passed and out.metadata["max_files_per_partition"].value == 3  # today, under the file count
    assert check(lake=LakeResource(uri=lake.root + "_none")).passed  # no table yet: nothing to bound


# ---- sequences freshness ----------------------------------------------------------------------


def test_sequences_freshness_wants_yesterday_by_the_hours_its_definition_allows(lake, compiled):
    f = compiled.features["engagements_v1"]
    assert f["freshness_hours"] == 6
    midnight = day_start_ms(date(2026, 3, 3))
    check = quality.sequences_freshness
    missing = check(f, lake, "engagements_v1", now_ms=midnight + 7 * HOUR_MS)
    assert not missing.passed and "no partition" in missing.description
    lake.replace_partitions("sequences", "engagements_v1", frame(D1, ["u"]), [D1])
    early = check(f, lake, "engagements_v1", now_ms=midnight + 5 * HOUR_MS)  # 2026-03-02 not due yet
    assert early.passed and early.metadata["hours_late"] == 0
    late = check(f, lake, "engagements_v1", now_ms=midnight + 7 * HOUR_MS)
    assert not late.passed and late.metadata["hours_late"] == pytest.approx(1.0)
    assert "2026-03-02 was due 6h after it ended" in late.description
    lake.replace_partitions("sequences", "engagements_v1", frame(D2, ["u"]), [D2])
    ok = check(f, lake, "engagements_v1", now_ms=midnight + 7 * HOUR_MS)
    assert ok.passed and ok.metadata["newest_day_age_hours"] == pytest.approx(7.0)
    other = dict(f, freshness_hours=12)  # another definition allows more
    lake_without = Lake(lake.root + "_b")
    lake_without.replace_partitions("sequences", "engagements_v1", frame(D1, ["u"]), [D1])
    assert check(other, lake_without, "engagements_v1", now_ms=midnight + 11 * HOUR_MS).passed


def test_the_sequences_freshness_check_fails_when_yesterday_is_missing_and_passes_when_present(lake, compiled):
    today = today_utc()
    check = sequences_freshness_check(compiled, "saves_v1")
    (spec,) = check.check_specs
    assert spec.blocking
    lake.replace_partitions("sequences", "saves_v1", frame(today - timedelta(days=3), ["u"]), [today - timedelta(days=3)])
    out = check(lake=LakeResource(uri=lake.root))
    assert not out.passed and out.severity == dg.AssetCheckSeverity.ERROR
    assert out.metadata["hours_late"].value > 0
    yesterday = today - timedelta(days=1)
    lake.replace_partitions("sequences", "saves_v1", frame(yesterday, ["u"]), [yesterday])
    out = check(lake=LakeResource(uri=lake.root))
    assert out.passed, out.description
    assert out.metadata["freshness_hours"].value == 6


# ---- settings and the shell -------------------------------------------------------------------


def test_the_vacuum_retention_setting(monkeypatch):
    from seq_assets import settings

    monkeypatch.delenv("SEQ_VACUUM_RETENTION_HOURS", raising=False)
    assert settings.vacuum_retention_hours() == 168
    monkeypatch.setenv("SEQ_VACUUM_RETENTION_HOURS", "72")
    assert settings.vacuum_retention_hours() == 72
    for bad in ("a week", "-1", "1.5"):
        monkeypatch.setenv("SEQ_VACUUM_RETENTION_HOURS", bad)
        with pytest.raises(ValueError, match="SEQ_VACUUM_RETENTION_HOURS"):
            settings.vacuum_retention_hours()


def test_the_log_retention_setting_reaches_the_tables_a_run_maintains(monkeypatch, lake):
    from seq_assets import settings

    monkeypatch.delenv("SEQ_LOG_RETENTION_HOURS", raising=False)
    assert settings.log_retention_hours() == maintenance.LOG_RETENTION_HOURS == 2
    for bad in ("two", "0", "1.5"):
        monkeypatch.setenv("SEQ_LOG_RETENTION_HOURS", bad)
        with pytest.raises(ValueError, match="SEQ_LOG_RETENTION_HOURS"):
            settings.log_retention_hours()
    monkeypatch.setenv("SEQ_LOG_RETENTION_HOURS", "6")
    assert settings.log_retention_hours() == 6
    from seq_assets.cli import main

    small_files(lake, "events", "pin_click", D1, 3)

    def hours() -> set[str]:
        conf = lake.table("events", "pin_click").metadata().configuration
        return {conf["delta.logRetentionDuration"]}

    assert main(["maintain", "--scope", "full", "--today", "2026-03-02"]) == 0  # the shell
    assert hours() == {"interval 6 hours"}
    monkeypatch.setenv("SEQ_LOG_RETENTION_HOURS", "8")
    run(lake, scope="full", today="2026-03-02")  # the maintain_lake job
    assert hours() == {"interval 8 hours"}


def test_seqctl_maintain_dry_run_prints_the_figures_and_changes_nothing(lake, capsys):
    from seq_assets.cli import main

    small_files(lake, "events", "pin_click", D1, 14)
    version = lake.table("events", "pin_click").version()
    assert main(["maintain", "--dry-run", "--today", "2026-03-02"]) == 0
    out = capsys.readouterr().out
    assert "dry run, nothing changed" in out and "vacuum retention 168h" in out
    line = next(line for line in out.splitlines() if line.startswith("events/pin_click"))
    assert line.split()[1:3] == ["14", "1"]  # files before, after
    assert "files_compacted" in out and "bytes_reclaimed" in out and "(1 row)" in out
    assert lake.table("events", "pin_click").version() == version

    assert main(["maintain", "--dry-run", "--json", "--table", "events/pin_click", "--today", "2026-03-02"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["table"] == "events/pin_click" and report["dry_run"] is True
    assert (report["files_before"], report["files_after"], report["files_compacted"]) == (14, 1, 14)
    assert main(["maintain", "--table", "events/nope"]) == 2
    assert "unknown table(s) events/nope" in capsys.readouterr().err

    assert main(["maintain", "--table", "events/pin_click", "--today", "2026-03-02"]) == 0
    assert maintenance.partition_file_counts(lake, "events", "pin_click") == {D1: 1}
