"""What the fast partition writer saves on object storage: one ``sequences/`` day written to S3.

    .venv/bin/python bench/objstore.py                 # 5,000 users, 100 events each, 3 rounds
    .venv/bin/python bench/objstore.py --users 20000 --rounds 5

An S3 server on loopback (moto's ``ThreadedMotoServer``, in a process of its own) holds a lake; a
``sequences/`` day shaped like the demo's ``engagements_v1`` (per user: lists of item ids, times,
event types, surfaces and a 32-float embedding per event) is written to it with
``Lake.replace_partitions`` by the fast partition writer (polars writes the Parquet file, pyarrow's
S3 client puts it, one Delta commit adds it) and by delta-rs' writer (``write_deltalake`` with the
day's predicate, which the lake uses for stores the fast writer does not reach), in turn, each
round replacing the same day. The same two writers on a local folder are the baseline. Prints the
median seconds of each and the ratios; no timings are asserted anywhere.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seq_assets.storage.lake import Lake

DAY = date(2026, 3, 2)
_SERVE = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
"""


class DeltaRsLake(Lake):
    """The same lake, writing partitions through delta-rs as it does for stores the fast writer does not reach."""

    @property
    def _files_writable(self) -> bool:
        return False


def sequences_day(users: int, per_user: int, dim: int = 32, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = users * per_user
    flat = pl.DataFrame({
        "user_id": np.repeat(np.arange(users, dtype=np.int64), per_user),
        "item_id": rng.integers(0, 100_000, n),
        "ts": 1772409600000 - rng.integers(0, 86_400_000 * 90, n),
        "event_type": rng.choice(["pin_click", "pin_save", "pin_closeup"], n),
        "surface": rng.choice(["home_feed", "search", "board"], n),
        "item_embedding": pl.Series(rng.standard_normal((n, dim)).astype(np.float32)).cast(pl.List(pl.Float32)),
    })
    seqs = flat.sort(["user_id", "ts"], descending=[False, True]).group_by("user_id", maintain_order=True).agg(pl.all())
    return seqs.select("user_id", pl.lit(DAY).alias("date"), pl.exclude("user_id"))


def table_name(lake: Lake) -> str:
    return "engagements_deltars" if isinstance(lake, DeltaRsLake) else "engagements_fast"


def timed(lake: Lake, df: pl.DataFrame, name: str) -> float:
    t0 = time.perf_counter()
    lake.replace_partitions("sequences", name, df, [DAY])
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--events", type=int, default=100, help="events per user's sequence")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    df = sequences_day(args.users, args.events)
    print(f"one sequences/ day: {args.users} users x {args.events} events, {df.estimated_size() / 2**20:.0f} MiB in memory")
    server = subprocess.Popen([sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        endpoint = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        import boto3

        opts = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
                     region_name="us-east-1").create_bucket(Bucket="bench-lake")
        with tempfile.TemporaryDirectory() as tmp:
            lakes = {
                "local fast writer": Lake(f"{tmp}/lake"),
                "local delta-rs writer": DeltaRsLake(f"{tmp}/lake"),
                "s3 fast writer": Lake("s3://bench-lake/lake", opts),
                "s3 delta-rs writer": DeltaRsLake("s3://bench-lake/lake", opts),
            }
            times: dict[str, list[float]] = {k: [] for k in lakes}
            for r in range(args.rounds + 1):  # round 0 creates the tables and warms up
                for label, lake in lakes.items():
                    s = timed(lake, df, table_name(lake))
                    if r:
                        times[label].append(s)
                        print(f"  round {r} {label}: {s:.2f} s", file=sys.stderr)
            med = {k: statistics.median(v) for k, v in times.items()}
            sizes = {k: lake.stats("sequences", table_name(lake), DAY)["bytes"] for k, lake in lakes.items()}
    finally:
        server.stdin.close()
        server.wait(timeout=10)
    print(f"median of {args.rounds} rounds, one day replaced:")
    for k in lakes:
        print(f"  {k:24s} {med[k]:6.2f} s   file {sizes[k] / 2**20:6.1f} MiB")
    print(f"delta-rs writer / fast writer: local {med['local delta-rs writer'] / med['local fast writer']:.2f}x, "
          f"s3 {med['s3 delta-rs writer'] / med['s3 fast writer']:.2f}x")
    print(f"s3 / local: fast writer {med['s3 fast writer'] / med['local fast writer']:.2f}x, "
          f"delta-rs writer {med['s3 delta-rs writer'] / med['local delta-rs writer']:.2f}x")


if __name__ == "__main__":
    main()
