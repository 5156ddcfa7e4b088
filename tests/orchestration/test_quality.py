"""Quality checks: each one passes on a good lake and fails on data broken on purpose.

The lake is the demo data materialized by the real batch path (Dagster runs over real Delta tables).
Each check is exercised twice: as the pure function in ``seq_assets.quality`` and, where it matters,
through Dagster, where a failing blocking check must stop the sequences built on top of it.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable

from seq_assets.core import quality
from seq_assets.storage.lake import Lake
from tests.support.quality_helpers import (
    DAYS,
    EVENT_CHECKS,
    EVENT_TYPES,
    FEATURES,
    SEQUENCE_CHECKS,
    append_rows,
    copy_lake,
    evaluations,
    good_lake,
    materializations,
    materialize,
    meta_value,
    platform_env,
    rewrite_table,
)
from tests.support.sequences import sequences_day

D1, D2, D3 = DAYS


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return good_lake(tmp_path_factory)


@pytest.fixture(scope="module")
def compiled():
    from seq_assets.core.compiled import Compiled, compile_definitions
    from signal_defs import REGISTRY

    return Compiled(compile_definitions(REGISTRY))


@pytest.fixture(scope="module")
def good_lake_ro(good) -> Lake:
    """The good lake, for reading only."""
    return Lake(str(good.lake))


@pytest.fixture
def broken(good, tmp_path):
    """A private copy of the good lake to break, with the platform pointed at it for this test."""
    root = copy_lake(good.lake, tmp_path / "lake")
    with platform_env(root, good.landing):
        yield Lake(str(root))


def _expected_check_keys() -> set[tuple[str, str]]:
    return ({(f"events/{et}", c) for et in EVENT_TYPES for c in EVENT_CHECKS}
            | {(f"sequences/{f}", c) for f in FEATURES for c in SEQUENCE_CHECKS})


# ---- 1. every check passes on the good lake -----------------------------------------------------


@pytest.mark.parametrize("day", DAYS)
def test_every_in_run_check_passes_on_the_good_lake(good, day):
    result = good.results[day]
    assert result.success
    evals = evaluations(result)
    assert set(evals) == _expected_check_keys()
    for (asset, name), ev in evals.items():
        assert ev.passed, (asset, name, ev.description)
        assert ev.severity == dg.AssetCheckSeverity.ERROR
        assert ev.target_materialization_data is not None  # tied to this run's materialization
        assert meta_value(ev.metadata, "failed_days") == "none"
        numeric = {k: v for k, v in ev.metadata.items() if k != "failed_days"}
        assert numeric and all(isinstance(v, (dg.IntMetadataValue, dg.FloatMetadataValue)) for v in numeric.values()), \
            (asset, name, ev.metadata)


def test_events_materializations_record_numeric_quality_figures(good):
    late = 0
    for day in DAYS:
        mats = materializations(good.results[day])
        for et in EVENT_TYPES:
            md = mats[f"events/{et}"].metadata
            assert isinstance(md["completeness"], dg.FloatMetadataValue) and md["completeness"].value == 1.0
            assert isinstance(md["late_arrivals"], dg.IntMetadataValue)
            late += md["late_arrivals"].value
            for col in ("item_embedding", "item_category", "user_item_count_30d"):
                cov = md[f"coverage_{col}"]
                assert isinstance(cov, dg.FloatMetadataValue), col
                assert 0.9 <= cov.value <= 1.0, (day, et, col, cov.value)
            assert isinstance(md["rows"], dg.IntMetadataValue) and md["rows"].value > 0
        for f in FEATURES:
            md = mats[f"sequences/{f}"].metadata
            assert isinstance(md["mean_length"], dg.FloatMetadataValue) and md["mean_length"].value > 0
            assert isinstance(md["users"], dg.IntMetadataValue) and md["users"].value > 50
    assert late > 0  # the demo data delivers some events late, and the figure counts them


def test_late_arrivals_are_counted_per_day_from_raw(good_lake_ro, good):
    for day in DAYS:
        raw = good_lake_ro.read("raw", "user_engagements", days=[day])
        expected = raw.filter(pl.col("arrival_date") > pl.col("date")).height
        assert quality.late_arrivals(good_lake_ro, "user_engagements", day) == expected
        md = materializations(good.results[day])["events/pin_click"].metadata
        assert md["late_arrivals"].value == expected


def test_checks_and_thresholds_come_from_the_definitions(compiled, good):
    from seq_assets.orchestration.assets import build_assets
    from seq_assets.orchestration.checks import build_checks

    specs = {}
    for a in build_assets(compiled):
        for spec in a.check_specs:
            specs[(spec.asset_key.to_user_string(), spec.name)] = spec
    assert set(specs) == _expected_check_keys()  # no shadow check without a predecessor version
    assert all(s.blocking for s in specs.values())
    fresh = build_checks(compiled)
    assert {(s.asset_key.to_user_string(), s.name) for c in fresh for s in c.check_specs} == \
        {(f"events/{et}", "freshness") for et in EVENT_TYPES}
    for c in fresh:
        (spec,) = c.check_specs
        assert not spec.blocking
        assert "SLO 60s" in spec.description
    # The coverage thresholds recorded are the definitions' min_coverage.
    ev = evaluations(good.results[D3])[("events/pin_save", "enrichment_coverage")]
    for col, name in (("item_category", "item_category"), ("item_embedding", "item_embedding"),
                      ("user_item_count_30d", "user_item_count_30d")):
        assert meta_value(ev.metadata, f"min_coverage_{col}") == compiled.enrichments[name]["min_coverage"]


# ---- freshness: a stale source -----------------------------------------------------------------


def test_freshness_function_against_the_slo(compiled, good_lake_ro):
    newest = good_lake_ro.read("events", "pin_click", days=[D3])["ts"].max()
    ok = quality.freshness(compiled, good_lake_ro, "pin_click", now_ms=newest + 30_000)
    assert ok.passed and ok.metadata["lag_seconds"] == pytest.approx(30.0) and ok.metadata["slo_seconds"] == 60
    late = quality.freshness(compiled, good_lake_ro, "pin_click", now_ms=newest + 2 * 3_600_000)
    assert not late.passed and late.metadata["lag_seconds"] == pytest.approx(7200.0)
    assert "SLO 60s" in late.description
    stale = quality.freshness(compiled, good_lake_ro, "pin_click")  # against the real clock: March is long gone
    assert not stale.passed and stale.metadata["lag_seconds"] > 86_400
    missing = quality.freshness(compiled, Lake(str(good_lake_ro.root) + "_nowhere"), "pin_click")
    assert not missing.passed and "no data" in missing.description


def test_freshness_check_fails_on_a_stale_source_and_passes_with_an_event_of_now(broken):
    from seq_assets.orchestration.assets import build_assets
    from seq_assets.orchestration.checks import build_checks, freshness_check
    from seq_assets.orchestration.resources import LakeResource
    from seq_assets.settings import load_compiled

    compiled = load_compiled()
    checks = build_checks(compiled)
    result = dg.materialize([*build_assets(compiled), *checks], selection=dg.AssetSelection.checks(*checks),
                            resources={"lake": LakeResource()}, raise_on_error=False)
    evals = evaluations(result)
    assert set(evals) == {(f"events/{et}", "freshness") for et in EVENT_TYPES}
    assert not result.get_asset_materialization_events()  # a check-only run builds nothing
    for ev in evals.values():
        assert not ev.passed and ev.severity == dg.AssetCheckSeverity.WARN
        assert isinstance(ev.metadata["lag_seconds"], dg.FloatMetadataValue)
        assert ev.metadata["lag_seconds"].value > 86_400 and ev.metadata["slo_seconds"].value == 60

    # An event of now arrives in events/pin_click (as the stream would write it): fresh again.
    now_ms = int(time.time() * 1000)
    today = datetime.now(timezone.utc).date()
    row = broken.read("events", "pin_click", days=[D3]).head(1).with_columns(
        pl.lit("fresh-event-now").alias("event_id"), pl.lit(now_ms).alias("ts"), pl.lit(today).alias("date"))
    append_rows(broken.uri("events", "pin_click"), row)
    out = freshness_check(compiled, "pin_click")(lake=LakeResource())
    assert out.passed, out.description
    assert out.metadata["lag_seconds"].value < 60
    assert not freshness_check(compiled, "pin_save")(lake=LakeResource()).passed  # the others are still stale


# ---- completeness: a dropped partition ---------------------------------------------------------


def test_completeness_fails_on_a_dropped_partition(compiled, broken):
    raw = broken.read("raw", "user_engagements", days=[D2])
    before = quality.completeness(compiled, "pin_click", raw, broken.read("events", "pin_click", days=[D2]), broken, D2)
    assert before.passed and before.metadata["completeness"] == 1.0
    expected = before.metadata["expected"]
    assert expected > 100

    DeltaTable(broken.uri("events", "pin_click")).delete(f"date = '{D2.isoformat()}'")
    events = broken.read("events", "pin_click", days=[D2])
    assert events.height == 0
    out = quality.completeness(compiled, "pin_click", raw, events, broken, D2)
    assert not out.passed
    assert out.metadata["missing"] == expected and out.metadata["completeness"] == 0.0
    assert f"{expected} filtered raw events are not indexed" in out.description
    assert out.metadata["late_arrivals"] == quality.late_arrivals(broken, "user_engagements", D2)
    # The partitions around it are untouched and still complete.
    for day in (D1, D3):
        raw_d = broken.read("raw", "user_engagements", days=[day])
        assert quality.completeness(compiled, "pin_click", raw_d, broken.read("events", "pin_click", days=[day])).passed


def test_completeness_counts_missing_and_extra_events(compiled, good_lake_ro):
    raw = good_lake_ro.read("raw", "user_engagements", days=[D3])
    events = good_lake_ro.read("events", "pin_save", days=[D3])
    partial = quality.completeness(compiled, "pin_save", raw, events.slice(7))
    assert not partial.passed and partial.metadata["missing"] == 7 and partial.metadata["extra"] == 0
    assert partial.metadata["completeness"] == pytest.approx((events.height - 7) / events.height)
    # An event whose raw row does not pass the filter (a click indexed as a save) is extra.
    click = good_lake_ro.read("events", "pin_click", days=[D3]).head(1)
    extra = quality.completeness(compiled, "pin_save", raw, pl.concat([events, click], how="vertical_relaxed"))
    assert not extra.passed and extra.metadata["extra"] == 1 and extra.metadata["missing"] == 0
    assert "1 indexed events are not in raw" in extra.description


def test_complete_vs_raw_fails_in_the_run_when_the_executor_loses_events(broken, monkeypatch):
    from seq_assets.core.executors import Executor

    run = Executor.run

    def lossy(self, raw, ctx, ingested_at=None):
        out = run(self, raw, ctx, ingested_at)
        return out.slice(5) if self.event_type["name"] == "pin_save" else out

    monkeypatch.setattr(Executor, "run", lossy)
    result = materialize(D3.isoformat(), selection=[dg.AssetKey(["events", "pin_save"])], raise_on_error=False)
    evals = evaluations(result)
    assert set(evals) == {("events/pin_save", c) for c in EVENT_CHECKS}
    ev = evals[("events/pin_save", "complete_vs_raw")]
    assert not ev.passed
    assert meta_value(ev.metadata, "missing") == 5
    assert "5 filtered raw events are not indexed" in ev.description
    assert meta_value(ev.metadata, "failed_days") == D3.isoformat()
    assert materializations(result)["events/pin_save"].metadata["completeness"].value < 1.0
    assert not result.success  # blocking: the step fails


# ---- coverage: a missing enrichment --------------------------------------------------------------


def test_coverage_function_against_the_threshold(compiled, good_lake_ro):
    events = good_lake_ro.read("events", "pin_click", days=[D3])
    ok = quality.coverage(compiled, "pin_click", events)
    assert ok.passed and ok.metadata["coverage_item_category"] >= 0.9
    assert ok.metadata["min_coverage_item_category"] == 0.9
    gone = quality.coverage(compiled, "pin_click", events.with_columns(pl.lit(None, pl.String).alias("item_category")))
    assert not gone.passed and gone.metadata["coverage_item_category"] == 0.0
    assert "item_category" in gone.description and "item_embedding" not in gone.description
    half = events.with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.col("item_category")).alias("item_category"))
    out = quality.coverage(compiled, "pin_click", half)
    assert not out.passed and 0.3 < out.metadata["coverage_item_category"] < 0.6
    dropped = quality.coverage(compiled, "pin_click", events.drop("item_embedding"))
    assert not dropped.passed and dropped.metadata["coverage_item_embedding"] == 0.0


def test_enrichment_coverage_fails_in_the_run_when_a_snapshot_is_missing(broken):
    # The item_category snapshots are gone from the lake: nothing to carry forward either.
    DeltaTable(broken.uri("enrichments", "item_category")).delete()
    result = materialize(D3.isoformat(), selection=[dg.AssetKey(["events", "pin_click"])], raise_on_error=False)
    evals = evaluations(result)
    cov = evals[("events/pin_click", "enrichment_coverage")]
    assert not cov.passed
    assert meta_value(cov.metadata, "coverage_item_category") == 0.0
    assert meta_value(cov.metadata, "coverage_item_embedding") >= 0.9
    assert "item_category" in cov.description
    for name in ("schema_matches_definition", "event_id_unique", "complete_vs_raw"):
        assert evals[("events/pin_click", name)].passed, name
    assert materializations(result)["events/pin_click"].metadata["coverage_item_category"].value == 0.0
    assert not result.success


# ---- schema drift: a retyped, an extra and a missing column --------------------------------------


def _retype(col: str, to):
    return lambda df: df.with_columns(pl.col(col).cast(to))


DRIFTS = {
    "retyped_events": ("events", "pin_closeup", _retype("dwell_ms", pl.Float64), "retyped", "dwell_ms"),
    "extra_events": ("events", "pin_closeup", lambda df: df.with_columns(pl.lit(1).alias("junk")), "extra", "junk"),
    "missing_events": ("events", "pin_closeup", lambda df: df.drop("country"), "missing", "country"),
    "retyped_sequences": ("sequences", "saves_v1", _retype("ts", pl.List(pl.Float64)), "retyped", "ts"),
    "missing_sequences": ("sequences", "saves_v1", lambda df: df.drop("item_category"), "missing", "item_category"),
}


@pytest.mark.parametrize("case", list(DRIFTS))
def test_schema_drift_fails_on_a_changed_table(compiled, broken, case):
    kind, name, mutate, what, col = DRIFTS[case]
    expected = compiled.event_schema(name) if kind == "events" else compiled.sequence_schema(compiled.features[name])
    assert quality.table_schema_drift(broken, kind, name, expected).passed
    rewrite_table(broken.uri(kind, name), mutate(broken.read(kind, name)))
    out = quality.table_schema_drift(broken, kind, name, expected)
    assert not out.passed
    assert out.metadata[what] == 1 and sum(out.metadata[k] for k in ("missing", "extra", "retyped")) == 1
    assert what in out.description and col in out.description


def test_schema_drift_function():
    ok = quality.schema_drift({"a": pl.Int64, "b": pl.String}, {"a": pl.Int64, "b": pl.String})
    assert ok.passed
    bad = quality.schema_drift({"a": pl.Int32, "c": pl.String}, {"a": pl.Int64, "b": pl.String})
    assert not bad.passed and bad.metadata == {"missing": 1, "extra": 1, "retyped": 1, "columns": 2}
    assert "a: Int32 (expected Int64)" in bad.description
    assert not quality.table_schema_drift(Lake("/nonexistent/lake"), "events", "pin_click", {"a": pl.Int64}).passed


def test_schema_check_fails_in_the_run_on_an_extra_column(broken):
    df = broken.read("events", "pin_closeup").with_columns(pl.lit("x").alias("junk"))
    rewrite_table(broken.uri("events", "pin_closeup"), df)
    result = materialize(D3.isoformat(), selection=[dg.AssetKey(["events", "pin_closeup"])], raise_on_error=False)
    evals = evaluations(result)
    drift = evals[("events/pin_closeup", "schema_matches_definition")]
    assert not drift.passed
    assert "extra ['junk']" in drift.description
    assert meta_value(drift.metadata, "extra") == 1
    for name in ("event_id_unique", "complete_vs_raw", "enrichment_coverage"):
        assert evals[("events/pin_closeup", name)].passed, name
    assert not result.success


# ---- uniqueness: a duplicated event --------------------------------------------------------------


def test_uniqueness_fails_on_a_duplicated_event(broken):
    events = broken.read("events", "pin_save", days=[D2])
    assert quality.uniqueness(events, "event_id").passed
    append_rows(broken.uri("events", "pin_save"), events.sample(1, seed=3))
    out = quality.uniqueness(broken.read("events", "pin_save", days=[D2]), "event_id")
    assert not out.passed
    assert out.metadata == {"rows": events.height + 1, "duplicates": 1}
    assert "1 duplicated event_id" in out.description
    assert quality.uniqueness(pl.DataFrame(schema={"event_id": pl.String}), "event_id").passed


# ---- sequence invariants: an unsorted, a too long and an out-of-window sequence ------------------


def _reversed(df: pl.DataFrame) -> pl.DataFrame:
    cols = [c for c, t in df.schema.items() if isinstance(t, pl.List)]
    return df.with_columns([pl.col(c).list.reverse() for c in cols])


@pytest.mark.parametrize("feature", FEATURES)
def test_sequence_invariants_hold_on_the_good_lake(compiled, good_lake_ro, feature):
    f = compiled.features[feature]
    for day in DAYS:
        out = quality.sequence_invariants(f, sequences_day(good_lake_ro, feature, day), day, "user_id")
        assert out.passed, (feature, day, out.description)
        assert out.metadata["users"] > 50


def test_sequence_invariants_fail_on_broken_sequences(compiled, good_lake_ro):
    f = compiled.features["engagements_v1"]
    seqs = sequences_day(good_lake_ro, "engagements_v1", D3)
    multi = seqs.filter(pl.col("event_id").list.len() > 1)
    assert multi.height > 10

    unsorted = quality.sequence_invariants(f, pl.concat([seqs.filter(pl.col("event_id").list.len() <= 1), _reversed(multi)]), D3, "user_id")
    assert not unsorted.passed and unsorted.metadata["out_of_order"] > 0
    assert "out of order" in unsorted.description

    one_user = quality.sequence_invariants(f, pl.concat([seqs.slice(0, 0), _reversed(multi.head(1))]), D3, "user_id")
    assert not one_user.passed and one_user.metadata["out_of_order"] == multi.head(1)["event_id"].list.len().item() - 1

    too_long = quality.sequence_invariants(dict(f, max_length=3), seqs, D3, "user_id")
    assert not too_long.passed
    assert too_long.metadata["too_long"] == seqs.filter(pl.col("event_id").list.len() > 3).height > 0
    assert "longer than N" in too_long.description

    # Day 3's sequences hold events of days 1-3: a one-day window leaves the older ones outside.
    narrow = quality.sequence_invariants(dict(f, window_days=1), seqs, D3, "user_id")
    assert not narrow.passed and narrow.metadata["outside_window"] > 0
    # Checked as of day 2, day 3's events lie in its future.
    future = quality.sequence_invariants(f, seqs, D2, "user_id")
    assert not future.passed and future.metadata["outside_window"] > 0

    dup = multi.head(1).with_columns([pl.col(c).list.concat(pl.col(c).list.tail(1))
                                      for c, t in multi.schema.items() if isinstance(t, pl.List)])
    dupped = quality.sequence_invariants(f, dup, D3, "user_id")
    assert not dupped.passed and dupped.metadata["duplicated"] == 1


def test_sequence_invariants_fail_in_the_run_on_an_unsorted_sequence(broken, monkeypatch):
    import seq_assets.core.engine as engine

    assemble = engine.assemble_sequences
    monkeypatch.setattr(engine, "assemble_sequences", lambda *a, **kw: _reversed(assemble(*a, **kw)))
    result = materialize(D3.isoformat(), selection=[dg.AssetKey(["sequences", "saves_v1"])], raise_on_error=False)
    evals = evaluations(result)
    inv = evals[("sequences/saves_v1", "sequence_invariants")]
    assert not inv.passed
    assert meta_value(inv.metadata, "out_of_order") > 0
    assert evals[("sequences/saves_v1", "schema_matches_definition")].passed
    assert not result.success


# ---- a blocking failure stops the downstream assets in the same run ------------------------------


def test_a_failed_blocking_check_stops_the_sequences_in_the_same_run(broken, monkeypatch):
    from seq_assets.core.executors import Executor

    run = Executor.run

    def duplicating(self, raw, ctx, ingested_at=None):
        out = run(self, raw, ctx, ingested_at)
        return pl.concat([out, out.head(1)]) if self.event_type["name"] == "pin_click" else out

    versions = {f: broken.table("sequences", f).version() for f in FEATURES}
    monkeypatch.setattr(Executor, "run", duplicating)
    result = materialize(D3.isoformat(), selection=dg.AssetSelection.groups("events", "sequences"), raise_on_error=False)

    evals = evaluations(result)
    dup = evals[("events/pin_click", "event_id_unique")]
    assert not dup.passed and meta_value(dup.metadata, "duplicates") == 1
    assert all(ev.passed for k, ev in evals.items() if k != ("events/pin_click", "event_id_unique"))
    assert {k[0] for k in evals} == {f"events/{et}" for et in EVENT_TYPES}  # no sequences check ran

    # The events were written (the check judges them), but nothing was built on top of them.
    assert set(materializations(result)) == {f"events/{et}" for et in EVENT_TYPES}
    assert not result.success
    assert result.get_failed_step_keys() == {"events__user_engagements"}
    (failure,) = result.get_step_failure_events()
    msg = failure.step_failure_data.error.message
    assert "blocking asset check" in msg and "events/pin_click: event_id_unique" in msg
    for f in FEATURES:
        step = f"sequences__{f}"
        assert result.is_node_untouched(step) and not result.is_node_success(step)
        assert not [e for e in result.all_events if e.step_key == step]
        assert broken.table("sequences", f).version() == versions[f]  # the lake's sequences are untouched
