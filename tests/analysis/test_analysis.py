"""Analysis assets (DuckDB through the dagster-duckdb resource, stored as Delta), ``seqctl show``
and ``seqctl report``, on the small lake of ``analysis_lake``."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import dagster as dg
import polars as pl
import pytest
from dagster_duckdb import DuckDBResource
from polars.testing import assert_frame_equal

from seq_assets.analysis.queries import TABLES
from seq_assets.cli import main
from seq_assets.orchestration.analysis_assets import (
    analysis_defs,
    build_analysis_assets,
)
from seq_assets.orchestration.resources import LakeResource
from seq_assets.settings import load_compiled
from seq_assets.storage.lake import Lake
from seq_assets.training import point_in_time_sequences, read_sequences
from tests.support.analysis_lake import (
    DAYS,
    LATE_RECORDED,
    SOURCE,
    STREAM_ROWS,
    build,
    lake_env,
)
from tests.support.sequences import sequences_day, sequences_table

FEATURES = ("engagements_v1", "saves_v1")
EVENT_TYPES = ("pin_click", "pin_closeup", "pin_save")
ENRICHMENT_COLUMNS = {"item_embedding": 0.9, "item_category": 0.9, "user_item_count_30d": 0.99}


@pytest.fixture(scope="module")
def alake(tmp_path_factory):
    return build(tmp_path_factory)


@pytest.fixture(scope="module")
def lake(alake) -> Lake:
    return Lake(str(alake.lake))


@pytest.fixture
def env(alake, monkeypatch):
    for k, v in alake.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SEQ_DEFS_DIR", raising=False)
    return alake


@pytest.fixture(scope="module")
def runs(alake):
    """Days 1-2 as one single-run backfill, then day 3 alone: the materializations by (asset, day)."""
    resources = {"lake": LakeResource(), "duckdb": DuckDBResource(database=":memory:")}
    out = {}
    with lake_env(alake):
        assets = build_analysis_assets(load_compiled())
        ranged = dg.materialize(assets, resources=resources, tags={
            "dagster/asset_partition_range_start": DAYS[0].isoformat(),
            "dagster/asset_partition_range_end": DAYS[1].isoformat()})
        single = dg.materialize(assets, partition_key=DAYS[2].isoformat(), resources=resources)
    for result in (ranged, single):
        assert result.success
        for e in result.get_asset_materialization_events():
            out[(e.asset_key.path[1], e.partition)] = e.materialization
    return out


def _md(m, key) -> str:
    v = m.metadata[key]
    assert isinstance(v, dg.MarkdownMetadataValue), key
    return v.md_str


def _num(m, key):
    v = m.metadata[key]
    assert isinstance(v, (dg.IntMetadataValue, dg.FloatMetadataValue)), key
    return v.value


# ---- the assets ----------------------------------------------------------------------------------


def test_analysis_assets_are_in_the_code_location():
    from seq_assets.definitions import defs as lazy_defs

    defs = lazy_defs()
    graph = defs.resolve_asset_graph()
    keys = {k for k in graph.get_all_asset_keys() if k.path[0] == "analysis"}
    assert keys == {dg.AssetKey(["analysis", t]) for t in TABLES}
    for k in keys:
        node = graph.get(k)
        assert node.group_name == "analysis"
        assert node.partitions_def is not None
    assert isinstance(defs.resources["duckdb"], DuckDBResource)
    assert set(analysis_defs(load_compiled()).resources) == {"duckdb"}


def test_every_analysis_asset_is_materialized_for_every_day(runs, lake):
    assert set(runs) == {(t, d.isoformat()) for t in TABLES for d in DAYS}
    for t in TABLES:
        df = lake.read("analysis", t)
        assert sorted(df["date"].unique().to_list()) == list(DAYS), t
        assert _num(runs[(t, DAYS[-1].isoformat())], "rows") > 0


def test_rematerializing_a_day_replaces_it(runs, alake, lake):
    before = lake.read("analysis", "sequence_lengths").sort("date", "feature", "length")
    with lake_env(alake):
        result = dg.materialize(build_analysis_assets(load_compiled())[:1], partition_key=DAYS[1].isoformat(),
                                resources={"lake": LakeResource(), "duckdb": DuckDBResource(database=":memory:")})
    assert result.success
    assert_frame_equal(lake.read("analysis", "sequence_lengths").sort("date", "feature", "length"), before)


def test_sequence_lengths(runs, lake):
    got = lake.read("analysis", "sequence_lengths")
    for f in FEATURES:
        seqs = sequences_table(lake, f)
        want = (seqs.select(pl.col("ts").list.len().cast(pl.Int64).alias("length"), "date")
                .group_by("date", "length").agg(pl.len().cast(pl.Int64).alias("users")))
        assert_frame_equal(got.filter(pl.col("feature") == f).select("date", "length", "users").sort("date", "length"),
                           want.sort("date", "length"))
    m = runs[("sequence_lengths", DAYS[-1].isoformat())]
    last = sequences_day(lake, "engagements_v1", DAYS[-1])["ts"].list.len()
    assert _num(m, "engagements_v1_users") == last.len()
    assert _num(m, "engagements_v1_mean_length") == pytest.approx(last.mean())
    assert _num(m, "engagements_v1_max_length") == last.max()
    assert _num(m, "engagements_v1_p90_length") == pytest.approx(last.quantile(0.9))
    assert "| feature |" in _md(m, "summary") and "saves_v1" in _md(m, "summary")


def test_action_mix(runs, lake):
    raw = lake.read("raw", SOURCE).filter(~pl.col("is_bot"))
    want = raw.group_by("date", "surface", "country", "action").agg(pl.len().cast(pl.Int64).alias("events")).with_columns(
        (pl.col("events") / pl.col("events").sum().over("date", "surface", "country")).alias("share"))
    got = lake.read("analysis", "action_mix")
    assert set(got["source"]) == {SOURCE}
    cols = ["date", "surface", "country", "action", "events", "share"]
    assert_frame_equal(got.select(cols).sort(cols[:4]), want.select(cols).sort(cols[:4]), rel_tol=1e-12)
    m = runs[("action_mix", DAYS[-1].isoformat())]
    day = raw.filter(pl.col("date") == DAYS[-1])
    assert _num(m, "events") == day.height
    assert _num(m, "share_click") == pytest.approx((day["action"] == "click").mean())
    assert _num(m, "surfaces") == day["surface"].n_unique()
    assert "| surface |" in _md(m, "share_by_surface")


def test_late_arrival_lag(runs, lake):
    raw = lake.read("raw", SOURCE)
    want = (raw.with_columns((pl.col("arrival_date") - pl.col("date")).dt.total_days().cast(pl.Int64).alias("lag_days"))
            .group_by("date", "origin", "lag_days").agg(pl.len().cast(pl.Int64).alias("events")))
    got = lake.read("analysis", "late_arrival_lag")
    cols = ["date", "origin", "lag_days", "events"]
    assert_frame_equal(got.select(cols).sort(cols[:3]), want.select(cols).sort(cols[:3]))
    assert (got.filter(pl.col("lag_days") >= 1)["events"].sum()) > 0  # the demo data has late deliveries
    # Stream rows carry their Kafka time: lag percentiles in seconds; batch rows have none.
    stream = got.filter(pl.col("origin") == "kafka")
    assert stream["events"].sum() == STREAM_ROWS and set(stream["date"]) == {DAYS[-1]}
    assert stream.filter(pl.col("lag_days") == 2)["events"].to_list() == [1]
    same_day = stream.filter(pl.col("lag_days") == 0)
    lags = (raw.filter((pl.col("origin") == "kafka") & (pl.col("arrival_date") == pl.col("date")))
            .select(((pl.col("arrived_at").dt.epoch("ms") - pl.col("ts")) / 1000).alias("s"))["s"])
    if same_day.height:
        assert same_day["p50_lag_s"][0] == pytest.approx(lags.quantile(0.5, interpolation="linear"))
    assert got.filter(pl.col("origin") == "batch")["p50_lag_s"].null_count() == got.filter(pl.col("origin") == "batch").height
    m = runs[("late_arrival_lag", DAYS[-1].isoformat())]
    day = raw.filter(pl.col("date") == DAYS[-1])
    assert _num(m, "events") == day.height
    assert _num(m, "late_events") == day.filter(pl.col("arrival_date") > pl.col("date")).height
    assert _num(m, "stream_late_events_recorded") == LATE_RECORDED[DAYS[-1]]
    all_stream = (raw.filter(pl.col("origin") == "kafka")
                  .select(((pl.col("arrived_at").dt.epoch("ms") - pl.col("ts")) / 1000).alias("s"))["s"])
    assert _num(m, "stream_events") == STREAM_ROWS
    assert _num(m, "stream_p50_lag_s") == pytest.approx(all_stream.quantile(0.5, interpolation="linear"))
    assert _num(m, "stream_p99_lag_s") == pytest.approx(all_stream.quantile(0.99, interpolation="linear"))
    assert _num(runs[("late_arrival_lag", DAYS[1].isoformat())], "rows") > 0
    assert "| lag_days |" in _md(m, "lag_distribution").replace("| source | origin ", "")


def test_enrichment_coverage(runs, lake):
    got = lake.read("analysis", "enrichment_coverage")
    assert set(got["event_type"]) == set(EVENT_TYPES)
    assert set(got["column"]) == set(ENRICHMENT_COLUMNS)
    for et in EVENT_TYPES:
        ev = lake.read("events", et)
        for col, minimum in ENRICHMENT_COLUMNS.items():
            want = ev.group_by("date").agg(pl.len().alias("events"), pl.col(col).is_not_null().sum().alias("covered"))
            g = got.filter((pl.col("event_type") == et) & (pl.col("column") == col)).sort("date")
            assert g["events"].to_list() == want.sort("date")["events"].to_list()
            assert g["covered"].to_list() == want.sort("date")["covered"].to_list()
            assert g["coverage"].to_list() == pytest.approx((g["covered"] / g["events"]).to_list())
            assert set(g["min_coverage"]) == {minimum}
    m = runs[("enrichment_coverage", DAYS[-1].isoformat())]
    day = pl.concat([lake.read("events", et, days=[DAYS[-1]]).select("item_category") for et in EVENT_TYPES])
    assert _num(m, "coverage_item_category") == pytest.approx(day["item_category"].is_not_null().mean())
    assert isinstance(m.metadata["below_min_coverage"], dg.IntMetadataValue)
    assert "| event_type |" in _md(m, "coverage_table")


def test_analysis_tables_are_views_too(runs, lake):
    from seq_assets.sql import query

    df = query("SELECT feature, sum(users) AS users FROM analysis.sequence_lengths "
               "WHERE date = DATE '2026-03-03' GROUP BY feature ORDER BY feature", lake)
    assert df["feature"].to_list() == list(FEATURES)
    assert df["users"][0] == sequences_day(lake, "engagements_v1", DAYS[-1]).height


# ---- seqctl show ---------------------------------------------------------------------------------

ROW = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\s+(\+\S+)?\s+(pin_\w+)\s+(\d+)\s+(\w+)")


def _timeline(out: str) -> list[tuple[str, str, int, str]]:
    rows = []
    for line in out.splitlines():
        m = ROW.match(line)
        if m:
            rows.append((m.group(1), m.group(3), int(m.group(4)), m.group(5)))
    return rows


def _busy_user(lake, day) -> int:
    s = sequences_day(lake, "engagements_v1", day)
    return int(s.sort(pl.col("ts").list.len(), "user_id", descending=[True, False])["user_id"][0])


def _expected(seq: dict, n: int) -> list[tuple[str, str, int, str]]:
    return [(datetime.fromtimestamp(t / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), et, item, surface)
            for t, et, item, surface in list(zip(seq["ts"], seq["event_type"], seq["item_id"], seq["surface"]))[:n]]


def test_seqctl_show_prints_the_latest_sequence_newest_first(env, lake, capsys):
    user = _busy_user(lake, DAYS[-1])
    assert main(["show", "engagements_v1", str(user), "--limit", "500"]) == 0
    out = capsys.readouterr().out
    seq = read_sequences("engagements_v1", DAYS[-1], users=[user], lake=lake).row(0, named=True)
    n = len(seq["ts"])
    assert f"user {user}" in out and f"end of {DAYS[-1]}" in out and f"{n} events" in out
    assert "item_category" in out.splitlines()[2] and "user_item_count_30d" in out.splitlines()[2]
    rows = _timeline(out)
    assert rows == _expected(seq, n)
    assert [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True)


def test_seqctl_show_as_of_a_day_and_a_time(env, lake, capsys):
    user = _busy_user(lake, DAYS[1])
    assert main(["show", "engagements_v1", str(user), "--as-of", DAYS[1].isoformat(), "--limit", "3",
                 "--enrichments", "item_category,item_embedding"]) == 0
    out = capsys.readouterr().out
    seq = read_sequences("engagements_v1", DAYS[1], users=[user], lake=lake).row(0, named=True)
    assert _timeline(out) == _expected(seq, 3)
    assert f"{len(seq['ts']) - 3} older events not shown" in out
    assert "(32)" in out  # the embedding, abbreviated
    t = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
    assert main(["show", "engagements_v1", str(user), "--as-of", "2026-03-02T12:00:00Z", "--limit", "500"]) == 0
    out = capsys.readouterr().out
    labels = pl.DataFrame({"user_id": [user], "request_ts": [int(t.timestamp() * 1000)]})
    pit = point_in_time_sequences("engagements_v1", labels, fields=["ts", "event_type", "item_id", "surface"],
                                  lake=lake).row(0, named=True)
    assert "just before 2026-03-02 12:00:00 UTC" in out
    rows = _timeline(out)
    assert rows == _expected(pit, len(pit["ts"])) and rows
    assert all(r[0] < "2026-03-02 12:00:00" for r in rows)


def test_seqctl_show_unknown_user_and_field(env, capsys):
    assert main(["show", "engagements_v1", "999999"]) == 0
    assert "(no events)" in capsys.readouterr().out
    assert main(["show", "engagements_v1", "1", "--enrichments", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


# ---- seqctl report -------------------------------------------------------------------------------


def test_seqctl_report_renders_four_plots_in_one_self_contained_page(env, lake, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", "--date", DAYS[-1].isoformat(), "--out", str(out)]) == 0
    page = out.read_text()
    ids = ["plot-sequence-lengths", "plot-events-per-hour", "plot-late-arrival-lag", "plot-coverage"]
    calls = re.findall(r'Plotly\.newPlot\(\s*"([\w-]+)"', page)
    assert calls == ids
    for i in ids:
        assert f'id="{i}"' in page
    # Self-contained: plotly.js is inlined, nothing is loaded from elsewhere.
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=", page)
    assert len(page) > 1_000_000 and "plotly.js" in page.lower()
    # The plots carry the day's data.
    for name in (*FEATURES, *EVENT_TYPES, "item_category", "min_coverage", "same day"):
        assert f'"{name}"' in page, name
    users = sequences_day(lake, "engagements_v1", DAYS[-1]).height
    assert f"<td>{users:,}</td>" in page
