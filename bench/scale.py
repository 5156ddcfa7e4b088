"""Scale-out benchmark: the cost of spreading a backfill over workers and user buckets.

    .venv/bin/python bench/scale.py                          # 3 demo days, 2,000 users, 150k events
    .venv/bin/python bench/scale.py --users 500 --events 30000
    make scale-bench SCALE_ARGS="--buckets 4"

One run, one data set, one stack (Redis, a throwaway Postgres instance, moto's S3 server in a
process of its own, two dagster-celery workers of one step at a time each, all on loopback,
``tests/support/cluster.py``), each figure against a baseline measured in the same run:

* workers: the backfill of every day as one run with ``--buckets`` user buckets on the Celery
  executor, with two workers and then with one (the other stopped). On this 2-core machine a
  speed-up is not expected: the figure is the overhead of distribution, two-worker time over
  one-worker time (target <= 1.3).
* buckets: the same backfill on the two workers unbucketed (one step per asset): bucketed time
  over unbucketed (target <= 1.3). And the same pair in process (no Celery), where the bucket steps
  run one after another: the whole cost of splitting a day, nothing hidden by running side by side.

Every run writes its own lake on the same S3 server; the four lakes' events/ and sequences/ must be
equal (checked at the end; a difference fails the script). Before the measured Celery runs, a
one-day run warms the workers (their first step imports the code location).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.cluster import (
    start_moto_process,
    start_postgres,
    start_redis,
    start_workers,
    stop_process,
    write_instance_yaml,
)
from tests.support.envutil import scoped_env
from tests.support.s3 import S3Bucket

TARGET = 1.3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--events", type=int, default=150_000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--buckets", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    import dagster as dg

    from seq_assets.devtools.demo_data import DemoSpec, write_demo_data
    from seq_assets.orchestration.executors import backfill
    from seq_assets.storage.lake import Lake

    work = Path(tempfile.mkdtemp(prefix="seq-scale-"))
    end = date(2026, 3, 1) + timedelta(days=args.days - 1)
    first, last = (end - timedelta(days=args.days - 1)).isoformat(), end.isoformat()
    landing = work / "landing"
    write_demo_data(DemoSpec(users=args.users, days=args.days, events=args.events, seed=args.seed, end_date=end), landing)
    print(f"data: {args.events:,} events, {args.users:,} users, {args.days} days ({first}..{last}); "
          f"{args.buckets} buckets", flush=True)

    moto, s3 = start_moto_process(work / "moto")
    redis = start_redis(work / "redis")
    pg = start_postgres()
    home = write_instance_yaml(work / "dagster_home", pg.url)
    bucket = S3Bucket(s3, s3.new_bucket("scale"))
    env = {"SEQ_LAKE_URI": bucket.uri("warmup"), "SEQ_STORAGE_OPTIONS": json.dumps(s3.storage_options()),
           "SEQ_LANDING_DIR": str(landing), "SEQ_CELERY_BROKER": redis.url, "SEQ_CELERY_BACKEND": redis.url,
           "DAGSTER_HOME": str(home), "SEQ_DEFS_DIR": None, "SEQ_DEFS_MODULE": None}
    workers = None
    times: dict[str, float] = {}
    try:
        workers = start_workers(2, redis.url, redis.url, {k: v for k, v in env.items() if v is not None},
                                work / "workers")
        with scoped_env(**env):
            instance = dg.DagsterInstance.from_config(str(home))

            def run(label: str, executor: str, buckets: int, start: str = first, stop: str = last) -> None:
                t = time.perf_counter()
                result = backfill(instance, start, stop, buckets=buckets, executor=executor, lake_uri=bucket.uri(label))
                took = time.perf_counter() - t
                if instance.get_run_by_id(result.run_id).status != dg.DagsterRunStatus.SUCCESS:
                    errors = [e.message for e in instance.all_logs(result.run_id) if e.is_error]
                    raise SystemExit(f"{label}: the run failed: {errors[:3]}")
                times[label] = took
                print(f"  {label:<28} {took:7.1f} s", flush=True)

            run("warmup", "celery", args.buckets, last, last)
            run("celery_2_workers", "celery", args.buckets)
            run("celery_2_workers_unbucketed", "celery", 1)
            stop_process(workers.procs[1])
            run("celery_1_worker", "celery", args.buckets)
            run("in_process_unbucketed", "in_process", 1)
            run("in_process_bucketed", "in_process", args.buckets)
            instance.dispose()

        # Every lake holds the same events/ and sequences/.
        from seq_assets.settings import load_compiled

        compiled = load_compiled()
        opts = s3.storage_options()
        lakes = {label: Lake(bucket.uri(label), opts) for label in times if label != "warmup"}
        base = lakes["in_process_unbucketed"]
        for kind, names in (("events", list(compiled.event_types)), ("sequences", list(compiled.features))):
            for name in names:
                sort = ([compiled.sources[compiled.event_types[name]["source"]]["event_id_field"]] if kind == "events"
                        else [compiled.user_field(compiled.features[name]), "date"])
                want = base.read(kind, name).drop("ingested_at", strict=False).sort(sort)
                for label, lake in lakes.items():
                    got = lake.read(kind, name).drop("ingested_at", strict=False).sort(sort)
                    if not got.equals(want):
                        raise SystemExit(f"{label}: {kind}/{name} differs from the unbucketed in-process build")
        print(f"every lake's events/ and sequences/ equal ({len(lakes)} runs)")
    finally:
        if workers is not None:
            workers.stop()
        pg.stop()
        redis.stop()
        moto.stop()

    def ratio(label: str, a: str, b: str, target: bool = True) -> None:
        print(f"{label}: {times[a]:.1f} s / {times[b]:.1f} s = {times[a] / times[b]:.2f}x"
              + (f"  (target <= {TARGET}x)" if target else ""))

    print()
    ratio(f"two workers / one worker ({args.buckets} buckets, Celery)", "celery_2_workers", "celery_1_worker")
    ratio(f"bucketed / unbucketed ({args.buckets} buckets, two Celery workers)", "celery_2_workers",
          "celery_2_workers_unbucketed")
    ratio(f"bucketed / unbucketed ({args.buckets} buckets, in process, steps one after another)",
          "in_process_bucketed", "in_process_unbucketed", target=False)
    print(f"Celery, two workers / in process, same buckets: {times['celery_2_workers'] / times['in_process_bucketed']:.2f}x")


if __name__ == "__main__":
    main()
