"""sequences/ layout benchmark: a full snapshot every day against one every 7 days and the changes between.

    .venv/bin/python bench/sequences_layout.py --events 2000000 --users 40000   # what docs/sequences-layout.md shows
    .venv/bin/python bench/sequences_layout.py --events 200000 --users 4000     # a quick run

Builds the demo history of bench/batch.py (same generator and shape arguments) once into events/,
then writes the features' sequences/ twice from the same events/, each in its own process (its
peak memory its own): ``full_snapshot_every_days`` 1 (every day whole: the layout before) and 7
(the default). Prints per day and layout the users whose sequence changed, the rows and bytes
written and the seconds, the totals and their ratios, the bytes the newest day is read from, a
read of the newest day in both (equal, and its seconds), and the JSON lines of that day's rows.
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

from phases import add_lake_args, run_phase

PERIODS = (1, 7)
SHARED = ("raw", "dead_letter", "enrichments", "events")


def _days(end: date, n: int) -> list[date]:
    return [end - timedelta(days=n - 1 - i) for i in range(n)]


def _lake_dir(a, period: int) -> str:
    return f"{a.workdir}/lake-full-every-{period}"


def _compiled(period: int):
    from seq_assets.core.compiled import Compiled
    from seq_assets.settings import load_compiled

    defs = {k: ({**d, "full_snapshot_every_days": period} if d["kind"] == "feature" else d)
            for k, d in load_compiled().defs.items()}
    return Compiled(defs)


def phase_events(a) -> dict:
    """Demo landing files -> raw/, enrichments/, events/ (as bench/batch.py builds them)."""
    from seq_assets.core.engine import Engine
    from seq_assets.devtools.demo_data import DemoSpec, write_demo_data
    from seq_assets.settings import load_compiled
    from seq_assets.storage.lake import Lake
    from seq_assets.storage.landing import Landing

    write_demo_data(DemoSpec(users=a.users, days=a.days, events=a.events, seed=a.seed,
                             end_date=date.fromisoformat(a.end_date)), f"{a.workdir}/landing")
    engine = Engine(load_compiled(), Lake(f"{a.workdir}/lake"), Landing(f"{a.workdir}/landing"))
    days = _days(date.fromisoformat(a.end_date), a.days)
    t = time.perf_counter()
    for day in days:
        engine.write_raw_batch_day("user_engagements", day)
        for name, e in engine.compiled.enrichments.items():
            if e["kind"] == "lookup":
                engine.write_enrichment_day(name, day)
    for _ in engine.index_batch_days("user_engagements", days):
        pass
    return {"seconds": time.perf_counter() - t}


def phase_sequences(a) -> dict:
    """Every feature's sequences/ for every day in one run, with ``--period``."""
    from seq_assets.core.engine import Engine
    from seq_assets.storage.lake import Lake

    root = _lake_dir(a, a.period)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    for kind in SHARED:
        if os.path.isdir(f"{a.workdir}/lake/{kind}"):
            os.symlink(f"{a.workdir}/lake/{kind}", f"{root}/{kind}")
    engine = Engine(_compiled(a.period), Lake(root))
    days = _days(date.fromisoformat(a.end_date), a.days)
    out = {}
    t0 = time.perf_counter()
    for table in engine.compiled.features:
        per_day, t = [], time.perf_counter()
        for day, seqs, w in engine.sequences_days(table, days):
            now = time.perf_counter()
            per_day.append({"day": day.isoformat(), "full": w.full_snapshot, "users": w.users,
                            "changed_users": w.changed_users, "rows": w.rows, "bytes": w.bytes_written,
                            "seconds": now - t})
            t = now
        out[table] = per_day
    return {"seconds": time.perf_counter() - t0, "tables": out,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def phase_read(a) -> dict:
    """The newest day of each feature from each layout: equal, its read time and the bytes read from."""
    import polars as pl

    from seq_assets.core import snapshots
    from seq_assets.storage.lake import Lake
    from seq_assets.training import read_sequences

    last = date.fromisoformat(a.end_date)
    out = {}
    for table in _compiled(1).features:
        frames, row = {}, {}
        for period in PERIODS:
            lake, compiled = Lake(_lake_dir(a, period)), _compiled(period)
            read_sequences(table, last, lake=lake, compiled=compiled, fields=["ts"])  # warm the log
            t = time.perf_counter()
            frames[period] = read_sequences(table, last, lake=lake, compiled=compiled)
            row[f"read_seconds_{period}"] = time.perf_counter() - t
            kinds = snapshots.partition_kinds(lake.scan("sequences", table))
            base = snapshots.base_day(kinds, last)
            row[f"bytes_read_from_{period}"] = sum(
                lake.stats("sequences", table, day=d)["bytes"] for d in kinds if base <= d <= last)
            row[f"table_bytes_{period}"] = lake.stats("sequences", table)["bytes"]
        row["equal"] = frames[PERIODS[0]].equals(frames[PERIODS[1]])
        path = f"{a.workdir}/{table}.jsonl"
        frames[PERIODS[0]].with_columns(pl.col("date").cast(pl.String)).write_ndjson(path)
        row["json_lines_bytes"] = os.path.getsize(path)
        os.remove(path)
        row["users"] = frames[PERIODS[0]].height
        # The alternative of rows that reference events instead of copying them: the keys alone.
        f = _compiled(1).features[table]
        keys = list(dict.fromkeys([f["ordering"]["tie_break"], f["ordering"]["by"]]))
        ref = f"{a.workdir}/{table}-refs.parquet"
        frames[PERIODS[0]].select(frames[PERIODS[0]].columns[0], *keys, "date").write_parquet(ref, compression="zstd")
        row["reference_bytes"] = os.path.getsize(ref)
        os.remove(ref)
        out[table] = row
    return out


def phase_daily(a) -> dict:
    """The newest day built again alone, as the daily asset builds yesterday: from its window, and,
    on a day of changes, compared with the day before as the table resolves it."""
    from seq_assets.core.engine import Engine
    from seq_assets.storage.lake import Lake

    engine = Engine(_compiled(a.period), Lake(_lake_dir(a, a.period)))
    last = date.fromisoformat(a.end_date)
    out = {}
    for table in engine.compiled.features:
        t = time.perf_counter()
        ((_, _, w),) = list(engine.sequences_days(table, [last]))
        out[table] = {"seconds": time.perf_counter() - t, "bytes": w.bytes_written, "changed_users": w.changed_users,
                      "full": w.full_snapshot}
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return out


PHASES = {"events": phase_events, "sequences": phase_sequences, "read": phase_read, "daily": phase_daily}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_lake_args(p)
    p.set_defaults(workdir="/tmp/seqbench-layout")
    p.add_argument("--phase", choices=list(PHASES))
    p.add_argument("--period", type=int, default=7)
    a = p.parse_args()
    if a.phase:
        print(json.dumps(PHASES[a.phase](a), default=str))
        return
    shape = ["--users", str(a.users), "--days", str(a.days), "--events", str(a.events), "--seed", str(a.seed),
             "--end-date", a.end_date, "--workdir", a.workdir]
    if not (a.reuse and os.path.isdir(f"{a.workdir}/lake/events")):
        shutil.rmtree(a.workdir, ignore_errors=True)
        os.makedirs(a.workdir)
        print(f"events/: {run_phase(__file__, 'events', shape)['seconds']:.1f} s", flush=True)
    runs = {k: run_phase(__file__, "sequences", [*shape, "--period", str(k)]) for k in PERIODS}
    before, after = runs[PERIODS[0]], runs[PERIODS[1]]
    print(f"\n{a.events:,} events, {a.users:,} users, {a.days} days; full snapshot every {PERIODS[0]} day(s) "
          f"(before) vs every {PERIODS[1]} days (after)")
    for table in before["tables"]:
        print(f"\n{table}")
        print(f"{'day':<12}{'users':>8}{'changed':>9}{'kind':>8}{'rows':>8}{'MB before':>11}{'MB after':>10}"
              f"{'after/before':>14}{'s before':>10}{'s after':>9}")
        for b, x in zip(before["tables"][table], after["tables"][table]):
            print(f"{b['day']:<12}{b['users']:>8}{x['changed_users']:>9}{'full' if x['full'] else 'changes':>8}"
                  f"{x['rows']:>8}{b['bytes'] / 1e6:>11.1f}{x['bytes'] / 1e6:>10.1f}{x['bytes'] / b['bytes']:>14.2f}"
                  f"{b['seconds']:>10.2f}{x['seconds']:>9.2f}")
        tb = sum(d["bytes"] for d in before["tables"][table])
        ta = sum(d["bytes"] for d in after["tables"][table])
        changes = [d for d in after["tables"][table] if not d["full"]]
        cb = sum(b["bytes"] for b, x in zip(before["tables"][table], after["tables"][table]) if not x["full"])
        print(f"written over the run: {tb / 1e6:.1f} MB before, {ta / 1e6:.1f} MB after ({ta / tb:.2f}x); "
              f"days of changes: {sum(d['bytes'] for d in changes) / 1e6:.1f} MB vs {cb / 1e6:.1f} MB "
              f"({sum(d['bytes'] for d in changes) / max(cb, 1):.2f}x), changed users "
              f"{sum(d['changed_users'] for d in changes) / max(sum(d['users'] for d in changes), 1):.1%} of users")
    print(f"\nsequences run: {before['seconds']:.1f} s before, {after['seconds']:.1f} s after "
          f"({after['seconds'] / before['seconds']:.2f}x); peak memory {before['peak_rss_gib']:.2f} GiB before, "
          f"{after['peak_rss_gib']:.2f} GiB after")
    daily = {k: run_phase(__file__, "daily", [*shape, "--period", str(k)]) for k in PERIODS}
    for table in before["tables"]:
        b, x = daily[PERIODS[0]][table], daily[PERIODS[1]][table]
        print(f"{table} newest day built again alone (the daily run): {b['seconds']:.1f} s before, "
              f"{x['seconds']:.1f} s after ({x['seconds'] / b['seconds']:.2f}x); {b['bytes'] / 1e6:.1f} MB before, "
              f"{x['bytes'] / 1e6:.1f} MB after, {x['changed_users']:,} changed users")
    print(f"daily run peak memory: {daily[PERIODS[0]]['peak_rss_gib']:.2f} GiB before, "
          f"{daily[PERIODS[1]]['peak_rss_gib']:.2f} GiB after")
    read = run_phase(__file__, "read", shape)
    for table, r in read.items():
        print(f"{table} newest day: equal in both layouts: {r['equal']}; read {r['read_seconds_1']:.2f} s before, "
              f"{r['read_seconds_7']:.2f} s after; read from {r['bytes_read_from_1'] / 1e6:.1f} MB before, "
              f"{r['bytes_read_from_7'] / 1e6:.1f} MB after; JSON lines of its {r['users']:,} rows "
              f"{r['json_lines_bytes'] / 1e6:.1f} MB ({r['json_lines_bytes'] / r['bytes_read_from_1']:.1f}x the day "
              f"before, {r['json_lines_bytes'] / r['bytes_read_from_7']:.1f}x what it is read from after); table "
              f"{r['table_bytes_1'] / 1e6:.1f} MB before, {r['table_bytes_7'] / 1e6:.1f} MB after; the day as references "
              f"(event ids and times only) {r['reference_bytes'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
