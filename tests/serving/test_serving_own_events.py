"""Serving a definitions project unlike the demo: string user ids in ``uid``, time ``event_time``,
event id ``rating_id``; and int64 ids in ``account`` (``tests/support/own_events.py``).

The lake holds the engine's sequences of the first three days and the events of all four, so the
service serves a closed snapshot merged with the events indexed after it. Every answer is checked
against the sequence recomputed in plain Python from the events, in process and over HTTP.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from seq_assets.serving.app import Tenants, create_app
from seq_assets.serving.service import RequestError, SequenceService
from tests.support.own_events import (
    BUILT,
    DAYS,
    FEATURES,
    QUIET,
    RATINGS,
    USERS,
    build_lake,
    end_of,
    expected,
)
from tests.support.serving_helpers import ThreadServer

ENDS = [end_of(BUILT[-1]), end_of(DAYS[-1])]  # the snapshot's end, and a day of fresh events after it


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    return build_lake(tmp_path_factory.mktemp("own_events"))


@pytest.fixture(scope="module")
def svc(own):
    return SequenceService(own.compiled, own.lake)


@pytest.fixture(scope="module")
def http(svc):
    server = ThreadServer(create_app(svc, tenants=Tenants.load(None), refresh_seconds=3600)).start()
    client = httpx.Client(base_url=server.url, timeout=10.0)
    try:
        yield client
    finally:
        client.close()
        server.stop()


def _rows(seq: dict[str, list]) -> list[dict]:
    fields = list(seq)
    return [dict(zip(fields, row)) for row in zip(*seq.values())]


def test_the_snapshot_holds_string_ids_in_order(svc):
    store = svc.stores["liked_v1"]
    assert store.snapshot.day == BUILT[-1] and store.fresh.frame is not None  # fresh: the last day's events
    ids = store.snapshot.user_ids.tolist()
    assert ids == sorted(ids) and set(ids) <= set(USERS) and len(ids) > 4
    assert all(isinstance(u, str) for u in ids)
    assert svc.stores["plays_v1"].snapshot.user_ids.dtype == np.int64


@pytest.mark.parametrize("table", [*RATINGS, "plays_v1"])
@pytest.mark.parametrize("end", ENDS, ids=["snapshot", "snapshot+fresh"])
def test_every_user_served_equals_the_recomputed_sequence(own, svc, table, end):
    users = USERS + [QUIET] if table in RATINGS else [1, 42, 2**40, 7]
    rows = own.ratings if table in RATINGS else own.plays
    fields = list(FEATURES[table][-1])
    served = 0
    for user in users:
        got = svc.get(table, user, as_of=str(end))
        want = _rows(expected(table, rows, user, end))
        assert got["user_id"] == user and got["feature"] == table
        assert got["events"] == want, (table, user)
        assert all(list(e) == fields for e in got["events"])
        served += bool(want)
    assert served >= 3


def test_arrays_and_since_for_string_ids(own, svc):
    end = ENDS[1]
    for user in USERS:
        got = svc.get("liked_v1", user, as_of=str(end), n=3, fmt="arrays", fields="rating_id,genre,event_time")
        want = expected("liked_v1", own.ratings, user, end)
        k = min(3, len(want["rating_id"]))
        assert got["length"] == k and got["mask"].tolist() == [1] * k + [0] * (3 - k)
        assert got["rating_id"].tolist() == want["rating_id"][:k] + [0] * (3 - k)
        assert got["event_time"].tolist() == want["event_time"][:k] + [0] * (3 - k)
        assert got["genre"] == [g if g is not None else "" for g in want["genre"][:k]] + [""] * (3 - k)
    since = end - 30 * 3_600_000
    for user in USERS:
        got = svc.get("opinions_v1", user, as_of=str(end), since=str(since), fields="rating_id")["events"]
        assert [e["rating_id"] for e in got] == expected("opinions_v1", own.ratings, user, end, since)["rating_id"]


def test_batch_of_string_ids_equals_one_by_one(svc):
    users = [USERS[3], QUIET, USERS[0], USERS[0], "émile"]
    batch = svc.get_batch("opinions_v1", users, as_of=str(ENDS[1]), n=2)
    assert [r["user_id"] for r in batch["results"]] == users
    assert batch["results"] == [svc.get("opinions_v1", u, as_of=str(ENDS[1]), n=2) for u in users]


def test_ids_of_the_wrong_type_are_refused_naming_the_type(svc):
    cases = [("plays_v1", "abc", False, "int64"), ("plays_v1", "4.5", False, "int64"),
             ("plays_v1", "42", True, "int64"), ("plays_v1", True, True, "int64"),
             ("liked_v1", 42, False, "string"), ("liked_v1", 42, True, "string")]
    for table, user, batch, kind in cases:
        with pytest.raises(RequestError) as e:
            svc.get_batch(table, [user]) if batch else svc.get(table, user)
        assert e.value.status == 400 and kind in e.value.message and table in e.value.message, e.value.message
    assert svc.get("plays_v1", "42", as_of=str(ENDS[0]))["user_id"] == 42  # text that is an int64 is one
    with pytest.raises(RequestError) as e:
        svc.get("ratings_v9", "alice")
    assert e.value.status == 404 and "liked_v1" in e.value.message


def test_freshness_per_source_reads_its_time_field(own, svc):
    now = time.time()
    fresh = svc.freshness()
    newest = {"ratings": max(r["event_time"] for r in own.ratings if r["event_time"] >= end_of(BUILT[-1])),
              "plays": max(r["played_at"] for r in own.plays if r["played_at"] >= end_of(BUILT[-1]))}
    assert newest["ratings"] != newest["plays"]
    for source, ms in newest.items():
        assert fresh[source] == pytest.approx(now - ms / 1000, abs=30)
    feats = {f["feature"]: f for f in svc.features()}
    assert feats["plays_v1"]["freshness"]["lag_seconds"] == pytest.approx(now - newest["plays"] / 1000, abs=30)
    assert set(feats["liked_v1"]["schema"]) == set(FEATURES["liked_v1"][-1])


# ---- over HTTP -------------------------------------------------------------------------------


def test_http_serves_string_ids_in_both_formats(own, http):
    end = ENDS[1]
    for user in USERS + [QUIET]:
        r = http.get(f"/v1/sequences/liked_v1/{quote(user, safe='')}", params={"as_of": str(end)})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user_id"] == user
        assert body["events"] == _rows(expected("liked_v1", own.ratings, user, end))
        r = http.get(f"/v1/sequences/opinions_v1/{quote(user, safe='')}",
                     params={"as_of": str(end), "format": "arrays", "fields": "rating_id,event_type", "n": 4})
        want = expected("opinions_v1", own.ratings, user, end)
        k = len(want["rating_id"])
        assert r.json()["rating_id"] == want["rating_id"] + [0] * (4 - k)
        assert r.json()["event_type"] == want["event_type"] + [""] * (4 - k)


def test_http_batch_of_string_ids(own, http):
    users = ["Bob", "zoë-7", QUIET]
    r = http.post("/v1/sequences/liked/batch", json={"user_ids": users, "as_of": str(ENDS[0]), "fields": ["rating_id"]})
    assert r.status_code == 200, r.text
    got = {x["user_id"]: [e["rating_id"] for e in x["events"]] for x in r.json()["results"]}
    assert got == {u: expected("liked_v1", own.ratings, u, ENDS[0])["rating_id"] for u in users}


def test_http_int64_ids_under_their_own_name(own, http):
    r = http.get(f"/v1/sequences/plays_v1/{2**40}", params={"as_of": str(ENDS[1]), "fields": "play_id"})
    assert [e["play_id"] for e in r.json()["events"]] == expected("plays_v1", own.plays, 2**40, ENDS[1])["play_id"]
    r = http.post("/v1/sequences/plays_v1/batch", json={"user_ids": [42, 1], "fields": "played_at", "as_of": str(ENDS[0])})
    assert [[e["played_at"] for e in x["events"]] for x in r.json()["results"]] == [
        expected("plays_v1", own.plays, u, ENDS[0])["played_at"] for u in (42, 1)]


@pytest.mark.parametrize("method, path, body, status, words", [
    ("GET", "/v1/sequences/plays_v1/abc", None, 400, ["int64", "plays_v1", "abc"]),
    ("GET", "/v1/sequences/plays_v1/99999999999999999999", None, 400, ["out of range", "int64"]),
    ("POST", "/v1/sequences/plays_v1/batch", {"user_ids": [1, "2"]}, 400, ["int64", "plays_v1"]),
    ("POST", "/v1/sequences/liked_v1/batch", {"user_ids": ["alice", 7]}, 400, ["string", "liked_v1"]),
    ("GET", "/v1/sequences/ratings_v1/alice", None, 404, ["unknown feature", "ratings_v1"]),
    ("POST", "/v1/sequences/nope/batch", {"user_ids": ["alice"]}, 404, ["unknown feature", "nope"]),
])
def test_http_bad_ids_and_features_name_the_problem(http, method, path, body, status, words):
    r = http.request(method, path, json=body)
    assert r.status_code == status, r.text
    for w in words:
        assert w in r.json()["error"], r.json()["error"]


# ---- shards and shared snapshots -----------------------------------------------------------


@pytest.fixture(scope="module")
def shards(own, tmp_path_factory):
    """Shard 0/2 mapping its snapshots from a shared folder, as a worker of --workers K does, and 1/2."""
    from seq_assets.serving.shards import Shard

    shm = tmp_path_factory.mktemp("shm")
    return [SequenceService(own.compiled, own.lake, shard=Shard(0, 2), shared_dir=str(shm)),
            SequenceService(own.compiled, own.lake, shard=Shard(1, 2))], shm


@pytest.mark.parametrize("table", [*RATINGS, "plays_v1"])
def test_two_shards_serve_string_and_int64_ids_as_one_service(svc, shards, table):
    from seq_assets.core.buckets import user_bucket_of
    from seq_assets.serving.service import Misdirected

    services, _ = shards
    users = USERS + [QUIET] if table in RATINGS else [1, 42, 2**40, 7]
    assert {user_bucket_of(u, 2) for u in users} == {0, 1}
    for s in services:  # each holds only its users, snapshot and fresh events
        store = s.stores[table]
        assert all(user_bucket_of(u, 2) == s.shard.index for u in store.snapshot.user_ids.tolist())
        if store.fresh.frame is not None:
            assert all(user_bucket_of(u, 2) == s.shard.index for u in store.fresh.frame.get_column(store.user))
    assert sum(s.stores[table].snapshot.users for s in services) == svc.stores[table].snapshot.users
    for end in ENDS:
        for user in users:
            owner, other = services[user_bucket_of(user, 2)], services[1 - user_bucket_of(user, 2)]
            assert owner.get(table, user, as_of=str(end)) == svc.get(table, user, as_of=str(end))
            arrays = {"as_of": str(end), "fmt": "arrays", "n": 3}
            got, want = owner.get(table, user, **arrays), svc.get(table, user, **arrays)
            assert {k: np.asarray(v).tolist() for k, v in got.items()} == {k: np.asarray(v).tolist() for k, v in want.items()}
            with pytest.raises(Misdirected) as e:
                other.get(table, user)
            assert e.value.status == 421 and e.value.body()["shard"] == user_bucket_of(user, 2)


def test_a_mapped_snapshot_is_the_loaded_one_without_a_copy(svc, shards):
    services, shm = shards
    mapped = services[0].stores["liked_v1"].snapshot
    assert mapped.vocabs  # string columns as codes into a vocabulary
    folders = sorted(p.name for p in shm.iterdir() if p.is_dir())
    assert len(folders) == len(services[0].stores) and all(".0of2." in f for f in folders)
    for c, arr in mapped.events.cols.items():
        if c not in mapped.vocabs:
            assert not arr.flags.owndata and not arr.flags.writeable, c  # a view of the mapping
    whole = svc.stores["liked_v1"].snapshot
    mine = [i for i, u in enumerate(whole.user_ids.tolist()) if u in set(mapped.user_ids.tolist())]
    assert mapped.user_ids.tolist() == [whole.user_ids[i] for i in mine]
    for u in mapped.user_ids.tolist():
        a, b = mapped.slice(u), whole.slice(u)
        assert {k: v.tolist() for k, v in a.cols.items()} == {k: v.tolist() for k, v in b.cols.items()}
        assert {k: v.tolist() for k, v in a.valid.items()} == {k: v.tolist() for k, v in b.valid.items()}
