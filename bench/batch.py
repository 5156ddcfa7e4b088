"""Batch benchmark: landing -> raw -> events -> sequences on a large synthetic history, against
the job a team would write by hand (bench/handwritten.sql, run by bench/handwritten.py).

    .venv/bin/python bench/batch.py                     # 10M events, 7 days, 200k users
    .venv/bin/python bench/batch.py --events 2000000 --users 40000   # the figures of docs/batch-cost.md
    .venv/bin/python bench/batch.py --sizes 1M,3M,10M   # seconds per million events at each size

Every figure is measured in this one run and compared with a baseline measured in the same run
(machines here are noisy): landing -> raw/ against DuckDB's read of the same lines into Delta, the
whole path (a single-run Dagster backfill of every batch asset over the days, on an empty lake)
against the hand-written DuckDB job, and raw -> events -> sequences against a bare polars copy of
the same raw data into Delta. Each phase runs in its own process so its peak memory is its own.
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

from phases import add_lake_args, run_phase, use_workdir

from seq_assets import settings


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
    """landing -> raw/ (and dead_letter/) for every day, as the raw asset runs it; then the
    enrichment snapshots (timed apart: the hand-written job's first step reads no snapshots)."""
    from seq_assets.core.engine import Engine
    from seq_assets.settings import load_compiled

    engine = Engine(load_compiled(), settings.lake(), settings.landing())
    days = _days(date.fromisoformat(a.end_date), a.days)
    t = time.perf_counter()
    rows = dead = 0
    for day in days:
        out = engine.write_raw_batch_day("user_engagements", day)
        rows += out["rows"]
        dead += out["dead_letters"]
    raw_seconds = time.perf_counter() - t
    t = time.perf_counter()
    for day in days:
        for name, e in engine.compiled.enrichments.items():
            if e["kind"] == "lookup":
                engine.write_enrichment_day(name, day)
    reasons = settings.lake().read("dead_letter", "user_engagements")
    reasons = {} if reasons is None else dict(reasons.group_by(pl_reason_kind()).len().iter_rows())
    return {"seconds": raw_seconds, "enrichment_seconds": time.perf_counter() - t, "rows": rows,
            "dead_letters": dead, "dead_letter_reasons": reasons}


def pl_reason_kind():
    """A dead letter's reason without the record's own text: 'mistyped field 'ts'', 'missing field ...'."""
    import polars as pl

    return pl.col("reason").str.replace(r":.*$", "").alias("reason")


def phase_hand_raw(a) -> dict:
    """The baseline of landing -> raw/: DuckDB's read_json of the same lines, deduplicated, into Delta."""
    import handwritten

    return handwritten.raw_only(os.environ["SEQ_LANDING_DIR"], f"{a.workdir}/hand-raw")


def phase_hand(a) -> dict:
    """The hand-written job, landing -> a Parquet file of sequences per day."""
    import handwritten

    return handwritten.run(os.environ["SEQ_LANDING_DIR"], f"{a.workdir}/hand", _days(date.fromisoformat(a.end_date), a.days))


def phase_backfill(a) -> dict:
    """The whole path as a single-run backfill runs it: one in-process Dagster run of every batch
    asset (raw, enrichments, events, sequences, with their in-body checks) over the partition
    range, on an empty lake of its own."""
    import dagster as dg

    lake_dir = f"{a.workdir}/backfill-lake"
    shutil.rmtree(lake_dir, ignore_errors=True)
    os.environ["SEQ_LAKE_URI"] = lake_dir
    from seq_assets.definitions import defs

    d = defs()
    days = _days(date.fromisoformat(a.end_date), a.days)
    tags = {"dagster/asset_partition_range_start": days[0].isoformat(),
            "dagster/asset_partition_range_end": days[-1].isoformat()}
    t = time.perf_counter()
    result = dg.materialize(list(d.assets), selection=dg.AssetSelection.groups("raw", "enrichments", "events", "sequences"),
                            instance=dg.DagsterInstance.ephemeral(), resources=d.resources, tags=tags)
    seconds = time.perf_counter() - t
    recorded: dict[str, dict[str, int]] = {}
    for m in result.get_asset_materialization_events():
        mat = m.event_specific_data.materialization
        if mat.asset_key.path[0] == "sequences" and "writes" in mat.metadata:
            recorded[mat.asset_key.path[1]] = recorded_changed_users(mat.metadata["writes"].value)
    steps = {e.step_key: e.event_specific_data.duration_ms / 1000 for e in result.all_events
             if e.event_type_value == "STEP_SUCCESS"}
    out = {"seconds": seconds, "success": result.success, "steps": steps, "sequences": {}}
    for table in settings.load_compiled().features:
        out["sequences"][table] = {"bytes": sequence_bytes_per_day(f"{lake_dir}/sequences/{table}", days),
                                   "changed_users": changed_users(table, days),
                                   "recorded_changed_users": recorded.get(table, {})}
    return out


def recorded_changed_users(writes_md: str) -> dict[str, int]:
    """The changed users per day the sequences asset records: its ``writes`` metadata table
    (``| day | kind | changed users | rows | bytes |``); a range run's scalar ``changed_users`` is
    only its last day's."""
    out = {}
    for line in writes_md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0][:4].isdigit() and cells[2].isdigit():
            out[cells[0]] = int(cells[2])
    return out


