"""Asset checks that are not tied to one materialization: freshness of every events/ table and of
every sequences/ table.

They run from the UI ("Execute checks"), every few minutes by their automation condition, and
record the lag as numeric metadata so the UI plots it over time. A sequences/ freshness check is
blocking: in a run that builds the table, a late snapshot stops the analysis assets after it.
"""

import time

import dagster as dg

from seq_assets.core import quality
from seq_assets.core.compiled import Compiled
from seq_assets.orchestration.assets import key
from seq_assets.orchestration.resources import LakeResource

EVERY_FIVE_MINUTES = dg.AutomationCondition.cron_tick_passed("*/5 * * * *")
EVERY_FIFTEEN_MINUTES = dg.AutomationCondition.cron_tick_passed("*/15 * * * *")


def _result(out: quality.Outcome, severity: dg.AssetCheckSeverity) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=out.passed, description=out.description, severity=severity,
                               metadata={k: dg.MetadataValue.float(float(v)) for k, v in out.metadata.items()})


def freshness_check(compiled: Compiled, event_type: str) -> dg.AssetChecksDefinition:
    source = compiled.event_types[event_type]["source"]
    slo = compiled.sources[source]["freshness_slo_seconds"]

    @dg.asset_check(asset=key("events", event_type), name="freshness", blocking=False,
                    description=f"Newest event against now; SLO {slo}s from source {source!r}.",
                    automation_condition=EVERY_FIVE_MINUTES)
    def _freshness(lake: LakeResource) -> dg.AssetCheckResult:
        return _result(quality.freshness(compiled, lake.lake(), event_type), dg.AssetCheckSeverity.WARN)

    return _freshness


def build_checks(compiled: Compiled) -> list[dg.AssetChecksDefinition]:
    return [freshness_check(compiled, et) for et in compiled.event_types]


def sequences_freshness_check(compiled: Compiled, table: str) -> dg.AssetChecksDefinition:
    f = compiled.features[table]
    hours = f["freshness_hours"]

    @dg.asset_check(asset=key("sequences", table), name="freshness", blocking=True,
                    description=f"Yesterday's partition exists by 00:00 UTC + {hours}h (freshness_hours of "
                                f"{f['name']} v{f['version']}); blocks the analysis assets after it when late.",
                    automation_condition=EVERY_FIFTEEN_MINUTES)
    def _freshness(lake: LakeResource) -> dg.AssetCheckResult:
        out = quality.sequences_freshness(f, lake.lake(), table, now_ms=int(time.time() * 1000))
        return _result(out, dg.AssetCheckSeverity.ERROR)

    return _freshness


def build_sequence_checks(compiled: Compiled) -> list[dg.AssetChecksDefinition]:
    return [sequences_freshness_check(compiled, t) for t in compiled.features]


# Evaluates the checks' automation conditions; on by default so freshness is watched with no clicks.
quality_automation = dg.AutomationConditionSensorDefinition(
    "quality_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Runs the freshness checks every five minutes (their automation condition).",
)
