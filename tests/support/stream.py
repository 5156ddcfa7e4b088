"""Fixtures and an independent oracle for the streaming tests (test_stream*.py import from here).

Everything is real: a Tansu broker on a loopback port, Delta tables under ``tmp_path`` and a
Dagster instance in a temporary DAGSTER_HOME. The oracle works on the JSON dicts the tests build
and shares no code with ``seq_assets``: the expected rows are recomputed here in plain Python.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

DAY_MS = 86_400_000
SOURCE = "user_engagements"
TOPIC = "user_engagements"
PARTITIONS = 3
EVENT_TYPES = ("pin_click", "pin_save", "pin_closeup")
MAX_RECORD_BYTES = 64 * 1024
# The shipped features (signal_defs/demo.py), written out rather than read from the engine.
FEATURES = {
    "engagements_v1": {"event_types": ("pin_click", "pin_save", "pin_closeup"), "window_days": 90, "max_length": 500},
    "saves_v1": {"event_types": ("pin_save",), "window_days": 365, "max_length": 100},
}
# Columns of events/<et> the oracle predicts (enrichment lookups aside).
EVENT_COLS_BASE = ["event_id", "user_id", "ts", "action", "item_id", "surface", "device", "country", "dwell_ms",
                   "event_type", "date", "user_item_count_30d"]
SEQ_FIELDS = ("event_id", "ts", "event_type", "item_id", "surface", "device", "country", "user_item_count_30d")


# ---- time ------------------------------------------------------------------------------------

def utc_today() -> date:
    return datetime.now(timezone.utc).date()


def day_start_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp() * 1000)


def end_of_day_ms(d: date) -> int:
    return day_start_ms(d) + DAY_MS


def day_of(ts: int) -> date:
    return date(1970, 1, 1) + timedelta(days=ts // DAY_MS)


def avoid_midnight(margin_s: float = 40.0) -> None:
    """Tests reason about 'today (UTC)': never start a scenario just before the day flips."""
    now = datetime.now(timezone.utc)
    left = (datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc) - now).total_seconds()
    if left < margin_s:
        time.sleep(left + 1)


# ---- records ---------------------------------------------------------------------------------

def event(eid: str, user: int, action: str, item: int, ts: int, *, dwell: int | None = None, bot: bool = False,
          surface: str = "home", device: str = "ios", country: str = "US") -> dict:
    """One engagement with the source schema of user_engagements."""
    return {"event_id": eid, "user_id": user, "action": action, "item_id": item, "ts": ts, "surface": surface,
            "device": device, "country": country, "dwell_ms": dwell, "is_bot": bot}


def dumps(e: dict) -> str:
    return json.dumps(e, separators=(",", ":"))


EVENT_FILTERS = {
    "pin_click": lambda o: o["action"] == "click" and not o["is_bot"],
    "pin_save": lambda o: o["action"] == "save" and not o["is_bot"],
    "pin_closeup": lambda o: o["action"] == "closeup" and o["dwell_ms"] is not None and o["dwell_ms"] >= 1000
    and not o["is_bot"],
}


def counts_for_counter(o: dict) -> bool:
    """user_item_count_30d counts click/save/closeup (any dwell) of humans."""
    return o["action"] in ("click", "save", "closeup") and not o["is_bot"]


@dataclass
class StreamOracle:
    """What the lake must hold after the given *valid* events were delivered (any order, any copies)."""

    events_in: list[dict]
    unique: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self):
        for e in self.events_in:
            if e["event_id"] in self.unique:
                assert self.unique[e["event_id"]] == e, "test data: one event id, two contents"
            self.unique.setdefault(e["event_id"], e)
        self._hist: dict[tuple[int, int], list[int]] = defaultdict(list)
        for o in self.unique.values():
            if counts_for_counter(o):
                self._hist[(o["user_id"], o["item_id"])].append(o["ts"])

    def count_30d(self, e: dict) -> int:
        t = e["ts"]
        return sum(1 for h in self._hist[(e["user_id"], e["item_id"])] if t - 30 * DAY_MS <= h < t)

    def raw_ids(self) -> set[str]:
        return set(self.unique)

    def events(self, et: str) -> list[dict]:
        keep = EVENT_FILTERS[et]
        return [dict(o, event_type=et, date=day_of(o["ts"]), user_item_count_30d=self.count_30d(o))
                for o in self.unique.values() if keep(o)]

    def all_events(self) -> list[dict]:
        return [e for et in EVENT_TYPES for e in self.events(et)]

    def late_by_day(self, today: date) -> dict[date, int]:
        out: dict[date, int] = defaultdict(int)
        for o in self.unique.values():
            if day_of(o["ts"]) < today:
                out[day_of(o["ts"])] += 1
        return dict(out)

    def days(self) -> set[date]:
        return {day_of(o["ts"]) for o in self.unique.values()}

    def event_days(self, et: str) -> set[date]:
        return {e["date"] for e in self.events(et)}

    def sequences(self, feature: str, day: date) -> dict[int, list[dict]]:
        """{user: events newest first (ties: event_id ascending)}, windowed to the feature, capped at N."""
        f = FEATURES[feature]
        end = end_of_day_ms(day)
        start = end - f["window_days"] * DAY_MS
        per_user: dict[int, list[dict]] = defaultdict(list)
        for e in self.all_events():
            if e["event_type"] in f["event_types"] and start <= e["ts"] < end:
                per_user[e["user_id"]].append(e)
        return {u: sorted(evs, key=lambda e: (-e["ts"], e["event_id"]))[: f["max_length"]]
                for u, evs in per_user.items()}


# ---- lake ------------------------------------------------------------------------------------

def read_table(lake_root: Path | str, kind: str, name: str) -> pl.DataFrame | None:
    path = Path(lake_root) / kind / name
    if not (path / "_delta_log").exists():
        return None
    return pl.read_delta(str(path))


def table_height(lake_root, kind, name) -> int:
    df = read_table(lake_root, kind, name)
    return 0 if df is None else df.height


def assert_unique_ids(df: pl.DataFrame, key: str = "event_id") -> None:
    dup = df.group_by(key).len().filter(pl.col("len") > 1)
    assert dup.is_empty(), f"doubled {key}s: {dup.head(10).to_dicts()}"


def assert_lake_matches(lake_root, oracle: StreamOracle) -> None:
    """raw/ and events/ hold exactly the oracle's events, each once, with their values (the
    point-in-time counter aside: runs of different partitions do not see each other's history)."""
    from polars.testing import assert_frame_equal

    raw = read_table(lake_root, "raw", SOURCE)
    assert_unique_ids(raw)
    assert set(raw["event_id"]) == oracle.raw_ids()
    for et in EVENT_TYPES:
        want, got = oracle.events(et), read_table(lake_root, "events", et)
        assert_unique_ids(got)
        cols = [c for c in EVENT_COLS_BASE if c != "user_item_count_30d"]
        want_df = pl.DataFrame([{c: e[c] for c in cols} for e in want],
                               schema={c: got.schema[c] for c in cols}).sort("event_id")
        assert_frame_equal(got.select(cols).sort("event_id"), want_df)


