"""Schema evolution and migrations: a new enrichment backfills only the partitions it touches, a new
feature version builds beside the old one, both are served, and the shadow comparison (``seqctl
compare`` and the ``shadow_vs_v1`` asset check) reports how the candidate differs from its baseline.

The migration runs on a copy of the good demo lake with a compiled registry (SEQ_DEFS_DIR) that adds
a context enrichment ``device_ctx`` to ``pin_click`` and a feature ``engagements`` v2 capped at 50.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from seq_assets.storage.lake import Lake
from tests.support.quality_helpers import (
    DAYS,
    EVENT_TYPES,
    SEQUENCE_CHECKS,
    arrow,
    copy_lake,
    evaluations,
    good_lake,
    materialize,
    meta_value,
    platform_env,
    write_registry,
)
from tests.support.sequences import sequences_day, sequences_table

D1, D2, D3 = DAYS
V2_MAX = 50


def migration_registry():
    """The shipped definitions plus an enrichment on pin_click and a second version of engagements."""
    from signal_defs import REGISTRY, ContextEnrichment, Lifecycle, Registry
    from signal_defs.demo import engagements_v1

    defs = []
    for d in REGISTRY.definitions:
        if d.kind == "event_type" and d.name == "pin_click":
            d = dataclasses.replace(d, enrichments=(*d.enrichments, "device_ctx"))
        defs.append(d)
    device_ctx = ContextEnrichment(name="device_ctx", fields={"device_ctx": "device"},
                                   description="The device, copied from the raw event.")
    v2 = dataclasses.replace(engagements_v1, version=2, max_length=V2_MAX, lifecycle=Lifecycle.EXPERIMENTAL,
                             description="The last 50 engagements: a cheaper candidate for engagements_v1.")
    return Registry().add(*defs, device_ctx, v2)


@dataclass
class Migration:
    lake: Path
    landing: Path
    defs: Path
    before_v1: dict          # day -> engagements_v1 before the migration
    before_click: pl.DataFrame
    before_files: dict       # event type -> add-action paths before the migration
    before_versions: dict    # event type -> delta version before the migration
    evolve: object           # the run that re-materialized events/pin_click for one day
    build: object            # the single run that built engagements_v1 and _v2 for every day


def _files(lake: Lake, et: str) -> dict[str, str]:
    adds = pl.from_arrow(pa.table(lake.table("events", et).get_add_actions(flatten=True)))
    return dict(zip(adds["path"].to_list(), adds["partition.date"].cast(pl.String).to_list()))


@pytest.fixture(scope="module")
def migration(tmp_path_factory) -> Migration:
    good = good_lake(tmp_path_factory)
    root = tmp_path_factory.mktemp("migration")
    lake_dir = copy_lake(good.lake, root / "lake")
    lake = Lake(str(lake_dir))
    before_v1 = {d: sequences_day(lake, "engagements_v1", d).sort("user_id") for d in DAYS}
    before_click = lake.read("events", "pin_click").sort("event_id")
    before_files = {et: _files(lake, et) for et in EVENT_TYPES}
    before_versions = {et: lake.table("events", et).version() for et in EVENT_TYPES}
    defs = write_registry(migration_registry(), root / "defs")
    with platform_env(lake_dir, good.landing, defs):
        # The new column reaches history by re-materializing only the partition that needs it.
        evolve = materialize(D3.isoformat(), selection=[dg.AssetKey(["events", "pin_click"])])
        # One single-run backfill over the days: the old version rebuilt, the new one beside it.
        build = materialize(selection=[dg.AssetKey(["sequences", "engagements_v1"]),
                                       dg.AssetKey(["sequences", "engagements_v2"])],
                            partition_range=(D1.isoformat(), D3.isoformat()))
    return Migration(lake_dir, good.landing, defs, before_v1, before_click, before_files, before_versions,
                     evolve, build)


@pytest.fixture
def migrated(migration):
    """The migrated lake, with the platform pointed at it and at the new registry for this test."""
    with platform_env(migration.lake, migration.landing, migration.defs):
        from seq_assets.settings import load_compiled

        yield Lake(str(migration.lake)), load_compiled()


# ---- schema evolution --------------------------------------------------------------------------


def test_the_registry_adds_a_column_and_a_version(migrated):
    _, compiled = migrated
    assert "device_ctx" in compiled.event_schema("pin_click")
    assert "device_ctx" not in compiled.event_schema("pin_save")
    assert {"engagements_v1", "engagements_v2"} <= set(compiled.features)
    assert compiled.feature("engagements")["version"] == 2


def test_a_new_enrichment_backfills_only_the_affected_partition(migration, migrated):
    lake, compiled = migrated
    result = migration.evolve
    assert {(e.asset_key.to_user_string(), e.partition) for e in result.get_asset_materialization_events()} == \
        {("events/pin_click", D3.isoformat())}
    evals = evaluations(result)
    assert set(evals) == {("events/pin_click", c) for c in
                          ("schema_matches_definition", "event_id_unique", "complete_vs_raw", "enrichment_coverage")}
    assert all(ev.passed for ev in evals.values()), {k: ev.description for k, ev in evals.items()}
    assert meta_value(evals[("events/pin_click", "enrichment_coverage")].metadata, "coverage_device_ctx") == 1.0

    click = lake.read("events", "pin_click")  # the whole table: old files have no such column
    assert list(compiled.event_schema("pin_click")) == [c for c in compiled.event_schema("pin_click") if c in click.columns]
    new, old = click.filter(pl.col("date") == D3), click.filter(pl.col("date") < D3)
    assert new.height > 100 and old.height > 100
    assert new["device_ctx"].to_list() == new["device"].to_list()
    assert new["device_ctx"].null_count() == 0
    assert old["device_ctx"].null_count() == old.height  # older partitions read the new column as null
    assert set(new["def_version"]) == {compiled.event_types["pin_click"]["hash"]}
    assert compiled.event_types["pin_click"]["hash"] not in set(old["def_version"])
    # Older partitions were not rewritten: same files, same rows.
    files = _files(lake, "pin_click")
    old_files = {p for p, d in migration.before_files["pin_click"].items() if d != D3.isoformat()}
    assert old_files <= set(files)
    assert {p for p, d in files.items() if d != D3.isoformat()} == old_files
    assert old.drop("device_ctx").sort("event_id").equals(migration.before_click.filter(pl.col("date") < D3))
    # Event types without the enrichment were not touched at all.
    for et in ("pin_save", "pin_closeup"):
        assert lake.table("events", et).version() == migration.before_versions[et]
        assert "device_ctx" not in lake.read("events", et, days=[D3]).columns


def test_readers_of_the_old_version_keep_working(migration, migrated):
    from seq_assets.core.compiled import Compiled, compile_definitions
    from seq_assets.training import read_sequences
    from signal_defs import REGISTRY

    lake, compiled = migrated
    shipped = Compiled(compile_definitions(REGISTRY))
    evals = evaluations(migration.build)
    for c in SEQUENCE_CHECKS:
        assert evals[("sequences/engagements_v1", c)].passed
    for day in DAYS:
        # Rebuilt from the evolved events/ table, v1 is exactly what it was.
        assert sequences_day(lake, "engagements_v1", day).sort("user_id").equals(migration.before_v1[day])
        for defs in (compiled, shipped):  # readers on the new and on the old definitions
            got = read_sequences("engagements_v1", day, fields=["event_id", "ts", "item_category"], lake=lake,
                                 compiled=defs).sort("user_id")
            assert got.equals(migration.before_v1[day].select(got.columns))


def test_a_new_version_builds_beside_the_old_one(migration, migrated):
    lake, _ = migrated
    mats = migration.build.get_asset_materialization_events()
    assert sorted((e.asset_key.to_user_string(), e.partition) for e in mats) == sorted(
        (f"sequences/{t}", d.isoformat()) for t in ("engagements_v1", "engagements_v2") for d in DAYS)
    assert migration.build.success
    evals = evaluations(migration.build)
    for c in SEQUENCE_CHECKS:
        assert evals[("sequences/engagements_v2", c)].passed
    for day in DAYS:
        v1 = sequences_day(lake, "engagements_v1", day).sort("user_id")
        v2 = sequences_day(lake, "engagements_v2", day).sort("user_id")
        assert v2.columns == v1.columns and v2["user_id"].to_list() == v1["user_id"].to_list()
        assert v2["event_id"].list.len().max() <= V2_MAX
        # The candidate is the baseline cut to its N: the newest 50 of the same events.
        lists = [c for c, t in v1.schema.items() if isinstance(t, pl.List)]
        assert v2.equals(v1.with_columns([pl.col(c).list.head(V2_MAX) for c in lists]))
    assert (sequences_day(lake, "engagements_v1", D3)["event_id"].list.len() > V2_MAX).sum() > 0


def test_both_versions_are_served(migrated):
    from seq_assets.serving.service import SequenceService

    lake, compiled = migrated
    svc = SequenceService(compiled, lake)
    listed = {f["feature"]: f for f in svc.features()}
    assert {"engagements_v1", "engagements_v2", "saves_v1"} <= set(listed)
    assert listed["engagements_v1"]["max_length"] == 500 and listed["engagements_v2"]["max_length"] == V2_MAX
    assert listed["engagements_v2"]["completeness"]["snapshot_day"] == D3.isoformat()

    v1 = sequences_day(lake, "engagements_v1", D3)
    heavy = int(v1.sort(pl.col("event_id").list.len(), descending=True)["user_id"][0])
    as_of = "2026-03-04T00:00:00Z"
    old = svc.get("engagements_v1", heavy, as_of=as_of, fields="event_id,ts")
    new = svc.get("engagements_v2", heavy, as_of=as_of, fields="event_id,ts")
    assert old["feature"] == "engagements_v1" and new["feature"] == "engagements_v2"
    old_ids = [e["event_id"] for e in old["events"]]
    new_ids = [e["event_id"] for e in new["events"]]
    assert len(old_ids) > V2_MAX and len(new_ids) == V2_MAX
    assert new_ids == old_ids[:V2_MAX]
    assert svc.get("engagements", heavy, as_of=as_of, fields="event_id")["feature"] == "engagements_v2"


# ---- shadow comparison as an asset check -------------------------------------------------------


def _expected_day(lake: Lake, day) -> dict:
    """The figures for v1 against v1 cut to 50, computed here from the lengths alone."""
    n = sequences_day(lake, "engagements_v1", day)["event_id"].list.len()
    cut = n.clip(upper_bound=V2_MAX)
    return {
        "users_compared": float(len(n)),
        "exact_match_rate": float((n <= V2_MAX).mean()),
        "mean_overlap": float((cut / n).mean()),
        "mean_edit_distance": float(((n - cut) / n).mean()),
        "mean_length_diff": float((n - cut).mean()),
        "matched_events": float(cut.sum()),
    }


def test_shadow_check_on_the_new_version(migration, migrated):
    from seq_assets.orchestration.assets import build_assets

    lake, compiled = migrated
    assets = build_assets(compiled)
    specs = {(s.asset_key.to_user_string(), s.name): s for a in assets for s in a.check_specs}
    assert not specs[("sequences/engagements_v2", "shadow_vs_v1")].blocking
    assert not [k for k in specs if k[1].startswith("shadow") and k[0] != "sequences/engagements_v2"]
    # The check reads the baseline's partition of the same day, so the baseline is built first under any
    # executor (with parallel steps the candidate could otherwise finish first and compare with nothing).
    deps = {k.to_user_string(): {d.asset_key.to_user_string() for d in a.specs_by_key[k].deps}
            for a in assets for k in a.keys if k.path[0] == "sequences"}
    assert "sequences/engagements_v1" in deps["sequences/engagements_v2"]
    assert not [d for d in deps["sequences/engagements_v1"] if d.startswith("sequences/")]

    ev = evaluations(migration.build)[("sequences/engagements_v2", "shadow_vs_v1")]
    assert ev.passed and ev.severity == dg.AssetCheckSeverity.WARN
    md = ev.metadata
    numeric = {k: v for k, v in md.items() if k != "report"}
    assert all(isinstance(v, dg.FloatMetadataValue) for v in numeric.values()), md
    expected = _expected_day(lake, D3)  # the metadata is the run's last day
    for k, v in expected.items():
        assert md[k].value == pytest.approx(v), k
    assert expected["exact_match_rate"] < 1.0 and expected["mean_length_diff"] > 0
    fields = [f for f in compiled.stored_fields(compiled.features["engagements_v2"]) if f != "event_id"]
    for f in fields:
        assert md[f"field_match_{f}"].value == 1.0, f
    report = md["report"]
    assert isinstance(report, dg.MarkdownMetadataValue)
    assert "baseline engagements_v1 vs candidate engagements_v2" in report.value
    for day in DAYS:
        assert day.isoformat() in report.value
    assert "field match rate" in report.value and "item_category" in report.value
    assert f"{expected['exact_match_rate']:.1%}" in ev.description


# ---- seqctl compare ----------------------------------------------------------------------------


ROW = re.compile(r"^(\d{4}-\d{2}-\d{2})\s+(\d+)\s+([\d.]+)%\s+([\d.]+)%\s+([\d.]+)\s+([\d.]+)\s+(\d+)$")


def _seqctl(capsys, *argv) -> tuple[str, dict]:
    from seq_assets.cli import main

    assert main(["compare", *argv]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        m = ROW.match(line.strip())
        if m:
            d, users, exact, overlap, edit, lendiff, matched = m.groups()
            rows[d] = {"users": int(users), "exact": float(exact), "overlap": float(overlap), "edit": float(edit),
                       "len_diff": float(lendiff), "matched": int(matched)}
    return out, rows


def _field_rates(out: str) -> dict[str, list[float]]:
    tail = out.split("event-level field match rate over matched events:", 1)[1]
    rates = {}
    for line in tail.strip().splitlines():
        name, *vals = line.split()
        rates[name] = [float(v.rstrip("%")) for v in vals]
    return rates


def test_seqctl_compare_identical_tables(migrated, capsys):
    out, rows = _seqctl(capsys, "engagements_v1", "engagements_v1")
    assert "baseline engagements_v1 vs candidate engagements_v1" in out
    assert set(rows) == {d.isoformat() for d in DAYS}
    for r in rows.values():
        assert (r["exact"], r["overlap"], r["edit"], r["len_diff"]) == (100.0, 100.0, 0.0, 0.0)
        assert r["users"] > 50 and r["matched"] > 0
    rates = _field_rates(out)
    assert {"ts", "item_id", "item_category", "item_embedding", "user_item_count_30d"} <= set(rates)
    assert all(v == [100.0] * len(DAYS) for v in rates.values())


def test_seqctl_compare_two_versions(migrated, capsys, tmp_path):
    lake, _ = migrated
    out, rows = _seqctl(capsys, "engagements_v1", "engagements_v2", "--json", str(tmp_path / "cmp.json"))
    assert "baseline engagements_v1 vs candidate engagements_v2" in out
    figures = {r["day"]: r for r in json.loads((tmp_path / "cmp.json").read_text())}
    assert set(rows) == set(figures) == {d.isoformat() for d in DAYS}
    for day in DAYS:
        want = _expected_day(lake, day)
        got = figures[day.isoformat()]
        for k, v in want.items():
            assert got[k] == pytest.approx(v), (day, k)
        row = rows[day.isoformat()]
        assert row["exact"] == pytest.approx(100 * want["exact_match_rate"], abs=0.05)
        assert row["len_diff"] == pytest.approx(want["mean_length_diff"], abs=0.005)
        assert row["matched"] == want["matched_events"]
    assert figures[D3.isoformat()]["exact_match_rate"] < 1.0
    assert figures[D3.isoformat()]["mean_overlap"] < 1.0
    assert figures[D3.isoformat()]["mean_length_diff"] > 0
    assert all(v == [100.0] * len(DAYS) for v in _field_rates(out).values())  # same events, same fields


def test_seqctl_compare_against_an_external_table(migrated, capsys, tmp_path):
    lake, _ = migrated
    # Another system's sequences in the same layout: only the newest 3 events, one field off, two days.
    v1 = sequences_table(lake, "engagements_v1").filter(pl.col("date") >= D2)
    lists = [c for c, t in v1.schema.items() if isinstance(t, pl.List)]
    ext = v1.with_columns([pl.col(c).list.head(3) for c in lists]).with_columns(
        pl.col("surface").list.eval(pl.lit("elsewhere")))
    uri = tmp_path / "other_team" / "sequences"
    write_deltalake(str(uri), arrow(ext), partition_by=["date"])

    out, rows = _seqctl(capsys, "engagements_v1", str(uri))
    assert set(rows) == {D2.isoformat(), D3.isoformat()}  # the days both tables have
    for day in (D2, D3):
        n = v1.filter(pl.col("date") == day)["event_id"].list.len()
        r = rows[day.isoformat()]
        assert r["exact"] == pytest.approx(100 * float((n <= 3).mean()), abs=0.05) and r["exact"] < 100
        assert r["overlap"] < 100 and r["edit"] > 0
        assert r["len_diff"] == pytest.approx(float((n - n.clip(upper_bound=3)).mean()), abs=0.005)
    rates = _field_rates(out)
    assert rates["surface"][-1] < 100.0  # the field that differs is named with its match rate
    assert rates["ts"] == [100.0, 100.0] and rates["item_id"] == [100.0, 100.0]

    _, one = _seqctl(capsys, str(uri), "engagements_v1", "--start", D3.isoformat(), "--end", D3.isoformat())
    assert set(one) == {D3.isoformat()}
    assert one[D3.isoformat()]["len_diff"] == rows[D3.isoformat()]["len_diff"]


def test_compare_refuses_an_unknown_table(migrated):
    from seq_assets.analysis.compare import compare

    lake, _ = migrated
    with pytest.raises(ValueError, match="engagements_v9"):
        compare(lake, "engagements_v1", "engagements_v9")