def sequence_bytes_per_day(table_dir: str, days: list[date]) -> dict[str, int]:
    """Bytes each day's commits added to a sequences/ table, from its Delta log: the sizes of the
    files added, by their ``date`` partition (a commit without one counts for the next day in order)."""
    out = {d.isoformat(): 0 for d in days}
    commits = sorted(Path(table_dir, "_delta_log").glob("*.json"))
    pending = iter(d.isoformat() for d in days)
    for commit in commits:
        adds = [json.loads(line)["add"] for line in commit.read_text().splitlines() if '"add"' in line[:8]]
        if not adds:
            continue
        undated = None
        for add in adds:
            day = (add.get("partitionValues") or {}).get("date")
            if day is None:
                undated = undated or next(pending, None)
                day = undated
            if day in out:
                out[day] += int(add["size"])
    return out


def changed_users(table: str, days: list[date]) -> dict[str, int]:
    """Users whose sequence changed each day, counted from consecutive days' reads (a user is
    changed when any stored field differs from the day before, or it appears or drops out)."""
    import polars as pl

    from seq_assets.training import read_sequences

    compiled = settings.load_compiled()
    feature = compiled.features[table]
    user = compiled.user_field(feature)
    name = f"{feature['name']}_v{feature['version']}"
    out, previous = {}, None
    for day in days:
        cur = read_sequences(name, day).select(user, pl.struct(pl.exclude(user, "date")).hash().alias("h"))
        if previous is None:
            out[day.isoformat()] = cur.height
        else:
            both = cur.join(previous, on=user, how="full", suffix="_prev")
            out[day.isoformat()] = both.filter(pl.col("h").ne_missing(pl.col("h_prev"))).height
        previous = cur
    return out


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


PHASES = {"generate": phase_generate, "raw": phase_raw, "hand_raw": phase_hand_raw, "copy": phase_copy,
          "pipeline": phase_pipeline, "sizes": phase_sizes, "backfill": phase_backfill, "hand": phase_hand}


