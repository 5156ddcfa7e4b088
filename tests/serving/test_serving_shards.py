"""Sharded and multi-process serving over real HTTP on loopback, against one plain server.

Three ``seqctl serve`` processes over the demo lake: the whole (one process), shard 0/2 with two
worker processes sharing a memory-mapped snapshot, and shard 1/2. Through the routing client the two
shards answer every user of every feature exactly as the whole does, single and batch; a shard asked
for a user it does not own answers 421 naming the owner and its URL; each holds only its users.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from seq_assets.core.buckets import user_bucket_of
from seq_assets.serving.client import ServingError, ShardedClient
from seq_assets.settings import load_compiled
from seq_assets.storage.lake import Lake
from seq_assets.training import read_sequences
from tests.support.serving_helpers import (
    DAYS,
    FEATURES,
    as_of_param,
    free_port,
    shared_lake,
    start_seqctl_serve,
    stop_process,
    wait_http,
)

pytestmark = pytest.mark.timeout(180)
CLOSED = DAYS[-1]
AS_OF = as_of_param(CLOSED)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    lake = shared_lake(tmp_path_factory)
    d = tmp_path_factory.mktemp("shards")
    ports = [free_port() for _ in range(3)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    shard_map = ",".join(urls[1:])
    procs = [
        start_seqctl_serve(ports[0], lake.env(), "--no-tail", log=d / "whole.log"),
        start_seqctl_serve(ports[1], lake.env(SEQ_SERVE_SHARDS=shard_map), "--no-tail", "--shard", "0/2",
                           "--workers", "2", "--shared-dir", str(d / "shm"), log=d / "shard0.log"),
        start_seqctl_serve(ports[2], lake.env(), "--no-tail", "--shard", "1/2", "--shard-urls", shard_map,
                           log=d / "shard1.log"),
    ]
    try:
        for url, proc, name in zip(urls, procs, ("whole", "shard0", "shard1"), strict=True):
            try:
                wait_http(url + "/healthz", proc, timeout=120)
            except (TimeoutError, RuntimeError, AssertionError, OSError):
                raise AssertionError(f"{name} did not come up:\n{(d / f'{name}.log').read_text()[-3000:]}") from None
        yield urls, d
    finally:
        for p in procs:
            stop_process(p)


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def users(tmp_path_factory) -> dict[str, list]:
    lake = Lake(str(shared_lake(tmp_path_factory).lake))
    compiled = load_compiled()
    return {f: read_sequences(f, CLOSED, lake=lake, compiled=compiled).get_column("user_id").sort().to_list()
            for f in FEATURES}


def test_two_shards_serve_every_user_as_one_server_does(servers, users):
    urls, _ = servers
    whole, sharded = ShardedClient(urls[:1]), ShardedClient(urls[1:])
    with whole, sharded:
        for feature, ids in users.items():
            assert {user_bucket_of(u, 2) for u in ids} == {0, 1}
            for u in ids + [10**12]:  # and a user with no events
                for fmt in ("json", "arrays"):
                    assert sharded.sequence(feature, u, as_of=AS_OF, format=fmt) == \
                        whole.sequence(feature, u, as_of=AS_OF, format=fmt), (feature, u, fmt)
            mixed = ids[::-1] + [ids[0]]
            assert sharded.batch(feature, mixed, as_of=AS_OF, n=5) == whole.batch(feature, mixed, as_of=AS_OF, n=5)
        # by name too, and the errors one server gives
        assert sharded.sequence("engagements", ids[0], as_of=AS_OF) == whole.sequence("engagements", ids[0], as_of=AS_OF)
        with pytest.raises(ServingError) as e:
            sharded.sequence("nope", 1)
        assert e.value.status == 404


def test_each_shard_holds_only_its_users(servers, users):
    urls, d = servers
    counts = [_get(u + "/healthz")[1] for u in urls]
    assert [c["shard"] for c in counts] == [None, "0/2", "1/2"]
    for feature, ids in users.items():
        owned = [sum(user_bucket_of(u, 2) == i for u in ids) for i in (0, 1)]
        assert [counts[1]["features"][feature], counts[2]["features"][feature]] == owned
        assert counts[0]["features"][feature] == len(ids) == sum(owned)
    # the workers of shard 0 map one shared copy per feature
    assert sorted(p.name.split(".")[0] for p in (d / "shm").iterdir() if p.is_dir()) == sorted(FEATURES)


def test_a_shard_answers_421_naming_the_owner(servers, users):
    urls, _ = servers
    feature = FEATURES[0]
    ids = users[feature]
    other = next(u for u in ids if user_bucket_of(u, 2) == 1)
    status, body = _get(f"{urls[1]}/v1/sequences/{feature}/{other}?as_of={AS_OF}")
    assert status == 421
    assert body["shard"] == 1 and body["shards"] == 2 and body["url"] == urls[2], body
    assert "shard 1/2" in body["error"] and urls[2] in body["error"]
    mine = next(u for u in ids if user_bucket_of(u, 2) == 0)
    req = urllib.request.Request(f"{urls[1]}/v1/sequences/{feature}/batch", method="POST",
                                 data=json.dumps({"user_ids": [mine, other]}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("a batch with another shard's user was answered")
    except urllib.error.HTTPError as e:
        assert e.code == 421
        body = json.loads(e.read())
    assert body["owners"] == [{"shard": 1, "url": urls[2], "user_ids": [other]}], body
    # A client with a stale map (everything at shard 0) is sent on by the 421's URL
    with ShardedClient([urls[1]]) as stale, ShardedClient(urls[:1]) as whole:
        assert stale.sequence(feature, other, as_of=AS_OF) == whole.sequence(feature, other, as_of=AS_OF)
    # the OpenAPI document of a shard describes the 421
    doc = _get(urls[2] + "/openapi.json")[1]
    op = doc["paths"]["/v1/sequences/{feature}/{user_id}"]["get"]
    assert op["responses"]["421"]["content"]["application/json"]["schema"]["$ref"].endswith("/Misdirected")
    assert "421" not in _get(urls[0] + "/openapi.json")[1]["paths"]["/v1/sequences/{feature}/{user_id}"]["get"]["responses"]


def test_bad_shard_arguments_are_refused(capsys):
    import argparse

    from seq_assets.cli.serve import add_serve_command

    parser = argparse.ArgumentParser()
    add_serve_command(parser.add_subparsers())
    for args, words in ((["--shard", "2/2"], "between 0 and 1"), (["--shard", "x"], "I/N"),
                        (["--shard", "0/2", "--shard-urls", "http://a"], "1 URL(s) for 2 shards"),
                        (["--workers", "0"], "at least 1")):
        ns = parser.parse_args(["serve", "--no-tail", *args])
        assert ns.fn(ns) == 2  # before anything is loaded
        assert words in capsys.readouterr().err, args


def test_a_shards_tail_indexes_only_its_users(tmp_path_factory, users):
    from seq_assets.serving.service import SequenceService
    from seq_assets.serving.shards import Shard
    from seq_assets.serving.tail import KafkaTail
    from tests.support.serving_helpers import SOURCE, event, now_ms, records_frame

    lake = Lake(str(shared_lake(tmp_path_factory).lake))
    ids = users["engagements_v1"]
    mine = next(u for u in ids if user_bucket_of(u, 2) == 0)
    theirs = next(u for u in ids if user_bucket_of(u, 2) == 1)
    service = SequenceService(load_compiled(), lake, shard=Shard(0, 2))
    tail = KafkaTail(service, "127.0.0.1:9")  # never started: the test hands it records
    t = now_ms()
    added = tail.ingest(SOURCE, records_frame([event("s-mine", mine, "click", 5, t - 2000),
                                               event("s-theirs", theirs, "click", 5, t - 1000)]))
    assert added == 1
    fresh = service.stores["engagements_v1"].fresh.frame
    assert fresh.get_column("user_id").to_list() == [mine]
    assert service.get("engagements_v1", mine, fields="event_id", n=1)["events"] == [{"event_id": "s-mine"}]
    assert tail.newest_ts[SOURCE] >= t - 1000  # every user's records still count for freshness