def snapshot_lake(lake_root) -> dict[str, list]:
    """Sorted ids per table: a compact fingerprint of what the lake holds."""
    out = {}
    for kind, name, key in [("raw", SOURCE, "event_id"), ("dead_letter", SOURCE, "record_id"),
                            *[("events", et, "event_id") for et in EVENT_TYPES]]:
        df = read_table(lake_root, kind, name)
        out[f"{kind}/{name}"] = [] if df is None else sorted(df.get_column(key).to_list())
    return out


# ---- Kafka -----------------------------------------------------------------------------------

def produce(bootstrap: str, items: list[tuple], topic: str = TOPIC) -> list[tuple[int, int]]:
    """Send ``(key, value[, partition])`` to ``topic`` in order; returns ``(partition, offset)`` per record.

    One request in flight, so the order in each partition is the order of ``items``. The request
    limit is 4 MiB so a 1 MiB record goes through the client (the decoder must refuse it).
    """
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, client_id="stream-tests", acks=1, linger_ms=2,
                      max_request_size=4 * 1024 * 1024, max_in_flight_requests_per_connection=1,
                      request_timeout_ms=20_000, max_block_ms=20_000)
    try:
        futures = []
        for it in items:
            key, value = it[0], it[1]
            part = it[2] if len(it) > 2 else None
            k = key.encode() if isinstance(key, str) else key
            v = value.encode() if isinstance(value, str) else value
            futures.append(p.send(topic, key=k, value=v, partition=part))
        p.flush(timeout=30)
        meta = [f.get(timeout=30) for f in futures]
    finally:
        p.close(timeout=5)
    return [(m.partition, m.offset) for m in meta]


