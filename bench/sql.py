"""SQL benchmark: the three README queries in DuckDB (over the lake views) against polars, in one run.

    .venv/bin/python bench/sql.py --reuse                 # the 10M-event bench lake of bench/batch.py
    .venv/bin/python bench/sql.py --events 300000 --users 5000 --workdir /tmp/seqbench-sql-small

The lake is the one bench/batch.py builds (same --workdir/--events/--users/--days/--end-date
defaults); with --reuse an existing lake there is used as it is, else it is built with batch.py's
generate, raw and pipeline phases. Each query runs --repeat times per engine, alternating; the
best and median times are printed, the two results are checked to agree, and the bytes the DuckDB
scan read for the one-day query are shown against that day's files and the whole table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from phases import add_lake_args, run_phase, use_workdir  # noqa: E402

from seq_assets import settings  # noqa: E402

TABLE = "engagements_v1"
GAP_BUCKETS = [(10, "1 <10s"), (60, "2 10s-1m"), (600, "3 1-10m"), (3600, "4 10m-1h"), (86400, "5 1h-1d")]


# ---- the same three queries in polars ------------------------------------------------------------


def polars_actions_per_surface_7d(dt, day: date):
    import polars as pl

    start_ms = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000) - 6 * 86_400_000
    return (pl.scan_delta(dt).filter(pl.col("date") == day).select("surface", "event_type", "ts")
            .explode(["surface", "event_type", "ts"])
            .filter(pl.col("ts") >= start_ms)
            .group_by("surface", "event_type").agg(pl.len().cast(pl.Int64).alias("actions"))
            .sort("surface", "event_type").collect())


def polars_sequence_length_distribution(dt, day: date):
    import polars as pl

    return (pl.scan_delta(dt).filter(pl.col("date") == day)
            .select(pl.col("ts").list.len().cast(pl.Int64).alias("length"))
            .group_by("length").agg(pl.len().cast(pl.Int64).alias("users")).sort("length")
            .with_columns((pl.col("users").cum_sum() / pl.col("users").sum()).alias("cumulative_share"))
            .collect())


def polars_time_between_engagements(dt, day: date):
    import polars as pl

    bucket = pl.when(pl.col("gap_s") < GAP_BUCKETS[0][0]).then(pl.lit(GAP_BUCKETS[0][1]))
    for limit, label in GAP_BUCKETS[1:]:
        bucket = bucket.when(pl.col("gap_s") < limit).then(pl.lit(label))
    bucket = bucket.otherwise(pl.lit("6 >=1d"))
    return (pl.scan_delta(dt).filter(pl.col("date") == day)
            .select(pl.col("ts").list.diff(null_behavior="drop").alias("diff"))
            .explode("diff").drop_nulls()
            .select((-pl.col("diff") / 1000.0).alias("gap_s"))
            .group_by(bucket.alias("gap")).agg(pl.len().cast(pl.Int64).alias("pairs"), pl.col("gap_s").median().alias("median_s"))
            .with_columns((pl.col("pairs") / pl.col("pairs").sum()).round(4).alias("share"))
            .select("gap", "pairs", "share", "median_s").sort("gap").collect())


POLARS = {
    "actions_per_surface_7d": polars_actions_per_surface_7d,
    "sequence_length_distribution": polars_sequence_length_distribution,
    "time_between_engagements": polars_time_between_engagements,
}


def same(a, b) -> bool:
    """The DuckDB and polars results agree (floats to 1e-9 relative)."""
    from polars.testing import assert_frame_equal

    try:
        assert_frame_equal(a, b.select(a.columns), check_dtypes=False, rel_tol=1e-9, abs_tol=1e-9)
        return True
    except AssertionError as e:
        print(f"mismatch: {e}", file=sys.stderr)
        return False


# ---- the lake ------------------------------------------------------------------------------------


def build_lake(a) -> None:
    lake = Path(a.workdir) / "lake"
    if a.reuse and (lake / "sequences" / TABLE / "_delta_log").is_dir():
        print(f"reusing the lake in {lake}", file=sys.stderr)
        return
    phases = ["generate", "raw", "pipeline"]
    if a.reuse and (lake / "raw").is_dir():
        phases = ["pipeline"]
    elif not a.reuse:
        shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir, exist_ok=True)
    args = ["--events", str(a.events), "--users", str(a.users), "--days", str(a.days), "--seed", str(a.seed),
            "--end-date", a.end_date, "--workdir", a.workdir]
    for phase in phases:
        t = time.perf_counter()
        print(f"building the lake: phase {phase} ...", file=sys.stderr, flush=True)
        run_phase(str(ROOT / "bench" / "batch.py"), phase, args)
        print(f"  {phase}: {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)


# ---- timing --------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser()
    add_lake_args(p)
    p.add_argument("--repeat", type=int, default=3, help="runs of each query per engine")
    p.add_argument("--day", help="the day queried (default: --end-date)")
    a = p.parse_args()
    use_workdir(a)
    build_lake(a)

    from seq_assets.sql import connect, query
    from seq_assets.storage.sql import EXAMPLES, IOStats, day_files, example

    lake = settings.lake()
    day = date.fromisoformat(a.day or a.end_date)
    dt = lake.table("sequences", TABLE)
    if dt is None:
        raise SystemExit(f"no sequences/{TABLE} in {lake.root}")

    t = time.perf_counter()
    conn = connect(lake)
    register_s = time.perf_counter() - t
    results = {}
    try:
        for name in EXAMPLES:
            sql = example(name, day)
            times = {"duckdb": [], "polars": []}
            out = {}
            for _ in range(a.repeat):
                t = time.perf_counter()
                out["duckdb"] = query(sql, conn=conn)
                times["duckdb"].append(time.perf_counter() - t)
                t = time.perf_counter()
                out["polars"] = POLARS[name](dt, day)
                times["polars"].append(time.perf_counter() - t)
            results[name] = {"times": times, "rows": out["duckdb"].height, "same": same(out["duckdb"], out["polars"])}
    finally:
        conn.close()

    # Partition pruning and projection: what the one-day length query really read.
    stats = IOStats()
    conn = connect(lake, io_stats=stats, tables=[f"sequences.{TABLE}"])
    try:
        query(example("sequence_length_distribution", day), conn=conn)
    finally:
        conn.close()
    day_bytes = sum(day_files(lake, "sequences", TABLE, day).values())
    all_files = day_files(lake, "sequences", TABLE)
    other_days = [f for f in stats.files if f not in day_files(lake, "sequences", TABLE, day)]

    users = lake.read("sequences", TABLE, days=[day], columns=["user_id"]).height
    print(f"\n== SQL benchmark: sequences/{TABLE} on {day}, {users:,} users "
          f"({a.events:,} events requested, {a.days} days), best and median of {a.repeat} ==")
    print(f"{'query':<30} {'duckdb best':>11} {'median':>8} {'polars best':>11} {'median':>8} "
          f"{'duckdb/polars':>13} {'rows':>6}  same result")
    for name, r in results.items():
        d, pm = r["times"]["duckdb"], r["times"]["polars"]
        print(f"{name:<30} {min(d):10.3f}s {statistics.median(d):7.3f}s {min(pm):10.3f}s {statistics.median(pm):7.3f}s "
              f"{min(d) / min(pm):13.2f} {r['rows']:>6}  {'yes' if r['same'] else 'NO'}")
    print(f"DuckDB view registration (every lake table): {register_s:.3f}s")
    print(f"pruning: the one-day length query read {stats.bytes_read / 2**20:,.1f} MiB from {len(stats.files)} file(s) "
          f"({len(other_days)} of other days); the day's files hold {day_bytes / 2**20:,.1f} MiB, "
          f"the table {sum(all_files.values()) / 2**20:,.1f} MiB in {len(all_files)} files")
    if not all(r["same"] for r in results.values()):
        raise SystemExit("DuckDB and polars disagree")


if __name__ == "__main__":
    main()
