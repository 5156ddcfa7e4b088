"""Batch benchmark: raw archive -> events -> sequences on a large synthetic history.

    .venv/bin/python bench/batch.py                     # 10M events, 7 days, 200k users
    .venv/bin/python bench/batch.py --events 1000000 --users 20000   # a quick run

Every figure is measured in this one run and compared with a baseline measured in the same run
(machines here are noisy): the pipeline's events/s against a bare polars copy of the same raw
data into Delta. Each phase runs in its own process so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from phases import add_lake_args, run_phase, use_workdir  # noqa: E402

from seq_assets import settings  # noqa: E402


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _days(end: date, n: int) -> list[date]:
    return [end - timedelta(days=n - 1 - i) for i in range(n)]


def phase_generate(a) -> dict:
    from seq_assets.devtools.demo_data import DemoSpec, write_demo_data

    t = time.perf_counter()
    summary = write_demo_data(DemoSpec(users=a.users, days=a.days, events=a.events, seed=a.seed,
                                       end_date=date.fromisoformat(a.end_date)), os.environ["SEQ_LANDING_DIR"])
    return {"seconds": time.perf_counter() - t, "summary": summary}


def phase_raw(a) -> dict:
    from seq_assets.core.engine import Engine
    from seq_assets.settings import load_compiled

    engine = Engine(load_compiled(), settings.lake(), settings.landing())
    t = time.perf_counter()
    rows = dead = 0
    for day in _days(date.fromisoformat(a.end_date), a.days):
        out = engine.write_raw_batch_day("user_engagements", day)
        rows += out["rows"]
        dead += out["dead_letters"]
        for name, e in engine.compiled.enrichments.items():
            if e["kind"] == "lookup":
                engine.write_enrichment_day(name, day)
    return {"seconds": time.perf_counter() - t, "rows": rows, "dead_letters": dead}


def phase_copy(a) -> dict:
    """The baseline: read the raw archive with polars and write it to another Delta table."""
    import polars as pl
    from deltalake import write_deltalake

    src = f"{os.environ['SEQ_LAKE_URI']}/raw/user_engagements"
    dst = f"{a.workdir}/copy"
    shutil.rmtree(dst, ignore_errors=True)
    t = time.perf_counter()
    rows = 0
    for day in _days(date.fromisoformat(a.end_date), a.days):
        df = pl.scan_delta(src).filter(pl.col("date") == day).collect()
        rows += df.height
        write_deltalake(dst, df.to_arrow(compat_level=pl.CompatLevel.oldest()), mode="append", partition_by=["date"])
    return {"seconds": time.perf_counter() - t, "rows": rows}


def phase_pipeline(a) -> dict:
    """What the daily batch does for each day: index every event type, then build every feature."""
    from seq_assets.core.engine import Engine, LakeContext
    from seq_assets.settings import load_compiled

    compiled = load_compiled()
    engine = Engine(compiled, settings.lake(), settings.landing())
    days = _days(date.fromisoformat(a.end_date), a.days)
    timings = {"events": 0.0, "sequences": 0.0}
    event_rows = 0
    t0 = time.perf_counter()
    ctx = LakeContext(engine.lake)
    t = time.perf_counter()
    for _, out in engine.index_batch_days("user_engagements", days, ctx=ctx):  # what the events asset runs
        event_rows += sum(df.height for df in out.values())
    timings["events"] += time.perf_counter() - t
    seq_users = {}
    for table in compiled.features:
        t = time.perf_counter()
        for _, seqs, _ in engine.sequences_days(table, days):  # what the sequences asset runs
            seq_users[table] = seqs.height
        timings["sequences"] += time.perf_counter() - t
    return {"seconds": time.perf_counter() - t0, "event_rows": event_rows, "timings": timings, "users": seq_users}


def phase_sizes(a) -> dict:
    """Bytes per event of events/ and sequences/ against JSON lines of the same rows."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    from seq_assets.settings import load_compiled

    lake = settings.lake()
    compiled = load_compiled()
    out: dict = {}

    def table_bytes(kind, name):
        return lake.stats(kind, name)["bytes"]

    ev_bytes = ev_rows = json_bytes = 0
    for et in compiled.event_types:
        df = lake.read("events", et)
        ev_rows += df.height
        ev_bytes += table_bytes("events", et)
        sample = df.sample(min(df.height, 50_000), seed=1)
        json_bytes += len(sample.write_ndjson().encode()) / max(sample.height, 1) * df.height
    out["events"] = {"rows": ev_rows, "bytes_per_event": ev_bytes / ev_rows, "json_bytes_per_event": json_bytes / ev_rows,
                     "ratio": json_bytes / ev_bytes}
    last = date.fromisoformat(a.end_date)
    for table in compiled.features:
        df = lake.read("sequences", table, days=[last])
        n_events = int(df.get_column("event_id").list.len().sum())
        seq_bytes = lake.stats("sequences", table, day=last)["bytes"]
        sample = df.sample(min(df.height, 5_000), seed=1)
        per_user_json = len(sample.write_ndjson().encode()) / max(sample.height, 1)
        json_total = per_user_json * df.height
        # Bytes read for 3 fields against all fields: the column chunks a projected read touches.
        t = DeltaTable(lake.uri("sequences", table))
        files = [f for f in t.file_uris() if f"date={last.isoformat()}" in f]
        three = {"event_id", "ts", "item_id"}
        sel = total = 0
        for f in files:
            md = pq.ParquetFile(f).metadata
            for rg in range(md.num_row_groups):
                g = md.row_group(rg)
                for c in range(g.num_columns):
                    col = g.column(c)
                    size = col.total_compressed_size
                    total += size
                    if col.path_in_schema.split(".")[0] in three | {"user_id"}:
                        sel += size
        out[table] = {"users": df.height, "events": n_events, "bytes_per_event": seq_bytes / max(n_events, 1),
                      "json_bytes_per_event": json_total / max(n_events, 1), "ratio": json_total / max(seq_bytes, 1),
                      "bytes_3_fields": sel, "bytes_all_fields": total, "projection_ratio": total / max(sel, 1)}
    return out


