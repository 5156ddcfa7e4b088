"""SQL over the lake: every table as a DuckDB view, partition pruning by bytes read, the README
queries against independent computations, and ``seqctl sql`` in each output format."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from seq_assets.cli import main
from seq_assets.core import snapshots
from seq_assets.sql import connect, query
from seq_assets.storage.lake import Lake
from seq_assets.storage.sql import (
    EXAMPLES,
    IOStats,
    day_files,
    example,
    format_table,
    views,
)
from tests.support.analysis_lake import DAYS, build, end_of_day_ms
from tests.support.sequences import sequences_day, sequences_table

REPO = Path(__file__).resolve().parents[2]
EXPECTED_VIEWS = {
    "raw.user_engagements", "dead_letter.user_engagements",
    "enrichments.item_embedding", "enrichments.item_category", "enrichments.item_popularity",
    "events.pin_click", "events.pin_closeup", "events.pin_save",
    "sequences.engagements_v1", "sequences.saves_v1", "metrics.late_arrivals",
}
KEYS = {"raw": ["event_id"], "dead_letter": ["record_id", "value"], "enrichments": ["item_id", "date"],
        "events": ["event_id"], "sequences": ["user_id", "date"], "metrics": ["metric_id"]}
SEQ = "sequences.engagements_v1"


@pytest.fixture(scope="module")
def sql_lake(tmp_path_factory):
    return build(tmp_path_factory)


@pytest.fixture
def env(sql_lake, monkeypatch):
    for k, v in sql_lake.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SEQ_DEFS_DIR", raising=False)
    return sql_lake


@pytest.fixture(scope="module")
def lake(sql_lake) -> Lake:
    return Lake(str(sql_lake.lake))


@pytest.fixture(scope="module")
def conn(lake):
    c = connect(lake)
    yield c
    c.close()


# ---- views ---------------------------------------------------------------------------------------


def test_every_lake_table_is_a_view_under_its_path_name(conn, lake):
    names = set(views(conn))
    assert EXPECTED_VIEWS <= names
    for v in names:  # nothing else: each view is a Delta table of the lake
        kind, name = v.split(".")
        assert lake.exists(kind, name), v


@pytest.mark.parametrize("view", sorted(EXPECTED_VIEWS))
def test_view_returns_exactly_the_delta_table(conn, lake, view):
    kind, name = view.split(".")
    got = query(f"SELECT * FROM {view}", conn=conn)
    want = sequences_table(lake, name) if kind == "sequences" else lake.read(kind, name)
    assert got.height == want.height > 0
    assert got.columns == want.columns
    assert_frame_equal(got.sort(KEYS[kind]), want.sort(KEYS[kind]), check_dtypes=True)


def test_views_accept_filters_on_every_kind_of_column(conn, lake):
    got = query("SELECT event_id, item_embedding FROM events.pin_click "
                "WHERE date = DATE '2026-03-02' AND surface = 'search' AND user_item_count_30d >= 1", conn=conn)
    want = (lake.read("events", "pin_click", days=[DAYS[1]])
            .filter((pl.col("surface") == "search") & (pl.col("user_item_count_30d") >= 1))
            .select("event_id", "item_embedding"))
    assert got.height == want.height > 0
    assert_frame_equal(got.sort("event_id"), want.sort("event_id"))


def test_query_accepts_a_lake_or_a_connection(env, conn):
    sql = "SELECT count(*) AS n FROM events.pin_save"
    assert query(sql)["n"][0] == query(sql, env.lake)["n"][0] == query(sql, conn=conn)["n"][0] \
        == query(conn, sql)["n"][0] > 0


# ---- partition pruning and projection, shown by the bytes read --------------------------------


def test_one_day_query_reads_only_the_files_that_make_the_day(lake):
    stats = IOStats()
    c = connect(lake, io_stats=stats)
    try:
        per_day = {d: day_files(lake, "sequences", "engagements_v1", d) for d in DAYS}
        total = sum(sum(f.values()) for f in per_day.values())
        # A day of changes is read over the full snapshot under it: the files of those days only.
        kinds = snapshots.partition_kinds(lake.scan("sequences", "engagements_v1"))
        assert kinds[DAYS[0]] and not kinds[DAYS[1]]  # the first day is a full snapshot, the next ones changes
        make = {d: {k: v for b in DAYS if snapshots.base_day(kinds, d) <= b <= d for k, v in per_day[b].items()}
                for d in DAYS}
        for d in DAYS:
            stats.reset()
            df = query(f"SELECT * FROM {SEQ} WHERE date = '{d}'", conn=c)
            assert df.height > 0 and set(df["date"]) == {d}
            assert stats.files == set(make[d]), "opened files of days that do not make this one"
            assert 0 < stats.unique_bytes <= sum(make[d].values()) <= total
            assert stats.bytes_read >= stats.unique_bytes
        # Column projection: one list column of the day reads less than the whole row.
        stats.reset()
        query(f"SELECT * FROM {SEQ} WHERE date = '{DAYS[-1]}'", conn=c)
        all_columns = stats.unique_bytes
        stats.reset()
        query(f"SELECT user_id, len(ts) FROM {SEQ} WHERE date = '{DAYS[-1]}'", conn=c)
        assert stats.files == set(make[DAYS[-1]])
        assert 0 < stats.unique_bytes < all_columns / 3
        # A range and no filter at all.
        stats.reset()
        query(f"SELECT count(*) FROM {SEQ} WHERE date BETWEEN '{DAYS[1]}' AND '{DAYS[2]}'", conn=c)
        assert stats.files == set(make[DAYS[1]]) | set(make[DAYS[2]])
        stats.reset()
        query(f"SELECT * FROM {SEQ}", conn=c)
        assert stats.files == set().union(*per_day.values())
        assert stats.unique_bytes > max(sum(f.values()) for f in per_day.values())
    finally:
        c.close()


def test_seqctl_sql_stats_prints_the_bytes_read(env, capsys):
    assert main(["sql", "--stats", f"SELECT count(*) AS n FROM {SEQ} WHERE date = '2026-03-02'"]) == 0
    err = capsys.readouterr().err
    assert "read" in err and "from 2 file(s)" in err  # the day's changes and the full snapshot under them


# ---- the README queries against computations that share no code with them -----------------------


def _seqs(lake, day) -> pl.DataFrame:
    return sequences_day(lake, "engagements_v1", day)


def expected_actions_per_surface_7d(lake, day) -> pl.DataFrame:
    start = end_of_day_ms(day) - 7 * 86_400_000
    counts: Counter = Counter()
    for row in _seqs(lake, day).select("surface", "event_type", "ts").iter_rows(named=True):
        for s, et, t in zip(row["surface"], row["event_type"], row["ts"]):
            if t >= start:
                counts[(s, et)] += 1
    rows = sorted(counts.items())
    return pl.DataFrame({"surface": [k[0] for k, _ in rows], "event_type": [k[1] for k, _ in rows],
                         "actions": [n for _, n in rows]}, schema={"surface": pl.String, "event_type": pl.String,
                                                                   "actions": pl.Int64})


def expected_sequence_length_distribution(lake, day) -> pl.DataFrame:
    counts = Counter(len(ts) for ts in _seqs(lake, day)["ts"].to_list())
    lengths = sorted(counts)
    total = sum(counts.values())
    cum, shares = 0, []
    for n in lengths:
        cum += counts[n]
        shares.append(cum / total)
    return pl.DataFrame({"length": lengths, "users": [counts[n] for n in lengths], "cumulative_share": shares},
                        schema={"length": pl.Int64, "users": pl.Int64, "cumulative_share": pl.Float64})


def _bucket(gap_s: float) -> str:
    for limit, label in ((10, "1 <10s"), (60, "2 10s-1m"), (600, "3 1-10m"), (3600, "4 10m-1h"), (86400, "5 1h-1d")):
        if gap_s < limit:
            return label
    return "6 >=1d"


def expected_time_between_engagements(lake, day) -> pl.DataFrame:
    gaps: dict[str, list[float]] = {}
    for ts in _seqs(lake, day)["ts"].to_list():
        for a, b in zip(ts, ts[1:]):
            g = (a - b) / 1000.0
            gaps.setdefault(_bucket(g), []).append(g)
    total = sum(len(v) for v in gaps.values())
    keys = sorted(gaps)
    return pl.DataFrame({"gap": keys, "pairs": [len(gaps[k]) for k in keys],
                         "share": [round(len(gaps[k]) / total, 4) for k in keys],
                         "median_s": [statistics.median(gaps[k]) for k in keys]},
                        schema={"gap": pl.String, "pairs": pl.Int64, "share": pl.Float64, "median_s": pl.Float64})


EXPECTED = {
    "actions_per_surface_7d": expected_actions_per_surface_7d,
    "sequence_length_distribution": expected_sequence_length_distribution,
    "time_between_engagements": expected_time_between_engagements,
}


@pytest.mark.parametrize("name", list(EXAMPLES))
@pytest.mark.parametrize("day", DAYS)
def test_readme_query_matches_an_independent_computation(conn, lake, name, day):
    got = query(example(name, day), conn=conn)
    want = EXPECTED[name](lake, day)
    assert got.height == want.height > 0
    assert_frame_equal(got, want, check_dtypes=False, rel_tol=1e-9, abs_tol=1e-9)


def test_readme_shows_the_three_worked_examples():
    readme = (REPO / "README.md").read_text()
    assert "## Offline analysis" in readme
    for name in EXAMPLES:
        assert example(name, "2026-03-07") in readme, f"README does not show {name}"
    for sql_bit in ("UNNEST(", "len(ts)", "ts[2:]"):
        assert sql_bit in readme


# ---- seqctl sql output -------------------------------------------------------------------------


Q = "SELECT user_id, date, len(ts) AS n, ts[1:2] AS newest FROM sequences.engagements_v1 WHERE date = '2026-03-03' ORDER BY user_id"


def test_seqctl_sql_prints_a_table(env, conn, capsys):
    assert main(["sql", "--max-rows", "5", Q]) == 0
    out = capsys.readouterr().out.splitlines()
    want = query(Q, conn=conn)
    assert out[0].split() == ["user_id", "date", "n", "newest"]
    assert set(out[1]) <= {"-", " "}
    assert len(out) == 2 + 5 + 1
    first = want.row(0, named=True)
    assert out[2].split()[:3] == [str(first["user_id"]), "2026-03-03", str(first["n"])]
    assert out[-1] == f"({want.height} rows, {want.height - 5} not shown)"


def test_format_table_aligns_and_cuts():
    text = format_table(pl.DataFrame({"a": [1, 22], "b": ["x" * 100, None]}), max_width=10)
    lines = text.splitlines()
    assert lines[2].startswith(" 1  xxxxxxxxx…") and lines[3].startswith("22  null")
    assert lines[-1] == "(2 rows)"


def test_seqctl_sql_csv(env, conn, capsys, tmp_path):
    assert main(["sql", "--format", "csv", Q]) == 0
    got = pl.read_csv(capsys.readouterr().out.encode(), try_parse_dates=True)
    want = query(Q, conn=conn)
    assert got["user_id"].to_list() == want["user_id"].to_list()
    assert got["n"].to_list() == want["n"].to_list()
    assert [json.loads(v) for v in got["newest"]] == want["newest"].to_list()
    out = tmp_path / "r.csv"
    assert main(["sql", "--format", "csv", "--out", str(out), Q]) == 0
    assert pl.read_csv(out).height == want.height


def test_seqctl_sql_json(env, conn, capsys, tmp_path):
    out = tmp_path / "r.json"
    assert main(["sql", "--format", "json", "--out", str(out), Q]) == 0
    rows = json.loads(out.read_text())
    want = query(Q, conn=conn)
    assert len(rows) == want.height
    assert rows[0] == {"user_id": want["user_id"][0], "date": "2026-03-03", "n": want["n"][0],
                       "newest": want["newest"][0].to_list()}
    capsys.readouterr()
    assert main(["sql", "--format", "json", "SELECT 1 AS one"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"one": 1}]


def test_seqctl_sql_parquet(env, conn, tmp_path, capsys):
    out = tmp_path / "r.parquet"
    assert main(["sql", "--format", "parquet", "--out", str(out), Q]) == 0
    assert_frame_equal(pl.read_parquet(out), query(Q, conn=conn))
    assert main(["sql", "--format", "parquet", Q]) == 2  # binary output needs a file
    assert "--out" in capsys.readouterr().err


def test_seqctl_sql_lists_views_and_reports_bad_queries(env, capsys):
    assert main(["sql", "--tables"]) == 0
    assert EXPECTED_VIEWS <= set(capsys.readouterr().out.split())
    assert main(["sql", "SELECT * FROM events.no_such_type"]) == 1
    err = capsys.readouterr().err
    assert "no_such_type" in err and "events.pin_click" in err
