"""landing -> raw/ alone, on the landing files of a bench/batch.py run, in wall and CPU seconds.

    .venv/bin/python bench/raw_cost.py --workdir /tmp/cost2m ours     # 7 days of write_raw_batch_day, one engine
    .venv/bin/python bench/raw_cost.py --workdir /tmp/cost2m duckdb   # the hand-written job's step 1
    .venv/bin/python bench/raw_cost.py --workdir /tmp/cost2m parts    # CPU seconds of each part of ours
    .venv/bin/python bench/raw_cost.py --workdir /tmp/cost2m ours-text  # ours with every record on the text path

CPU seconds of the process are less disturbed than wall time by other work on a shared machine;
alternate ``ours`` and ``duckdb`` to compare them.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SOURCE = "user_engagements"


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["ours", "ours-text", "duckdb", "parts"])
    p.add_argument("--workdir", default="/tmp/seqbench")
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--end-date", default="2026-03-07")
    a = p.parse_args()
    os.environ["SEQ_LANDING_DIR"] = f"{a.workdir}/landing"
    os.environ["SEQ_LAKE_URI"] = out = f"{a.workdir}/raw-cost"
    shutil.rmtree(out, ignore_errors=True)
    end = date.fromisoformat(a.end_date)
    days = [end - timedelta(days=a.days - 1 - i) for i in range(a.days)]
    if a.what == "duckdb":
        import handwritten

        t, c = time.perf_counter(), cpu()
        handwritten.raw_only(os.environ["SEQ_LANDING_DIR"], out)
        print(f"duckdb wall {time.perf_counter() - t:.2f} s, cpu {cpu() - c:.2f} s")
        return
    from seq_assets import settings
    from seq_assets.core.engine import Engine

    engine = Engine(settings.load_compiled(), settings.lake(), settings.landing())
    if a.what == "ours-text":  # the decoder before the typed parse: the baseline of that change
        from seq_assets.core import decode

        decode.TYPED_PARSE = False
    if a.what in ("ours", "ours-text"):
        t, c = time.perf_counter(), cpu()
        for day in days:
            engine.write_raw_batch_day(SOURCE, day)
        print(f"{a.what} wall {time.perf_counter() - t:.2f} s, cpu {cpu() - c:.2f} s")
        return
    parts(engine, days)


def parts(engine, days: list[date]) -> None:
    """What write_raw_batch_day does, step by step, with the CPU seconds of each over the days."""
    import polars as pl

    from seq_assets.core import decode
    from seq_assets.core.engine import BATCH_ORIGIN, first_per_key

    src = engine.compiled.sources[SOURCE]
    spent: dict[str, float] = defaultdict(float)
    depth = [0]

    def timed(parse):  # counted once per batch: the text path calls itself for each slice
        def run(*args):
            c = cpu()
            depth[0] += 1
            try:
                return parse(*args)
            finally:
                depth[0] -= 1
                if not depth[0]:
                    spent["  of which JSON parse (typed + text)"] += cpu() - c
        return run

    decode._bulk_json, decode._bulk_typed = timed(decode._bulk_json), timed(decode._bulk_typed)
    only_batch = f"origin = '{BATCH_ORIGIN}'"
    for day in days:
        c = cpu()
        parts, _ = engine._file_records(SOURCE, src, day)
        spent["read + pre-select landing files"] += cpu() - c
        at = datetime.now(timezone.utc)
        valid, dead = [], []
        for rec, lines in parts:  # each file decoded on its own, as load_batch_day does
            c = cpu()
            meta = rec.select(pl.lit(BATCH_ORIGIN).alias("origin"), pl.col("_arrival").alias("arrival_date"),
                              pl.format("batch:{}:{}", pl.col("_file"), pl.col("_line")).alias("record_id"))
            spent["provenance columns"] += cpu() - c
            c = cpu()
            dec = decode.decode_records(src, rec.get_column("value"), meta, at, lines)
            spent["decode (parse, type, reasons)"] += cpu() - c
            c = cpu()
            valid.append(dec.valid.filter(pl.col("date") == day))
            dead.append(dec.dead.filter(pl.col("date") == day))
            spent["day filter + dedup"] += cpu() - c
        c = cpu()
        valid = first_per_key(pl.concat(valid), src["event_id_field"])
        spent["day filter + dedup"] += cpu() - c
        c = cpu()
        engine.lake.replace_partitions("raw", SOURCE, valid, [day], extra_predicate=only_batch)
        spent["write raw/ (Parquet + Delta commit)"] += cpu() - c
        c = cpu()
        engine.lake.replace_partitions("dead_letter", SOURCE, pl.concat(dead), [day], extra_predicate=only_batch)
        spent["write dead_letter/"] += cpu() - c
    total = sum(v for k, v in spent.items() if not k.startswith(" "))
    for k, v in spent.items():
        print(f"{k:40s} {v:6.2f} s CPU  {v / total:5.1%}")
    print(f"{'total':40s} {total:6.2f} s CPU")


if __name__ == "__main__":
    main()
