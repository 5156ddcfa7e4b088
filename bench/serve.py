"""Serving benchmark: "sequence X for user U" in-process and over HTTP, against a naive lake read.

    .venv/bin/python bench/serve.py                                     # 100k users, 5M events, 7 days
    .venv/bin/python bench/serve.py --users 20000 --events 1000000      # a quick run
    .venv/bin/python bench/serve.py --reuse                             # keep the lake of the last run

The lake is the demo history (Zipf users: a heavy head with hundreds of events, most users a
handful) ending yesterday (UTC), built with the batch engine as bench/batch.py does (raw/,
enrichments/, events/ for every day, then sequences/ of the last day, the snapshot the server
serves). Cached under --workdir; --reuse skips the build when the same spec is there.

Every figure is measured in this one run (machines here are noisy):

(a) in-process ``SequenceService.get`` of engagements_v1 with n=500, json and arrays, over random
    users, half drawn from all users and half from the 1% heaviest: p50 / p99;
(b) HTTP: ``seqctl serve`` as a child process, 8 keep-alive connections for --http-seconds: p99, req/s;
(c) the ratio to a naive fetch of the same sequence with polars (scan_delta + filter + collect);
(d) the server process's peak memory (VmHWM from /proc/<pid>/status);
(e) freshness: seconds from producing an event to the embedded broker until the API returns it;
(f) workers: ``seqctl serve --no-tail --workers 1`` and then ``--workers K`` (``--workers-k``, default
    2), each under the same 8 keep-alive connections for --http-seconds: p50 / p99 and requests/s, and
    the memory of every process (Rss and Pss from /proc/<pid>/smaps_rollup: Pss counts a page shared
    by n processes 1/n in each, so the Pss of all the processes adds up to what they hold together);
    with --profile, py-spy samples one server process under that load and the top frames are printed.
    ``--only-workers`` measures just (f) on the lake of a previous run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from seq_assets import settings  # noqa: E402

from phases import run_phase  # noqa: E402

FEATURE = "engagements_v1"
SOURCE = "user_engagements"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _days(end: date, n: int) -> list[date]:
    return [end - timedelta(days=n - 1 - i) for i in range(n)]


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))] if s else float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- building the lake (each phase in its own process) ---------------------------------------

def phase_generate(a) -> dict:
    from seq_assets.devtools.demo_data import DemoSpec, write_demo_data

    t = time.perf_counter()
    summary = write_demo_data(DemoSpec(users=a.users, days=a.days, events=a.events, seed=a.seed,
                                       end_date=date.fromisoformat(a.end_date)), os.environ["SEQ_LANDING_DIR"])
    return {"seconds": time.perf_counter() - t, "rows": summary["rows"]}


def phase_build(a) -> dict:
    """raw/ + enrichments/ + events/ for every day, then the last day's sequences/ (the snapshot)."""
    from seq_assets.core.engine import Engine, LakeContext
    from seq_assets.settings import load_compiled

    compiled = load_compiled()
    engine = Engine(compiled, settings.lake(), settings.landing())
    days = _days(date.fromisoformat(a.end_date), a.days)
    t0 = time.perf_counter()
    rows = 0
    for day in days:
        rows += engine.write_raw_batch_day(SOURCE, day)["rows"]
        for name, e in compiled.enrichments.items():
            if e["kind"] == "lookup":
                engine.write_enrichment_day(name, day)
    t_raw = time.perf_counter() - t0
    ctx = LakeContext(engine.lake)
    events = 0
    for day in days:
        events += sum(df.height for df in engine.index_batch_day(SOURCE, day, ctx=ctx).values())
    t_events = time.perf_counter() - t0 - t_raw
    users = {}
    for table in compiled.features:
        seqs = engine.build_sequences_day(table, days[-1])
        engine.write_sequences_day(table, days[-1], seqs)
        users[table] = seqs.height
    return {"seconds": time.perf_counter() - t0, "raw_rows": rows, "event_rows": events, "users": users,
            "raw_seconds": t_raw, "events_seconds": t_events}