def keyed(events: list[dict]) -> list[tuple[str, str]]:
    return [(str(e["user_id"]), dumps(e)) for e in events]


def cursor_at_end(kafka) -> str:
    """A sensor cursor at the topic's current end: earlier tests' records are not ours."""
    return json.dumps({"offsets": {str(p): e for p, e in kafka.end_offsets(TOPIC).items()}})


# ---- Dagster ---------------------------------------------------------------------------------

def stream_pair(max_batch: int | None = None, monkeypatch=None):
    """(job, sensor) for the source; ``max_batch`` sets SEQ_STREAM_MAX_BATCH while building them."""
    from seq_assets.orchestration.sensors import stream_defs
    from seq_assets.settings import load_compiled

    if max_batch is not None:
        assert monkeypatch is not None
        monkeypatch.setenv("SEQ_STREAM_MAX_BATCH", str(max_batch))
    try:
        return stream_defs(load_compiled(), SOURCE)
    finally:
        if max_batch is not None:
            monkeypatch.delenv("SEQ_STREAM_MAX_BATCH", raising=False)


def tick(sensor, instance, kafka, cursor: str | None):
    import dagster as dg

    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"kafka": kafka})
    return sensor(ctx)


def execute(job, instance, kafka, rr, raise_on_error: bool = True):
    from seq_assets.orchestration.resources import LakeResource

    return job.execute_in_process(run_config=rr.run_config, instance=instance, tags=rr.tags,
                                  resources={"lake": LakeResource(), "kafka": kafka}, raise_on_error=raise_on_error)


def drain(job, sensor, instance, kafka, cursor: str | None, max_ticks: int = 10):
    """Tick and run every requested run until a tick asks for nothing; returns (cursor, results, ticks)."""
    import dagster as dg

    results, ticks = [], []
    for _ in range(max_ticks):
        r = tick(sensor, instance, kafka, cursor)
        ticks.append(r)
        assert isinstance(r, dg.SensorResult), r
        if not r.run_requests:
            return cursor, results, ticks
        for rr in r.run_requests:
            res = execute(job, instance, kafka, rr)
            assert res.success
            results.append(res)
        cursor = r.cursor
    raise AssertionError(f"still asking for runs after {max_ticks} ticks")


@contextmanager
def commits_at_once(n: int, kind: str = "raw", timeout: float = 60.0):
    """While open, ``n`` micro-batch runs (threads) write a ``kind`` table at the same time: each
    thread's first creation check of one (``microbatch.create_if_missing``, where an empty lake's
    tables are made) and its first ``Lake.insert_unseen`` into one wait until all ``n`` are there."""
    from seq_assets.kafka import microbatch
    from seq_assets.storage.lake import Lake

    barriers = {"create": threading.Barrier(n), "insert": threading.Barrier(n)}
    seen = threading.local()
    create, insert = microbatch.create_if_missing, Lake.insert_unseen

    def together(step: str) -> None:
        if not getattr(seen, step, False):
            setattr(seen, step, True)
            barriers[step].wait(timeout=timeout)

    def create_if_missing(lake, k, name, frame):
        if k == kind:
            together("create")
        return create(lake, k, name, frame)

    def insert_unseen(self, k, name, df, key):
        if k == kind:
            together("insert")
        return insert(self, k, name, df, key)

    microbatch.create_if_missing, Lake.insert_unseen = create_if_missing, insert_unseen
    try:
        yield barriers
    finally:
        microbatch.create_if_missing, Lake.insert_unseen = create, insert