def parse_size(text: str) -> int:
    """``1M``, ``500k`` or ``2000000`` as a number of events."""
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def scaling(a, log) -> None:
    """Seconds per million events of the whole path (the backfill) at each of ``--sizes``, users
    scaled with the events (50 events per user, the bench's default shape)."""
    rows = []
    for label in a.sizes.split(","):
        n = parse_size(label)
        workdir = f"{a.workdir}/size-{label.strip()}"
        shutil.rmtree(workdir, ignore_errors=True)
        argv = ["--events", str(n), "--users", str(max(n // 50, 1)), "--days", str(a.days), "--seed", str(a.seed),
                "--end-date", a.end_date, "--workdir", workdir]
        log(f"size {label}: generating ...")
        run_phase(__file__, "generate", argv)
        log(f"size {label}: backfill ...")
        res = run_phase(__file__, "backfill", argv)
        rows.append((label.strip(), n, res["seconds"], res["peak_rss_gib"]))
        log(f"size {label}: {res['seconds']:.1f}s, peak {res['peak_rss_gib']:.2f} GiB; steps "
            + ", ".join(f"{k} {v:.1f}s" for k, v in sorted(res["steps"].items(), key=lambda kv: -kv[1])))
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n== whole path (single-run backfill, {a.days} days) by size ==")
    for label, n, seconds, peak in rows:
        print(f"{label:>6} {n:>12,} events  {seconds:8.1f} s  {seconds / (n / 1e6):6.2f} s per million events  "
              f"peak {peak:.2f} GiB")
    per = [seconds / (n / 1e6) for _, n, seconds, _ in rows]
    print(f"largest / smallest seconds per million events  {per[-1] / per[0]:.2f}   (target <= 1.3)")
    print(f"peak memory at {rows[-1][0]}                  {rows[-1][3]:.2f} GiB (target <= 8)")


def main() -> None:
    p = argparse.ArgumentParser()
    add_lake_args(p)
    p.add_argument("--phase", choices=list(PHASES))
    p.add_argument("--sizes", help="comma-separated event counts (1M,3M,10M): seconds per million events of the "
                                   "whole path at each, instead of the comparison run")
    p.add_argument("--keep", action="store_true", help="with --sizes: keep each size's lake and landing files")
    a = p.parse_args()
    use_workdir(a)
    log = lambda m: print(m, file=sys.stderr, flush=True)
    if a.sizes and not a.phase:
        scaling(a, log)
        return
    if a.phase:
        result = PHASES[a.phase](a)
        result["peak_rss_gib"] = _peak_rss_gib()
        print(json.dumps(result, default=str))
        return

    if not a.reuse:
        shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir, exist_ok=True)
    res = {}
    for name in ("generate", "raw", "hand_raw", "copy", "pipeline", "sizes", "backfill", "hand"):
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
        r = res["raw"]
        print(f"landing -> raw/ (decode)    {r['seconds']:8.1f} s   {r['rows'] / r['seconds']:,.0f} events/s, "
              f"{r['dead_letters']} dead letters ({', '.join(f'{k}: {v}' for k, v in sorted(r['dead_letter_reasons'].items()))})")
    hr = res["hand_raw"]
    print(f"DuckDB landing -> Delta     {hr['seconds']:8.1f} s   {hr['rows'] / hr['seconds']:,.0f} events/s (bad lines dropped unreported)")
    if "raw" in res:
        print(f"ratio DuckDB/ours raw       {hr['seconds'] / res['raw']['seconds']:8.2f}     (target >= 1.0: as fast)")
    bf, hand = res["backfill"], res["hand"]
    print(f"whole path, Dagster backfill{bf['seconds']:8.1f} s   one run of every batch asset over {a.days} days, empty lake; "
          f"peak {bf['peak_rss_gib']:.2f} GiB")
    print("  its steps: " + ", ".join(f"{k} {v:.1f}s" for k, v in sorted(bf["steps"].items(), key=lambda kv: -kv[1])))
    print(f"hand-written DuckDB job     {hand['seconds']:8.1f} s   (raw {hand['timings']['raw']:.1f}s, events "
          f"{hand['timings']['events']:.1f}s, sequences {hand['timings']['sequences']:.1f}s); peak {hand['peak_rss_gib']:.2f} GiB")
    print(f"ratio ours/hand-written     {bf['seconds'] / hand['seconds']:8.2f}     (target <= 0.5, doing more: dead letters, "
          f"the counter enrichment, a second feature, checks, Delta tables)")
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
    hand_bytes = hand["sequence_bytes"]
    for table, t in bf["sequences"].items():
        print(f"\nsequences/{table}: bytes written per day (sizes of the files each day's commits added, from the "
              f"Delta log) and users whose sequence changed (counted by the bench from consecutive days; "
              f"recorded: the asset's per-day writes metadata)")
        for day, n in t["bytes"].items():
            extra = f"   hand-written {hand_bytes[day]:>12,} B" if table.startswith("engagements") and day in hand_bytes else ""
            rec = t["recorded_changed_users"].get(day)
            print(f"  {day}  {n:>12,} B  changed users {t['changed_users'][day]:>8,}"
                  f"  recorded {'-' if rec is None else f'{rec:,}':>8}{extra}")


if __name__ == "__main__":
    main()