def phase_inprocess(a) -> dict:
    """(a) SequenceService.get p50/p99 for json and arrays, and (c) the naive polars fetch."""
    import numpy as np
    import polars as pl

    from seq_assets.serving.service import SequenceService

    t = time.perf_counter()
    service = SequenceService(settings.load_compiled(), settings.lake())
    load_s = time.perf_counter() - t
    store = service.stores[FEATURE]
    snap = store.snapshot
    lengths = np.diff(snap.offsets)
    users = _sample_users(snap.user_ids, lengths, a.requests, a.seed)
    day = snap.day
    out: dict = {"load_seconds": load_s, "snapshot_day": str(day), "snapshot_users": int(snap.users),
                 "snapshot_events": int(snap.offsets[-1]), "max_length": int(lengths.max()),
                 "users_at_500": int((lengths >= 500).sum())}
    for fmt in ("arrays", "json"):
        for u in users[:200]:  # warm-up
            service.get(FEATURE, int(u), n=500, fmt=fmt)
        lat, n_events = [], 0
        for u in users:
            t = time.perf_counter()
            body = service.get(FEATURE, int(u), n=500, fmt=fmt)
            lat.append(time.perf_counter() - t)
            n_events += body["length"] if fmt == "arrays" else len(body["events"])
        out[fmt] = {"p50_ms": _pct(lat, 50) * 1e3, "p99_ms": _pct(lat, 99) * 1e3, "mean_ms": sum(lat) / len(lat) * 1e3,
                    "requests": len(lat), "mean_events": n_events / len(lat)}
    # (c) the naive way: read the user's row from the sequences table with polars.
    uri = settings.lake().uri("sequences", FEATURE)
    naive, same = [], 0
    for u in users[: a.naive]:
        t = time.perf_counter()
        df = pl.scan_delta(uri).filter((pl.col("user_id") == int(u)) & (pl.col("date") == day)).collect()
        naive.append(time.perf_counter() - t)
        served = service.get(FEATURE, int(u), n=500, fmt="arrays", fields="event_id")
        same += df.height == 1 and df["event_id"][0].to_list() == served["event_id"][: served["length"]]
    out["naive"] = {"p50_ms": _pct(naive, 50) * 1e3, "mean_ms": sum(naive) / len(naive) * 1e3, "requests": len(naive),
                    "same_sequence": same}
    return out