PHASES = {"generate": phase_generate, "raw": phase_raw, "copy": phase_copy, "pipeline": phase_pipeline, "sizes": phase_sizes}


def main() -> None:
    p = argparse.ArgumentParser()
    add_lake_args(p)
    p.add_argument("--phase", choices=list(PHASES))
    a = p.parse_args()
    use_workdir(a)
    if a.phase:
        result = PHASES[a.phase](a)
        result["peak_rss_gib"] = _peak_rss_gib()
        print(json.dumps(result, default=str))
        return

    if not a.reuse:
        shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir, exist_ok=True)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    res = {}
    for name in ("generate", "raw", "copy", "pipeline", "sizes"):
        if a.reuse and name in ("generate", "raw") and os.path.exists(f"{a.workdir}/lake/raw"):
            continue
        if name == "pipeline":
            shutil.rmtree(f"{a.workdir}/lake/events", ignore_errors=True)
            shutil.rmtree(f"{a.workdir}/lake/sequences", ignore_errors=True)
        log(f"phase {name} ...")
        res[name] = run_phase(__file__, name)
        log(f"phase {name}: {res[name].get('seconds', 0):.1f}s, peak {res[name]['peak_rss_gib']:.2f} GiB")

    raw_rows = res["copy"]["rows"]
    copy_eps = raw_rows / res["copy"]["seconds"]
    pipe_eps = raw_rows / res["pipeline"]["seconds"]
    s = res["sizes"]
    print(f"\n== batch benchmark: {a.events:,} events requested, {raw_rows:,} raw rows, {a.users:,} users, {a.days} days ==")
    if "generate" in res:
        print(f"demo data generation        {res['generate']['seconds']:8.1f} s")
    if "raw" in res:
        print(f"landing -> raw/ (decode)    {res['raw']['seconds']:8.1f} s   {res['raw']['rows'] / res['raw']['seconds']:,.0f} events/s, {res['raw']['dead_letters']} dead letters")
    print(f"baseline polars copy        {res['copy']['seconds']:8.1f} s   {copy_eps:,.0f} events/s")
    print(f"pipeline raw->events->seqs  {res['pipeline']['seconds']:8.1f} s   {pipe_eps:,.0f} events/s "
          f"(events {res['pipeline']['timings']['events']:.1f}s, sequences {res['pipeline']['timings']['sequences']:.1f}s)")
    print(f"ratio pipeline/copy         {pipe_eps / copy_eps:8.2f}     (target >= 0.5)")
    print(f"pipeline peak memory        {res['pipeline']['peak_rss_gib']:8.2f} GiB (target <= 8)")
    print(f"events/    bytes per event  {s['events']['bytes_per_event']:8.1f}   JSON lines {s['events']['json_bytes_per_event']:.1f}   "
          f"{s['events']['ratio']:.1f}x smaller (target >= 3)")
    for table in [k for k in s if k not in ("events", "peak_rss_gib")]:
        t = s[table]
        print(f"sequences/{table:<16} bytes per event {t['bytes_per_event']:6.1f}   JSON lines {t['json_bytes_per_event']:.1f}   "
              f"{t['ratio']:.1f}x smaller; read 3 fields {t['bytes_3_fields']:,} B vs all {t['bytes_all_fields']:,} B "
              f"({t['projection_ratio']:.1f}x less)")


if __name__ == "__main__":
    main()
