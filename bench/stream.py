"""Stream benchmark: micro-batch indexing throughput and produce-to-events freshness.

    .venv/bin/python bench/stream.py                       # both parts
    .venv/bin/python bench/stream.py --skip-freshness      # throughput only (no dagster dev)

Throughput: N demo events are produced to a fresh embedded broker, then read (a) by a bare
kafka-python consumer (the baseline, measured in the same run) and (b) by the micro-batch path,
Kafka to ``events/`` in bounded offset ranges. Freshness: ``dagster dev`` runs the stream sensor
against the broker while events are produced at a steady rate; each event's delay is the time from
its send until it is readable in ``events/``, measured once a warm-up event has made it through
(the platform running, not starting up).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def produce_demo(bootstrap: str, n: int, seed: int) -> int:
    from seq_assets.devtools.demo_data import DemoSpec, generate_event_lines
    from seq_assets.devtools.produce import produce_events
    from seq_assets.settings import load_compiled

    src = load_compiled().sources["user_engagements"]
    now = int(time.time() * 1000)
    lines = generate_event_lines(DemoSpec(users=max(1000, n // 50), days=1, events=n, seed=seed),
                                 start_ms=now - 6 * 3600_000, end_ms=now, id_prefix="bench-")
    out = produce_events(bootstrap, src, lines.select("key", "value").iter_rows())
    return int(out["sent"])


def bare_consume(bootstrap: str, topic: str, ends: dict[int, int]) -> float:
    """The baseline: read every record of the topic with kafka-python and nothing else."""
    from kafka import KafkaConsumer, TopicPartition

    t = time.perf_counter()
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=16 * 1024 * 1024)
    tps = [TopicPartition(topic, p) for p in ends]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    n = 0
    while any(c.position(tp) < ends[tp.partition] for tp in tps):
        for recs in c.poll(timeout_ms=500, max_records=100_000).values():
            n += len(recs)
    c.close()
    return time.perf_counter() - t


def throughput(a, bootstrap: str) -> dict:
    from kafka import TopicPartition

    from seq_assets.core.engine import Engine
    from seq_assets.kafka.client import end_offsets_exact, make_offset_probe
    from seq_assets.kafka.microbatch import run_micro_batch
    from seq_assets.orchestration.sensors import plan_ranges
    from seq_assets.settings import load_compiled
    from seq_assets.storage.lake import Lake

    compiled = load_compiled()
    topic = compiled.sources["user_engagements"]["topic"]
    _log(f"producing {a.events:,} events")
    sent = produce_demo(bootstrap, a.events, a.seed)
    probe = make_offset_probe(bootstrap)
    parts = sorted(probe.partitions_for_topic(topic))
    ends = {tp.partition: o for tp, o in end_offsets_exact(probe, [TopicPartition(topic, p) for p in parts]).items()}
    probe.close()
    records = sum(ends.values())
    _log(f"{sent:,} sent, {records:,} in the topic; bare consumer ...")
    bare_s = bare_consume(bootstrap, topic, ends)
    engine = Engine(compiled, Lake(f"{a.workdir}/lake-throughput"))
    batches, _, _ = plan_ranges({}, ends, a.max_batch, max_runs=10_000)
    _log(f"micro-batch path: {len(batches)} runs of up to {a.max_batch:,} records ...")
    t = time.perf_counter()
    inserted = 0
    for b in batches:
        res = run_micro_batch(engine, "user_engagements", bootstrap, b)
        inserted += sum(res.events_inserted.values())
    pipe_s = time.perf_counter() - t
    return {"records": records, "bare_s": bare_s, "pipeline_s": pipe_s, "events_inserted": inserted,
            "batches": len(batches)}


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return True
        except Exception:  # noqa: BLE001
            time.sleep(1)
    return False


def new_event_ids(lake, event_type: str, read_files: set[str]) -> list[str]:
    """Event ids in the files committed since the last call: the poll stays cheap as files pile up."""
    t = lake.table("events", event_type)
    if t is None:
        return []
    files = [f for f in t.file_uris() if f not in read_files]
    if not files:
        return []
    read_files.update(files)
    return pl.read_parquet(files, columns=["event_id"], hive_partitioning=False).get_column("event_id").to_list()


def freshness(a, bootstrap: str) -> dict:
    """Run ``dagster dev`` with the sensor on; send marked click events; time until each is in events/."""
    from kafka import KafkaProducer

    from seq_assets.storage.lake import Lake

    home = Path(a.workdir) / "dagster_home"
    lake_uri = f"{a.workdir}/lake-fresh"
    for old in (home, Path(lake_uri)):  # a previous run's lake would already hold the marked events
        shutil.rmtree(old, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "SEQ_LAKE_URI": lake_uri, "SEQ_KAFKA_BOOTSTRAP": bootstrap,
           "SEQ_SENSOR_INTERVAL": "5"}
    port = a.dagster_port
    log = open(Path(a.workdir) / "dagster_dev.log", "w")
    _log(f"starting dagster dev on port {port}")
    proc = subprocess.Popen([str(ROOT / ".venv/bin/dagster"), "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
                             "-p", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not _wait_http(f"http://127.0.0.1:{port}/server_info", 120):
            raise SystemExit("dagster dev did not come up; see dagster_dev.log")
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
        lake = Lake(lake_uri)
        read_files: set[str] = set()

        def click(eid: str, i: int) -> None:
            v = {"event_id": eid, "user_id": 1 + i % 50, "action": "click", "item_id": 1 + i % 97,
                 "ts": int(time.time() * 1000), "surface": "home_feed", "device": "ios", "country": "US",
                 "dwell_ms": None, "is_bot": False}
            producer.send("user_engagements", key=str(v["user_id"]).encode(), value=json.dumps(v).encode())
            producer.flush()

        # Warm-up: measure the platform running, not starting. Until a first event has made it into
        # events/, the daemon, the webserver and the code server are still starting on the same cores.
        t0 = time.time()
        click("fresh-warmup", 0)
        while "fresh-warmup" not in new_event_ids(lake, "pin_click", read_files):
            if time.time() - t0 > 180:
                raise SystemExit("the warm-up event never reached events/; see dagster_dev.log")
            time.sleep(0.25)
        warmup_s = time.time() - t0
        _log(f"warm-up event indexed after {warmup_s:.1f}s")
        sent: dict[str, float] = {}
        t_end = time.time() + a.fresh_seconds
        i = 0
        next_send = time.time()
        seen: dict[str, float] = {}
        _log(f"sending {a.fresh_rate}/s marked click events for {a.fresh_seconds}s")
        while time.time() < t_end + 30 and (time.time() < t_end or len(seen) < len(sent)):
            now = time.time()
            if now < t_end and now >= next_send:
                eid = f"fresh-{i}"
                click(eid, i)
                sent[eid] = time.time()
                i += 1
                next_send += 1.0 / a.fresh_rate
            for eid in new_event_ids(lake, "pin_click", read_files):
                if eid in sent and eid not in seen:
                    seen[eid] = time.time()
            time.sleep(0.25)
        delays = sorted(seen[e] - sent[e] for e in seen)
        return {"sent": len(sent), "seen": len(seen), "warmup_s": warmup_s,
                "p50_s": statistics.median(delays) if delays else None,
                "p95_s": delays[int(0.95 * (len(delays) - 1))] if delays else None,
                "max_s": max(delays) if delays else None}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--max-batch", type=int, default=None, help="records per micro-batch (default: the sensor's)")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--workdir", default=None)
    p.add_argument("--skip-freshness", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--fresh-seconds", type=float, default=60)
    p.add_argument("--fresh-rate", type=float, default=4)
    p.add_argument("--dagster-port", type=int, default=3310)
    a = p.parse_args()
    if a.max_batch is None:
        from seq_assets.settings import DEFAULT_STREAM_MAX_BATCH as DEFAULT_MAX_BATCH

        a.max_batch = int(os.environ.get("SEQ_STREAM_MAX_BATCH", DEFAULT_MAX_BATCH))
    a.workdir = a.workdir or tempfile.mkdtemp(prefix="seqbench-stream-")
    from seq_assets.devtools.broker import EmbeddedBroker
    from seq_assets.kafka.client import ensure_source_topics
    from seq_assets.settings import load_compiled

    results = {}
    with EmbeddedBroker(log_path=Path(a.workdir) / "tansu.log") as broker:
        ensure_source_topics(broker.bootstrap, load_compiled())
        if not a.skip_throughput:
            results["throughput"] = throughput(a, broker.bootstrap)
    if not a.skip_freshness:
        with EmbeddedBroker(log_path=Path(a.workdir) / "tansu-fresh.log") as broker:
            ensure_source_topics(broker.bootstrap, load_compiled())
            results["freshness"] = freshness(a, broker.bootstrap)

    print("\n== stream benchmark ==")
    if "throughput" in results:
        t = results["throughput"]
        bare = t["records"] / t["bare_s"]
        pipe = t["records"] / t["pipeline_s"]
        print(f"records in topic              {t['records']:,}")
        print(f"bare kafka-python consumer    {t['bare_s']:7.1f} s  {bare:,.0f} records/s")
        print(f"micro-batch Kafka->events/    {t['pipeline_s']:7.1f} s  {pipe:,.0f} records/s "
              f"({t['batches']} runs, {t['events_inserted']:,} events indexed)")
        print(f"ratio micro-batch/bare        {pipe / bare:7.2f}   (target >= 0.7)")
    if "freshness" in results:
        f = results["freshness"]
        print(f"freshness produce->events/    p50 {f['p50_s']:.2f} s, p95 {f['p95_s']:.2f} s, max {f['max_s']:.2f} s "
              f"over {f['seen']}/{f['sent']} events (targets p50 <= 8 s, p95 <= 15 s); "
              f"first event after start-up {f['warmup_s']:.1f} s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