def _sample_users(user_ids, lengths, k: int, seed: int) -> list[int]:
    """Half uniform over the snapshot's users, half from the 1% with the longest sequences."""
    import numpy as np

    rng = np.random.default_rng(seed)
    heavy = user_ids[np.argsort(-lengths, kind="stable")[: max(1, len(user_ids) // 100)]]
    picks = np.concatenate([rng.choice(user_ids, k - k // 2), rng.choice(heavy, k // 2)])
    rng.shuffle(picks)
    return [int(u) for u in picks]


def _bench_users(a) -> list[int]:
    seqs = settings.lake().read("sequences", FEATURE, columns=["user_id", "event_id"])
    lengths = seqs["event_id"].list.len().to_numpy()
    return _sample_users(seqs["user_id"].to_numpy(), lengths, 5000, a.seed + 1)


PHASES = {"generate": phase_generate, "build": phase_build, "inprocess": phase_inprocess}


# ---- HTTP, memory and freshness against a real `seqctl serve` ------------------------------

def http_load(port: int, paths: list[str], seconds: float, concurrency: int) -> dict:
    from seq_assets.devtools.loadgen import flood

    res = flood(port, paths, {}, seconds, concurrency, stride=997)
    lat = res["lat_all"]
    return {"p50_ms": _pct(lat, 50) * 1e3, "p99_ms": _pct(lat, 99) * 1e3, "rps": len(lat) / res["seconds"],
            "requests": len(lat), "statuses": res["statuses"]}


def _get_json(port: int, path: str):
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, json.loads(r.read())
    finally:
        c.close()


def _vm_hwm_gib(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return None


def served_figures(a, users: list[int]) -> dict:
    """Start a broker and `seqctl serve` following it; measure (b), (e) and then (d)."""
    import http.client

    from kafka import KafkaProducer

    from seq_assets.devtools.broker import EmbeddedBroker
    from seq_assets.kafka.client import ensure_source_topics
    from seq_assets.settings import load_compiled

    out: dict = {}
    broker = EmbeddedBroker().start(timeout=30)
    proc = None
    try:
        ensure_source_topics(broker.bootstrap, load_compiled())
        port = _free_port()
        log = open(Path(a.workdir) / "serve.log", "wb")
        t = time.perf_counter()
        proc = subprocess.Popen([str(Path(sys.executable).parent / "seqctl"), "serve", "--port", str(port),
                                 "--bootstrap", broker.bootstrap], stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ.copy(), cwd=str(ROOT))
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"seqctl serve exited with {proc.returncode}; see {a.workdir}/serve.log")
            try:
                if _get_json(port, "/healthz")[0] == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            if time.perf_counter() - t > 600:
                raise SystemExit("seqctl serve did not come up in 10 minutes")
            time.sleep(0.1)
        out["startup_seconds"] = time.perf_counter() - t
        out["startup_vm_hwm_gib"] = _vm_hwm_gib(proc.pid)
        _log(f"seqctl serve up in {out['startup_seconds']:.1f}s (pid {proc.pid}, VmHWM {out['startup_vm_hwm_gib']:.2f} GiB)")

        # (b) 8 keep-alive connections, same user mix as in-process, n=500.
        for fmt in ("json", "arrays"):
            paths = [f"/v1/sequences/{FEATURE}/{u}?n=500&format={fmt}" for u in users]
            http_load(port, paths[:300], 1.0, a.concurrency)  # warm-up
            secs = a.http_seconds if fmt == "json" else max(2.0, a.http_seconds / 2)
            _log(f"HTTP {fmt}: {a.concurrency} connections for {secs:.0f}s")
            out[f"http_{fmt}"] = http_load(port, paths, secs, a.concurrency)

        # (e) produce one event at a time for a random user and poll the API until it is returned.
        topic = load_compiled().sources[SOURCE]["topic"]
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=0, client_id="bench-serve")
        rng = random.Random(a.seed)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        delays = []
        try:
            producer.send(topic, key=b"warm", value=b'{"warm": true}').get(timeout=10)  # connect first
            for i in range(a.fresh_events):
                u = rng.choice(users)
                eid = f"bench-fresh-{time.time_ns()}-{i}"
                ev = {"event_id": eid, "user_id": u, "action": "click", "item_id": rng.randint(1, 1000),
                      "ts": int(time.time() * 1000), "surface": "home_feed", "device": "ios", "country": "US",
                      "dwell_ms": None, "is_bot": False}
                t0 = time.perf_counter()
                producer.send(topic, key=str(u).encode(), value=json.dumps(ev).encode())
                producer.flush()
                while True:
                    c.request("GET", f"/v1/sequences/{FEATURE}/{u}?n=1&fields=event_id")
                    r = c.getresponse()
                    body = json.loads(r.read())
                    if body.get("events") and body["events"][0]["event_id"] == eid:
                        break
                    if time.perf_counter() - t0 > 30:
                        raise SystemExit(f"event {eid} not served within 30 s")
                    time.sleep(0.005)
                delays.append(time.perf_counter() - t0)
                time.sleep(0.1)
        finally:
            c.close()
            producer.close(timeout=5)
        out["freshness"] = {"p50_s": _pct(delays, 50), "p95_s": _pct(delays, 95), "max_s": max(delays),
                            "first_s": delays[0], "events": len(delays)}
        # (d) the server's peak resident memory over the whole run.
        out["server_vm_hwm_gib"] = _vm_hwm_gib(proc.pid)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
    return out


# ---- (f) worker processes ---------------------------------------------------------------------

def _smaps_rollup_mib(pid: int) -> dict[str, float]:
    """Rss, Pss and Pss split by kind (anon, file, shmem) of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem"):
            out[key] = int(rest.split()[0]) / 1024
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker_pids(pid: int) -> list[int]:
    """The worker processes ``seqctl serve --workers K`` started (multiprocessing spawn children)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                pids.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return sorted(pids)


def _start_serve(a, port: int, *args: str) -> subprocess.Popen:
    import http.client

    log = open(Path(a.workdir) / f"serve-{port}.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "seqctl"), "serve", "--port", str(port), *args],
                            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), cwd=str(ROOT))
    t = time.perf_counter()
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"seqctl serve exited with {proc.returncode}; see {log.name}")
        try:
            if _get_json(port, "/healthz")[0] == 200:
                return proc
        except (OSError, http.client.HTTPException):
            pass
        if time.perf_counter() - t > 600:
            raise SystemExit("seqctl serve did not come up in 10 minutes")
        time.sleep(0.1)


def _profile(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
                             "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _samples(raw: Path):
    """(stack, sample count) for each line of py-spy's raw output ("frame;frame;... count")."""
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            yield stack, int(count)


def _top_frames(raw: Path, k: int = 12) -> list[tuple[str, float]]:
    """Self time per function (the innermost frame of each sample) and inclusive time of the stages."""
    self_time: dict[str, int] = {}
    total = 0
    for stack, n in _samples(raw):
        total += n
        leaf = stack.split(";")[-1]
        self_time[leaf] = self_time.get(leaf, 0) + n
    top = sorted(self_time.items(), key=lambda kv: -kv[1])[:k]
    return [(name, n / total) for name, n in top] if total else []


def _inclusive(raw: Path, needles: dict[str, tuple[str, ...]]) -> dict[str, float]:
    """The share of samples whose stack holds any of each entry's needles (function names)."""
    hits = dict.fromkeys(needles, 0)
    total = 0
    for stack, n in _samples(raw):
        total += n
        for label, needle in needles.items():
            if any(x in stack for x in needle):
                hits[label] += n
    return {k: v / total for k, v in hits.items()} if total else {}


def workers_figures(a, users: list[int]) -> dict:
    """(f) one worker, then K, on the same lake and users; latency under load and memory per process."""
    paths = [f"/v1/sequences/{FEATURE}/{u}?n=500&format=json" for u in users]
    out: dict = {}
    for k in (1, a.workers_k):
        port = _free_port()
        proc = _start_serve(a, port, "--no-tail", "--workers", str(k))
        try:
            pids = _worker_pids(proc.pid) if k > 1 else [proc.pid]
            http_load(port, paths[:300], 1.0, a.concurrency)  # warm-up
            _log(f"workers={k}: {a.concurrency} connections for {a.http_seconds:.0f}s")
            spy = _profile(pids[0], a.http_seconds, Path(a.workdir) / f"profile-{k}.txt") if a.profile else None
            cpu0 = {p: _cpu_seconds(p) for p in pids}
            res = http_load(port, paths, a.http_seconds, a.concurrency)
            res["cpu_seconds"] = {str(p): _cpu_seconds(p) - cpu0[p] for p in pids}  # how the load spread
            if spy is not None:
                spy.wait(timeout=60)
            res["processes"] = {str(p): _smaps_rollup_mib(p) for p in pids}
            if k > 1:
                res["parent"] = _smaps_rollup_mib(proc.pid)
            res["pss_total_mib"] = sum(m["Pss"] for m in res["processes"].values()) + res.get("parent", {}).get("Pss", 0)
            if spy is not None and (Path(a.workdir) / f"profile-{k}.txt").exists():
                raw = Path(a.workdir) / f"profile-{k}.txt"
                res["profile_top"] = _top_frames(raw)
                app = "the app (handler and scheduled work: all of the below)"
                stages = _inclusive(raw, {
                    app: ("handle (seq_assets/serving/app.py", "_run (seq_assets/serving/scheduler.py"),
                    "  service.run: fetch, filter, enrich, size, featurize": ("run (seq_assets/serving/service.py",),
                    "    of it featurize.to_json (numpy to lists)": ("to_json (seq_assets/serving/featurize.py",),
                    "  orjson encoding + the Response": ("_json (seq_assets/serving/app.py",),
                })
                stages["outside the app: uvicorn, httptools, the event loop"] = 1 - stages[app]
                res["profile_stages"] = stages
            out[str(k)] = res
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return out


def print_workers(a, wf: dict) -> None:
    one, many = wf["1"], wf[str(a.workers_k)]
    for k, r in (("1", one), (str(a.workers_k), many)):
        mem = "; ".join(f"pid {p}: Rss {m['Rss']:.0f} Pss {m['Pss']:.0f} (anon {m.get('Pss_Anon', 0):.0f}, "
                        f"shmem {m.get('Pss_Shmem', 0):.0f}), "
                        f"{r['cpu_seconds'][p]:.1f} CPU s under the load" for p, m in r["processes"].items())
        print(f"(f) HTTP json {a.concurrency} conns, {k} worker(s)  p50 {r['p50_ms']:6.2f} ms   p99 {r['p99_ms']:6.2f} ms "
              f"(target <= 10)   {r['rps']:,.0f} requests/s   statuses {r['statuses']}")
        print(f"    memory MiB: {mem}" + (f"; parent Pss {r['parent']['Pss']:.0f}" if "parent" in r else "")
              + f"; all processes' Pss {r['pss_total_mib']:.0f}")
    print(f"(f) {a.workers_k} workers / 1 worker: p50 {many['p50_ms'] / one['p50_ms']:.2f}x   p99 "
          f"{many['p99_ms'] / one['p99_ms']:.2f}x   requests/s {many['rps'] / one['rps']:.2f}x   Pss of all "
          f"{many['pss_total_mib'] / one['pss_total_mib']:.2f}x (a copy per worker would be about {a.workers_k}x)")
    for k, r in (("1", one), (str(a.workers_k), many)):
        if r.get("profile_top"):
            print(f"    profile of {'the' if k == '1' else 'one'} server process ({k} worker(s)), share of samples:")
            for label, share in r["profile_stages"].items():
                print(f"      {share * 100:5.1f}%  {label}")
            print("      top self time: " + "; ".join(f"{name} {share * 100:.1f}%" for name, share in r["profile_top"][:8]))


# ---- main ------------------------------------------------------------------------------------

def main() -> None:
    yesterday = (datetime.now(timezone.utc).date() - timedelta(days=1)).isoformat()
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--events", type=int, default=5_000_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--end-date", default=yesterday, help="last event day, the closed snapshot (default: yesterday)")
    p.add_argument("--workdir", default="/tmp/seqbench-serve")
    p.add_argument("--reuse", action="store_true", help="reuse the lake of a previous run with the same spec")
    p.add_argument("--requests", type=int, default=20_000, help="in-process requests per format")
    p.add_argument("--naive", type=int, default=30, help="naive polars fetches")
    p.add_argument("--http-seconds", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--fresh-events", type=int, default=30)
    p.add_argument("--workers-k", type=int, default=2, help="(f): the worker count compared with 1")
    p.add_argument("--profile", action="store_true", help="(f): sample a server process with py-spy under load")
    p.add_argument("--only-workers", action="store_true", help="measure (f) only, on the lake of a previous run")
    p.add_argument("--phase", choices=list(PHASES))
    a = p.parse_args()
    os.environ["SEQ_LANDING_DIR"] = f"{a.workdir}/landing"
    os.environ["SEQ_LAKE_URI"] = f"{a.workdir}/lake"
    os.environ.pop("SEQ_TENANTS_FILE", None)
    if a.phase:
        result = PHASES[a.phase](a)
        result["peak_rss_gib"] = _peak_rss_gib()
        print(json.dumps(result, default=str))
        return

    spec = {"users": a.users, "days": a.days, "events": a.events, "seed": a.seed, "end_date": a.end_date}
    spec_file = Path(a.workdir) / "spec.json"
    reuse = a.reuse and spec_file.exists() and json.loads(spec_file.read_text()) == spec
    res: dict = {}
    if not reuse:
        if a.reuse:
            _log("no lake of the same spec to reuse: building one")
        shutil.rmtree(a.workdir, ignore_errors=True)
        os.makedirs(a.workdir)
        for name in ("generate", "build"):
            _log(f"phase {name} ...")
            res[name] = run_phase(__file__, name)
            _log(f"phase {name}: {res[name]['seconds']:.1f}s, peak {res[name]['peak_rss_gib']:.2f} GiB")
        shutil.rmtree(f"{a.workdir}/landing", ignore_errors=True)  # the lake is all the server needs
        spec_file.write_text(json.dumps(spec))
    if a.only_workers:
        if not reuse:
            raise SystemExit("--only-workers needs --reuse and the lake of a previous run of the same spec")
        users = _bench_users(a)
        wf = workers_figures(a, users)
        print(f"\n== serving workers: {a.users:,} users, {a.events:,} events over {a.days} days ending {a.end_date} ==")
        print_workers(a, wf)
        return
    _log("phase inprocess ...")
    res["inprocess"] = ip = run_phase(__file__, "inprocess")


    users = _bench_users(a)
    res["served"] = sv = served_figures(a, users)
    res["workers"] = wf = workers_figures(a, users)

    print(f"\n== serving benchmark: {a.users:,} users, {a.events:,} events over {a.days} days ending {a.end_date} ==")
    if "build" in res:
        b = res["build"]
        print(f"lake build                   {res['generate']['seconds'] + b['seconds']:8.1f} s   "
              f"({b['raw_rows']:,} raw rows, {b['event_rows']:,} events, users {b['users']})")
    print(f"snapshot {ip['snapshot_day']}        {ip['snapshot_users']:,} users, {ip['snapshot_events']:,} events "
          f"(longest {ip['max_length']}, {ip['users_at_500']:,} users at N=500); loaded in {ip['load_seconds']:.1f}s")
    print("requests: half uniform users, half the 1% heaviest; n=500")
    for fmt in ("arrays", "json"):
        r = ip[fmt]
        print(f"(a) in-process get {fmt:<6}    p50 {r['p50_ms']:6.3f} ms (target <= 1)   p99 {r['p99_ms']:6.3f} ms (target <= 5)"
              f"   {r['requests']:,} requests, {r['mean_events']:.0f} events each on average")
    for fmt in ("json", "arrays"):
        h = sv[f"http_{fmt}"]
        print(f"(b) HTTP {fmt:<6} {a.concurrency} conns      p50 {h['p50_ms']:6.2f} ms   p99 {h['p99_ms']:6.2f} ms (target <= 10)"
              f"   {h['rps']:,.0f} requests/s   statuses {h['statuses']}")
    nv = ip["naive"]
    for fmt in ("arrays", "json"):
        ratio = nv["p50_ms"] / ip[fmt]["p50_ms"]
        print(f"(c) naive polars fetch p50   {nv['p50_ms']:8.1f} ms -> get {fmt} is {ratio:,.0f}x faster (target >= 50)"
              + (f"   ({nv['same_sequence']}/{nv['requests']} same sequence)" if fmt == "arrays" else ""))
    print(f"(d) server peak memory       {sv['server_vm_hwm_gib']:8.2f} GiB VmHWM (target <= 2)   "
          f"{sv['startup_vm_hwm_gib']:.2f} GiB once started ({sv['startup_seconds']:.1f}s)")
    f = sv["freshness"]
    print(f"(e) produce -> served        p50 {f['p50_s']:.3f} s (target <= 2)   p95 {f['p95_s']:.3f} s   max {f['max_s']:.3f} s"
          f"   over {f['events']} events (the first, on a cold tail: {f['first_s']:.3f} s)")
    print_workers(a, wf)


if __name__ == "__main__":
    main()