def run_at_once(source: str, bootstrap: str, run_requests, kind: str = "raw") -> list:
    """The micro-batches of ``run_requests`` (a sensor's), each on a thread of its own as its own run
    would do (its own engine and lake), their first writes into ``kind`` committed at the same time
    (:func:`commits_at_once`). Returns their MicroBatchResults in order; raises the first error."""
    from seq_assets.kafka.microbatch import run_micro_batch
    from seq_assets.orchestration.resources import LakeResource
    from seq_assets.orchestration.sensors import parse_ranges

    results: list = [None] * len(run_requests)
    errors: list = []

    def run(i, rr):
        cfg = rr.run_config["ops"][f"index_{source}"]["config"]
        try:
            results[i] = run_micro_batch(LakeResource().engine(), source, bootstrap, parse_ranges(cfg["ranges"]),
                                         epoch=cfg.get("epoch") or None)
        except BaseException as e:  # noqa: BLE001 - handed to the test below
            errors.append(e)

    with commits_at_once(len(run_requests), kind):
        threads = [threading.Thread(target=run, args=(i, rr)) for i, rr in enumerate(run_requests)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return results


def materializations(result) -> list:
    """AssetMaterialization objects of an ExecuteInProcessResult."""
    return [e.materialization for e in result.get_asset_materialization_events()]


def materialize_sequences(instance, day: date, features=tuple(FEATURES)):
    import dagster as dg

    from seq_assets.orchestration.assets import build_assets
    from seq_assets.orchestration.resources import LakeResource
    from seq_assets.settings import load_compiled

    res = dg.materialize(build_assets(load_compiled()), instance=instance, partition_key=day.isoformat(),
                         selection=[dg.AssetKey(["sequences", f]) for f in features],
                         resources={"lake": LakeResource()})
    assert res.success
    return res


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kbroker():
    """One real Tansu broker per test module, with the source's topic (3 partitions)."""
    from seq_assets.devtools.broker import EmbeddedBroker
    from seq_assets.kafka.client import ensure_source_topics
    from seq_assets.settings import load_compiled

    b = EmbeddedBroker()
    b.start(timeout=30)
    try:
        ensure_source_topics(b.bootstrap, load_compiled())
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def kcluster(s3_server):
    """Two Tansu brokers sharing one ``s3://`` storage on the moto server, with the source's topic;
    ``kcluster.bootstrap`` lists both."""
    from seq_assets.devtools.broker import BrokerCluster, s3_broker_env
    from seq_assets.kafka.client import ensure_source_topics
    from seq_assets.settings import load_compiled

    bucket = s3_server.new_bucket("tansu")
    with BrokerCluster(2, f"s3://{bucket}/", env=s3_broker_env(s3_server.storage_options())) as cluster:
        ensure_source_topics(cluster.bootstrap, load_compiled())
        yield cluster


@pytest.fixture(scope="module")
def kafka_res(kbroker):
    from seq_assets.orchestration.sensors import KafkaResource

    return KafkaResource(bootstrap_servers=kbroker.bootstrap)


@pytest.fixture(scope="module")
def dg_instance(tmp_path_factory):
    """A real (sqlite) Dagster instance in a temporary DAGSTER_HOME."""
    import dagster as dg

    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text("")
    inst = dg.DagsterInstance.local_temp(str(home))
    try:
        yield inst
    finally:
        inst.dispose()


@pytest.fixture
def stream_lake(tmp_path, monkeypatch) -> Path:
    """An empty lake (and landing area) for this test only."""
    lake, landing = tmp_path / "lake", tmp_path / "landing"
    landing.mkdir()
    monkeypatch.setenv("SEQ_LAKE_URI", str(lake))
    monkeypatch.setenv("SEQ_LANDING_DIR", str(landing))
    monkeypatch.delenv("SEQ_DEFS_DIR", raising=False)
    monkeypatch.delenv("SEQ_STREAM_MAX_BATCH", raising=False)
    return lake


def module_lake(tmp_path_factory, name: str):
    """(lake, landing, restore) for a module-scoped scenario: sets the env until ``restore()``."""
    import os

    root = tmp_path_factory.mktemp(name)
    lake, landing = root / "lake", root / "landing"
    landing.mkdir()
    keys = ("SEQ_LAKE_URI", "SEQ_LANDING_DIR", "SEQ_DEFS_DIR", "SEQ_STREAM_MAX_BATCH")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["SEQ_LAKE_URI"] = str(lake)
    os.environ["SEQ_LANDING_DIR"] = str(landing)
    os.environ.pop("SEQ_DEFS_DIR", None)
    os.environ.pop("SEQ_STREAM_MAX_BATCH", None)

    def restore():
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    return lake, landing, restore
