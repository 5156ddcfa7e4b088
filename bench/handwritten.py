"""Runs bench/handwritten.sql: the DuckDB job a team would write by hand, the baseline of bench/batch.py.

    .venv/bin/python bench/handwritten.py --landing /tmp/seqbench/landing --out /tmp/seqbench/hand \
        --start 2026-03-01 --end 2026-03-07

Step 1 (landing -> typed, deduplicated rows) goes to a Delta table partitioned by date, written
by delta-rs from DuckDB's Arrow result (DuckDB's own Delta writer is an extension it downloads at
run time); steps 2 and 3 read that table and write one Parquet file of sequences per day.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from string import Template

SQL = Path(__file__).resolve().parent / "handwritten.sql"
DAY_MS = 86_400_000
WINDOW_DAYS = 90


def statements() -> dict[str, str]:
    """The named statements of handwritten.sql (``-- name: <step>`` starts each)."""
    out: dict[str, str] = {}
    name = None
    for line in SQL.read_text().splitlines():
        if line.startswith("-- name: "):
            name = line.removeprefix("-- name: ").strip()
            out[name] = ""
        elif name is not None:
            out[name] += line + "\n"
    return {k: v.strip().rstrip(";") for k, v in out.items()}


def landing_to_delta(con, sql: dict[str, str], landing: str, raw_uri: str) -> int:
    """Step 1: the landing lines, typed and deduplicated, into a Delta table by date. Rows written."""
    from deltalake import write_deltalake

    rows = con.sql(Template(sql["raw"]).substitute(landing=landing)).to_arrow_table()
    write_deltalake(raw_uri, rows, mode="overwrite", partition_by=["date"])
    return rows.num_rows


def run(landing: str, out: str, days: list[date], threads: int | None = None) -> dict:
    """The whole job over ``days``; seconds of each step, rows and bytes written."""
    import duckdb
    from deltalake import DeltaTable

    sql = statements()
    shutil.rmtree(out, ignore_errors=True)
    Path(out).mkdir(parents=True)
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {threads}")
    con.execute(sql["settings"])
    timings: dict[str, float] = {}
    t0 = t = time.perf_counter()
    raw_uri = f"{out}/raw"
    raw_rows = landing_to_delta(con, sql, landing, raw_uri)
    timings["raw"] = time.perf_counter() - t

    t = time.perf_counter()
    con.register("raw", DeltaTable(raw_uri).to_pyarrow_dataset())
    con.execute(Template(sql["events"]).substitute(landing=landing, raw="raw"))
    events = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    timings["events"] = time.perf_counter() - t

    t = time.perf_counter()
    seq_bytes, users = {}, {}
    for day in days:
        end_ms = int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000) + DAY_MS
        folder = Path(out) / "sequences" / f"date={day.isoformat()}"
        folder.mkdir(parents=True)
        con.execute(Template(sql["sequences"]).substitute(
            out=f"{out}/sequences", day=day.isoformat(), start_ms=end_ms - WINDOW_DAYS * DAY_MS, end_ms=end_ms))
        seq_bytes[day.isoformat()] = sum(f.stat().st_size for f in folder.iterdir())
        users[day.isoformat()] = con.execute(f"SELECT count(*) FROM read_parquet('{folder}/*.parquet')").fetchall()[0][0]
    timings["sequences"] = time.perf_counter() - t
    con.close()
    return {"seconds": time.perf_counter() - t0, "timings": timings, "raw_rows": raw_rows, "events": events,
            "sequence_bytes": seq_bytes, "users": users}


def raw_only(landing: str, out: str) -> dict:
    """Step 1 alone: DuckDB's read of the landing lines into Delta."""
    import duckdb

    shutil.rmtree(out, ignore_errors=True)
    con = duckdb.connect()
    sql = statements()
    con.execute(sql["settings"])
    t = time.perf_counter()
    rows = landing_to_delta(con, sql, landing, out)
    return {"seconds": time.perf_counter() - t, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--landing", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--start", required=True, type=date.fromisoformat)
    p.add_argument("--end", required=True, type=date.fromisoformat)
    a = p.parse_args()
    days = [a.start + timedelta(days=i) for i in range((a.end - a.start).days + 1)]
    print(json.dumps(run(a.landing, a.out, days)))


if __name__ == "__main__":
    main()
