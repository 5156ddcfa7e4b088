"""Parallel micro-batch runs: one partition group against several, on the same records.

    .venv/bin/python bench/stream_groups.py [--events 60000] [--groups 3] [--max-batch 20000]

N demo events are produced to a fresh embedded broker (the demo topic's partitions). The baseline,
measured in the same run, indexes them as the sensor plans them with SEQ_STREAM_PARTITION_GROUPS=1:
runs over every partition, one after the other, into an empty lake. Then the same records are
indexed as planned with ``--groups`` groups: the runs of different groups at the same time (one
thread per group, each run with its own engine, as separate run workers would; a group's runs one
after the other), into a second empty lake. Prints both times, their ratio, the Delta commits each
lake took, and checks that both lakes hold the same event ids, each once.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl

SOURCE = "user_engagements"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def index_sequentially(lake_uri: str, bootstrap: str, batches) -> float:
    from seq_assets.core.engine import Engine
    from seq_assets.kafka.microbatch import run_micro_batch
    from seq_assets.settings import load_compiled
    from seq_assets.storage.lake import Lake

    t = time.perf_counter()
    for b in batches:
        run_micro_batch(Engine(load_compiled(), Lake(lake_uri)), SOURCE, bootstrap, b)
    return time.perf_counter() - t


def index_by_group(lake_uri: str, bootstrap: str, batches) -> float:
    """One thread per partition group, its runs in order; the groups at the same time."""
    by_group: dict[tuple[int, ...], list] = {}
    for b in batches:
        by_group.setdefault(tuple(r.partition for r in b), []).append(b)
    errors: list[BaseException] = []

    def run(group):
        try:
            index_sequentially(lake_uri, bootstrap, group)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(g,)) for g in by_group.values()]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t


def lake_ids(lake_uri: str, kind: str, name: str, key: str = "event_id") -> pl.Series:
    return pl.read_delta(f"{lake_uri}/{kind}/{name}", columns=[key]).get_column(key)


def commits(lake_uri: str, kind: str, name: str) -> int:
    return len(list(Path(lake_uri, kind, name, "_delta_log").glob("*.json")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--groups", type=int, default=3)
    ap.add_argument("--max-batch", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()

    from kafka import TopicPartition

    from bench.stream import produce_demo
    from seq_assets.devtools.broker import EmbeddedBroker
    from seq_assets.kafka.client import (
        end_offsets_exact,
        ensure_source_topics,
        make_offset_probe,
    )
    from seq_assets.orchestration.sensors import plan_ranges
    from seq_assets.settings import load_compiled

    compiled = load_compiled()
    topic = compiled.sources[SOURCE]["topic"]
    work = Path(tempfile.mkdtemp(prefix="seq-bench-groups-"))
    with EmbeddedBroker() as broker:
        ensure_source_topics(broker.bootstrap, compiled)
        _log(f"producing {a.events:,} events")
        produce_demo(broker.bootstrap, a.events, a.seed)
        probe = make_offset_probe(broker.bootstrap)
        parts = sorted(probe.partitions_for_topic(topic))
        ends = {tp.partition: o for tp, o in
                end_offsets_exact(probe, [TopicPartition(topic, p) for p in parts]).items()}
        probe.close()
        records = sum(ends.values())
        one, _, _ = plan_ranges({}, ends, a.max_batch, max_runs=10_000, groups=1)
        many, _, _ = plan_ranges({}, ends, a.max_batch, max_runs=10_000, groups=a.groups)
        _log(f"{records:,} records on {len(parts)} partitions; 1 group: {len(one)} runs, one after the other")
        base_s = index_sequentially(str(work / "one"), broker.bootstrap, one)
        _log(f"{a.groups} groups: {len(many)} runs, the groups at the same time")
        par_s = index_by_group(str(work / "many"), broker.bootstrap, many)

    same = True
    for kind, name in [("raw", SOURCE), *[("events", et["name"]) for et in compiled.event_types_of(SOURCE)]]:
        a_ids, b_ids = lake_ids(str(work / "one"), kind, name), lake_ids(str(work / "many"), kind, name)
        same &= a_ids.n_unique() == a_ids.len() == b_ids.len() == b_ids.n_unique() and set(a_ids) == set(b_ids)
    print(f"records                      {records:>10,}")
    print(f"1 group, runs in sequence    {base_s:>9.2f} s  ({records / base_s:,.0f} records/s, "
          f"{commits(str(work / 'one'), 'raw', SOURCE)} raw/ commits)")
    print(f"{a.groups} groups at once             {par_s:>9.2f} s  ({records / par_s:,.0f} records/s, "
          f"{commits(str(work / 'many'), 'raw', SOURCE)} raw/ commits)")
    print(f"speed-up (1 group / {a.groups} groups)  {base_s / par_s:>9.2f} x")
    print(f"same rows in both lakes, each once: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
