"""Shared pieces of the serving tests (test_serving.py, test_serving_http.py).

* :func:`shared_lake`: a small demo lake built once per pytest session by the real batch path
  (``write_demo_data`` + one ``dg.materialize`` of the whole graph per day), cached under the
  session's base temp dir, and :func:`copy_lake` for tests that write to a lake of their own.
* Engagement records as the clients send them and the Kafka record frames ``KafkaTail.ingest`` takes.
* A uvicorn server in a thread, ``seqctl serve`` as a subprocess, and a load generator that runs as
  its own process (``python -m tests.support.serving_helpers flood '<json>'``) so a flood does not share
  the test process's GIL with the requests whose latency is measured.

Nothing here imports ``seq_assets`` at module import time except where a function needs it, so
the flood subprocess starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from tests.support.demo_lake import DAYS as TEMPLATE_DAYS
from tests.support.demo_lake import SPEC as TEMPLATE_SPEC
from tests.support.demo_lake import copy_template
from tests.support.envutil import scoped_env

ROOT = Path(__file__).resolve().parents[2]
DAY_MS = 86_400_000
SOURCE = "user_engagements"
DAYS = (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3))
SPEC = {"users": 150, "days": 3, "events": 6000, "seed": 7}
FEATURES = ("engagements_v1", "saves_v1")
ENV_KEYS = ("SEQ_LAKE_URI", "SEQ_LANDING_DIR", "SEQ_DEFS_DIR", "SEQ_TENANTS_FILE")


# ---- time ------------------------------------------------------------------------------------

def now_ms() -> int:
    return int(time.time() * 1000)


def day_start_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp() * 1000)


def end_of_day_ms(d: date) -> int:
    return day_start_ms(d) + DAY_MS


def as_of_param(d: date) -> str:
    """The ``as_of`` that ends day ``d``: midnight after it (``2026-03-04`` for 2026-03-03)."""
    return (d + timedelta(days=1)).isoformat()


def avoid_midnight(margin_s: float = 60.0) -> None:
    """Tests that reason about "today" (UTC) never start just before the day flips."""
    now = datetime.now(timezone.utc)
    left = (datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc) - now).total_seconds()
    if left < margin_s:
        time.sleep(left + 1)


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


# ---- the lake --------------------------------------------------------------------------------

@contextlib.contextmanager
def lake_env(lake: Path, landing: Path):
    """SEQ_LAKE_URI / SEQ_LANDING_DIR set (SEQ_DEFS_DIR unset) inside the block, restored after."""
    with scoped_env(SEQ_LAKE_URI=str(lake), SEQ_LANDING_DIR=str(landing), SEQ_DEFS_DIR=None):
        yield


@dataclass
class ServingLake:
    root: Path
    lake: Path
    landing: Path

    def env(self, **extra) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
        env.update(SEQ_LAKE_URI=str(self.lake), SEQ_LANDING_DIR=str(self.landing), **extra)
        return env


def build_lake(root: Path, tmp_path_factory) -> ServingLake:
    """The demo data for DAYS and the lake after one real Dagster run of the batch graph per day."""


    out = ServingLake(root, root / "lake", root / "landing")
    if (root / "BUILT").exists():
        return out
    shutil.rmtree(root, ignore_errors=True)
    assert tuple(DAYS) == TEMPLATE_DAYS and SPEC == TEMPLATE_SPEC
    copy_template(tmp_path_factory, root)
    (root / "BUILT").write_text("ok")
    return out


def shared_lake(tmp_path_factory) -> ServingLake:
    """One lake per pytest session, whichever serving test module asks first. Read-only: copy it to write."""
    return build_lake(tmp_path_factory.getbasetemp() / "serving_lake", tmp_path_factory)


def copy_lake(src: ServingLake, dst: Path) -> ServingLake:
    shutil.copytree(src.root, dst)
    return ServingLake(dst, dst / "lake", dst / "landing")


def open_day(lake: Path, day: date) -> None:
    """Forget the closed sequences of ``day`` (every feature), as if its backfill had not run yet."""
    from deltalake import DeltaTable

    for f in FEATURES:
        DeltaTable(str(lake / "sequences" / f)).delete(f"date = '{day.isoformat()}'")


def close_day(lake: Path, day: date) -> None:
    """Build and write the sequences of ``day`` with the batch engine, as the closing backfill does."""
    from seq_assets import settings
    from seq_assets.core.engine import Engine
    from seq_assets.settings import load_compiled
    from seq_assets.storage.lake import Lake

    engine = Engine(load_compiled(), Lake(str(lake)), settings.landing())
    for f in FEATURES:
        engine.write_sequences_day(f, day, engine.build_sequences_day(f, day))


# ---- records ---------------------------------------------------------------------------------

def event(eid: str, user: int, action: str, item: int, ts: int, *, dwell: int | None = None, bot: bool = False,
          surface: str = "home_feed", device: str = "ios", country: str = "US") -> dict:
    """One engagement with the source schema of user_engagements, as a client sends it."""
    return {"event_id": eid, "user_id": user, "action": action, "item_id": item, "ts": ts, "surface": surface,
            "device": device, "country": country, "dwell_ms": dwell, "is_bot": bot}


def records_frame(events: list[dict], first_offset: int = 0, partition: int = 0):
    """Kafka records (value, key, kafka_partition, kafka_offset, kafka_ts) carrying ``events`` as JSON."""
    import polars as pl

    n = len(events)
    return pl.DataFrame(
        {"value": [json.dumps(e, separators=(",", ":")) for e in events],
         "key": [str(e.get("user_id")) for e in events],
         "kafka_partition": [partition] * n,
         "kafka_offset": list(range(first_offset, first_offset + n)),
         "kafka_ts": [now_ms()] * n},
        schema={"value": pl.String, "key": pl.String, "kafka_partition": pl.Int32, "kafka_offset": pl.Int64,
                "kafka_ts": pl.Int64})


def produce(bootstrap: str, topic: str, events: list[dict]) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, client_id="serving-tests", acks=1, linger_ms=0,
                      request_timeout_ms=10_000, max_block_ms=10_000)
    try:
        for e in events:
            p.send(topic, key=str(e["user_id"]).encode(), value=json.dumps(e).encode())
        p.flush(timeout=10)
    finally:
        p.close(timeout=5)


# ---- servers ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """A uvicorn server for an ASGI app in a daemon thread on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "ThreadServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_seqctl_serve(port: int, env: dict, *args: str, log: Path | None = None) -> subprocess.Popen:
    """``seqctl serve --port PORT ARGS`` as a child process (stdout/stderr to ``log``)."""
    seqctl = Path(sys.executable).parent / "seqctl"
    out = open(log, "wb") if log else subprocess.DEVNULL
    return subprocess.Popen([str(seqctl), "serve", "--port", str(port), *args], env=env, cwd=str(ROOT),
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Until GET ``url`` answers 200 (or the process dies, or ``timeout``)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


# ---- load ------------------------------------------------------------------------------------

class Client:
    """A keep-alive HTTP/1.1 client on one connection (http.client): ``get`` returns (status, body, seconds)."""

    def __init__(self, port: int, headers: dict | None = None, timeout: float = 10.0):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.headers = headers or {}

    def get(self, path: str) -> tuple[int, bytes, float]:
        t = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        r = self.conn.getresponse()
        body = r.read()
        return r.status, body, time.perf_counter() - t

    def close(self) -> None:
        self.conn.close()


def start_flood(port: int, paths: list[str], headers: dict, seconds: float, concurrency: int,
                max_requests: int, out: Path) -> subprocess.Popen:
    """:func:`seq_assets.serving.loadgen.flood` in a child process; it writes its result as JSON to ``out``."""
    args = json.dumps({"port": port, "paths": paths, "headers": headers, "seconds": seconds,
                       "concurrency": concurrency, "max_requests": max_requests, "out": str(out)})
    return subprocess.Popen([sys.executable, "-m", "tests.support.serving_helpers", "flood", args], cwd=str(ROOT),
                            stdin=subprocess.DEVNULL)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "flood":
    from seq_assets.devtools.loadgen import flood

    a = json.loads(sys.argv[2])
    res = flood(a["port"], a["paths"], a["headers"], a["seconds"], a["concurrency"], a["max_requests"])
    Path(a["out"]).write_text(json.dumps(res))
