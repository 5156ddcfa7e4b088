"""Training reads of a definitions project unlike the demo: string user ids in ``uid``, time
``event_time``, event id ``rating_id``; int64 ids in ``account`` (``tests/support/own_events.py``).

The sequences are the engine's (the first day built from its window, the next ones extended from
the day before); both reads are checked against the sequence recomputed in plain Python.
"""

from __future__ import annotations

import polars as pl
import pytest

from seq_assets.core.engine import Engine
from seq_assets.training import point_in_time_sequences, read_sequences
from tests.support import own_events as proj


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    return proj.build_lake(tmp_path_factory.mktemp("own_training"))


def _kw(own) -> dict:
    return {"lake": own.lake, "compiled": own.compiled}


@pytest.mark.parametrize("table", [*proj.RATINGS, "plays_v1"])
def test_read_sequences_equal_the_recomputed_ones_every_day(own, table):
    _, user, _, _, _, _, fields = proj.FEATURES[table]
    rows = own.ratings if table in proj.RATINGS else own.plays
    for day in proj.BUILT:
        seqs = read_sequences(table, day, **_kw(own))
        assert seqs.columns == [user, "date", *fields]
        assert seqs.schema[user] == (pl.String if table in proj.RATINGS else pl.Int64)
        got = {r[user]: {f: r[f] for f in fields} for r in seqs.iter_rows(named=True)}
        users = {r[user] for r in rows}
        want = {u: s for u in users if (s := proj.expected(table, rows, u, proj.end_of(day)))[fields[0]]}
        assert got == want and len(got) >= 3, (table, day)


@pytest.mark.parametrize("table, extends", [("liked_v1", True), ("opinions_v1", True), ("plays_v1", True),
                                            ("movies_v1", False)])  # without its time, a list cannot be cut
def test_the_engine_extends_a_day_by_the_features_user_column(own, table, extends):
    engine = Engine(own.compiled, own.lake)
    built = None
    for day in proj.BUILT:
        built = engine._build_sequences(table, day, built)
        assert built.extended == (extends and day != proj.BUILT[0])
        user = proj.FEATURES[table][1]
        read = read_sequences(table, day, **_kw(own)).select(built.seqs.columns)
        assert built.seqs.sort(user).equals(read.sort(user))


def test_read_sequences_filters_string_users(own):
    day = proj.BUILT[-1]
    some = ["émile", proj.QUIET, "alice"]
    for users in (some, pl.Series(some)):
        got = read_sequences("liked_v1", day, users=users, fields=["rating_id"], **_kw(own))
        assert got.columns == ["uid", "date", "rating_id"]
        have = [u for u in some if proj.expected("liked_v1", own.ratings, u, proj.end_of(day))["rating_id"]]
        assert sorted(got["uid"]) == sorted(have) and have
    with pytest.raises(ValueError, match="string"):
        read_sequences("liked_v1", day, users=[1, 2], **_kw(own))
    assert read_sequences("plays_v1", day, users=[42], **_kw(own))["account"].to_list() == [42]
    assert read_sequences("plays_v1", day, users=pl.Series([42], dtype=pl.Int32), **_kw(own)).height == 1
    with pytest.raises(ValueError, match="int64"):
        read_sequences("plays_v1", day, users=["42"], **_kw(own))


def _labels(own) -> pl.DataFrame:
    """Labels at event times (the event itself is not seen), mid-day, at day ends and after the lake."""
    times = sorted({r["event_time"] for r in own.ratings[::9]} | {proj.day_start(d) + proj.DAY_MS // 2 for d in proj.DAYS}
                   | {proj.end_of(d) for d in proj.DAYS} | {proj.end_of(proj.DAYS[-1]) + 5 * proj.DAY_MS})
    users = proj.USERS + [proj.QUIET]
    rows = [(users[i % len(users)], t) for i, t in enumerate(times)] + [(u, proj.end_of(proj.DAYS[1])) for u in users]
    return pl.DataFrame(rows, schema={"uid": pl.String, "request_ts": pl.Int64}, orient="row")


@pytest.mark.parametrize("table", proj.RATINGS)
def test_point_in_time_sequences_with_string_users(own, table):
    fields = list(proj.FEATURES[table][-1])
    labels = _labels(own).with_columns(pl.lit("x").alias("label"))
    out = point_in_time_sequences(table, labels, **_kw(own))
    assert out.columns == ["uid", "request_ts", "label", *fields]
    assert out.select("uid", "request_ts").equals(labels.select("uid", "request_ts"))
    seen = 0
    for r in out.iter_rows(named=True):
        want = proj.expected(table, own.ratings, r["uid"], r["request_ts"])
        assert {f: r[f] for f in fields} == want, (r["uid"], r["request_ts"])
        seen += bool(want[fields[0]])
    assert seen > 10


def test_point_in_time_takes_a_user_id_column_for_the_features_user(own):
    labels = _labels(own)
    named = point_in_time_sequences("opinions_v1", labels, fields=["rating_id"], **_kw(own))
    renamed = point_in_time_sequences("opinions_v1", labels.rename({"uid": "user_id"}), fields=["rating_id"], **_kw(own))
    assert renamed.equals(named)
    plays = pl.DataFrame({"user_id": [42, 2**40, 7], "request_ts": [proj.end_of(proj.DAYS[2])] * 3})
    got = point_in_time_sequences("plays_v1", plays, fields=["play_id"], **_kw(own))
    assert got.columns == ["account", "request_ts", "play_id"]
    assert got["play_id"].to_list() == [proj.expected("plays_v1", own.plays, u, proj.end_of(proj.DAYS[2]))["play_id"]
                                        for u in (42, 2**40, 7)]
    with pytest.raises(ValueError, match="string"):
        point_in_time_sequences("liked_v1", pl.DataFrame({"uid": [1], "request_ts": [proj.end_of(proj.DAYS[2])]}), **_kw(own))
