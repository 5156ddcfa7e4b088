"""``seqctl show`` (the timeline) and ``seqctl compare`` on a definitions project unlike the demo:
string user ids in ``uid``, time ``event_time``, event id ``rating_id``, no ``item_id`` or
``surface``; int64 ids in ``account`` (``tests/support/own_events.py``)."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pytest

from seq_assets.analysis.compare import compare
from seq_assets.analysis.timeline import timeline
from seq_assets.cli import main
from signal_defs.compile import write_compiled
from tests.support.own_events import BUILT, QUIET, USERS, build_lake, end_of, expected
from tests.support.sequences import sequences_day


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    return build_lake(tmp_path_factory.mktemp("own_analysis"))


@pytest.fixture
def env(own, monkeypatch):
    """``seqctl`` run on this project: its compiled definitions in SEQ_DEFS_DIR, its lake."""
    write_compiled(own.compiled.defs, own.root / "defs")
    monkeypatch.setenv("SEQ_DEFS_DIR", str(own.root / "defs"))
    monkeypatch.setenv("SEQ_LAKE_URI", str(own.root / "lake"))
    return own


def _table(text: str) -> tuple[list[str], list[list[str]]]:
    """The timeline's column names and rows, cut at the header's column positions."""
    lines = text.splitlines()
    header = lines[2]
    names = [c for c in header.split("  ") if c.strip()]
    starts, at = [], 0
    for c in names:
        at = header.index(c.strip(), at)
        starts.append(at)
    rows = []
    for line in lines[4:]:
        if line[:2] != "20":
            continue
        bounds = [*starts[1:], None]
        rows.append([line[s:e].strip() for s, e in zip(starts, bounds)])
    return [c.strip() for c in names], rows


def _expected_rows(seq: dict, columns: list[str], time: str) -> list[list[str]]:
    out = []
    for i, t in enumerate(seq[time]):
        when = datetime.fromtimestamp(t / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        out.append([when, *["·" if seq[c][i] is None else str(seq[c][i]) for c in columns]])
    return out


def test_timeline_shows_the_features_first_fields_for_string_users(own):
    kw = {"lake": own.lake, "compiled": own.compiled}
    shown = 0
    for user in USERS:
        text = timeline("liked_v1", user, limit=100, **kw)
        want = expected("liked_v1", own.ratings, user, end_of(BUILT[-1]))
        assert text.startswith(f"liked_v1 · user {user} · at the end of {BUILT[-1]}")
        if not want["rating_id"]:
            assert "(no events)" in text
            continue
        names, rows = _table(text)
        # No event_type, item_id or surface: the first stored fields, then the scalar enrichment.
        assert names == ["time (UTC)", "gap", "rating_id", "movie_id", "rating", "genre"]
        assert [[r[0], *r[2:]] for r in rows] == _expected_rows(want, names[2:], "event_time")
        shown += 1
    assert shown >= 3
    assert "(no events)" in timeline("liked_v1", QUIET, **kw)


def test_timeline_shows_what_the_feature_stores_of_the_demo_columns(own):
    kw = {"lake": own.lake, "compiled": own.compiled}
    at = datetime.fromtimestamp((end_of(BUILT[1]) - 3_600_000) / 1000, tz=timezone.utc)
    text = timeline("opinions_v1", "Bob", as_of=at, **kw)
    assert "just before" in text
    names, rows = _table(text)
    assert names == ["time (UTC)", "gap", "event_type"]
    want = expected("opinions_v1", own.ratings, "Bob", int(at.timestamp() * 1000))
    assert [[r[0], r[2]] for r in rows] == _expected_rows(want, ["event_type"], "event_time") and rows
    text = timeline("opinions_v1", "Bob", enrichments=["movie_id"], **kw)
    assert _table(text)[0] == ["time (UTC)", "gap", "event_type", "movie_id"]


def test_timeline_reads_an_int64_id_from_text(own):
    kw = {"lake": own.lake, "compiled": own.compiled}
    text = timeline("plays_v1", "42", **kw)
    names, rows = _table(text)
    assert names == ["time (UTC)", "gap", "play_id", "track"]
    want = expected("plays_v1", own.plays, 42, end_of(BUILT[-1]))
    assert [[r[0], *r[2:]] for r in rows] == _expected_rows(want, ["play_id", "track"], "played_at")
    assert timeline("plays_v1", 42, **kw) == text
    with pytest.raises(ValueError, match="int64 for feature plays_v1"):
        timeline("plays_v1", "abc", **kw)


def test_seqctl_show_and_compare_on_the_project(env, capsys, tmp_path):
    assert main(["show", "liked_v1", "émile", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("liked_v1 · user émile")
    want = expected("liked_v1", env.ratings, "émile", end_of(BUILT[-1]))
    assert _table(out)[1][0][0] == _expected_rows(want, [], "event_time")[0][0]
    assert main(["show", "plays_v1", "abc"]) == 2
    assert "int64" in capsys.readouterr().err

    # compare: a table against itself, and against a copy with one user's newest event dropped.
    same = compare(env.lake, "liked_v1", "liked_v1", compiled=env.compiled)
    assert [r.day for r in same] == BUILT and all(r.exact_match_rate == 1.0 for r in same)
    assert set(same[-1].field_match_rate) == {"event_time", "movie_id", "rating", "genre"}
    day = sequences_day(env.lake, "liked_v1", BUILT[-1])
    users = day.height
    edited = day.with_columns([pl.when(pl.col("uid") == "alice").then(pl.col(c).list.slice(1)).otherwise(pl.col(c)).alias(c)
                               for c in ("rating_id", "event_time", "movie_id", "rating", "genre")])
    other = tmp_path / "liked_edited"
    edited.write_delta(str(other))
    [r] = compare(env.lake, "liked_v1", str(other), days=[BUILT[-1]], compiled=env.compiled)
    assert r.users_compared == users and r.exact_match_rate == pytest.approx((users - 1) / users)
    assert r.field_match_rate["rating"] == 1.0
    assert main(["compare", "liked_v1", "liked_v1"]) == 0
    assert "exact" in capsys.readouterr().out
