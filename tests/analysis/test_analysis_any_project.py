"""The analysis queries, the analysis assets and ``seqctl report`` over a project shaped unlike the
demo: string user ids in ``member``, event time ``heard_at`` (seconds at the source, epoch ms in the
lake), no ``action``/``surface``/``country`` or ``is_bot``, features without ``event_type`` or ``ts``
fields, and an event type that keeps only some of its source's fields. The lake is written directly (columns per
``Compiled.event_schema`` / ``sequence_schema``); every figure is recomputed here in plain Python."""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import polars as pl
import pytest
from dagster_duckdb import DuckDBResource

from seq_assets.analysis.queries import (
    SCHEMAS,
    action_mix,
    enrichment_coverage,
    events_per_hour,
    late_arrival_lag,
    sequence_lengths,
    stream_lag,
)
from seq_assets.analysis.report import report_data, write_report
from seq_assets.core.compiled import Compiled, compile_definitions
from seq_assets.orchestration.analysis_assets import build_analysis_assets
from seq_assets.orchestration.resources import LakeResource
from seq_assets.storage.lake import Lake
from seq_assets.storage.sql import connect
from signal_defs import (
    CounterEnrichment,
    EventType,
    LookupEnrichment,
    Registry,
    SequenceFeature,
    Source,
    col,
)

DAY = date(2026, 3, 3)
HISTORY = [DAY - timedelta(days=i) for i in range(2, -1, -1)]
USERS = ["ana", "Bo", "émile", "007", "u 5"]
SONGS = [f"song-{i}" for i in range(12)]
FEATURES = ("recent_songs_v1", "listened_v1")


def registry() -> Registry:
    listens = Source(
        name="listens", topic="listens", batch_location="listens",
        schema={"listen_id": "string", "member": "string", "heard_at": "int64", "song": "string",
                "ms_played": "int64", "mood": "string"},
        required=("listen_id", "member", "heard_at", "song", "ms_played"),
        event_id_field="listen_id", user_field="member", time_field="heard_at", time_unit="s")
    genre = LookupEnrichment(name="song_genre", key="song", key_type="string", columns={"genre": "string"},
                             snapshot_location="enrichments/song_genre", min_coverage=0.8)
    plays = CounterEnrichment(name="plays_7d", source="listens", keys=("member",), window_days=7,
                              counts=col("ms_played") >= 0)
    full = EventType(name="full_listen", source="listens", filter=col("ms_played") >= 30_000,
                     enrichments=("song_genre", "plays_7d"))
    skip = EventType(name="skip", source="listens", filter=col("ms_played") < 30_000, enrichments=("song_genre",),
                     fields=("listen_id", "member", "heard_at", "song"))
    recent = SequenceFeature(name="recent_songs", version=1, event_types=("full_listen",), fields=("song", "genre"),
                             max_length=4, window_days=30, owner="music")
    listened = SequenceFeature(name="listened", version=1, event_types=("full_listen",),
                               fields=("listen_id", "ms_played"), max_length=10, window_days=7, owner="music")
    return Registry().add(listens, genre, plays, full, skip, recent, listened)


def day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp() * 1000)


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (DuckDB's quantile_cont)."""
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


class Project:
    """The lake this test writes, and the rows it wrote (the oracle's input)."""

    def __init__(self, root):
        self.compiled = Compiled(compile_definitions(registry()))
        self.lake = Lake(str(root / "lake"))
        rng = random.Random(7)
        c = self.compiled
        self.events: dict[str, list[dict]] = {"full_listen": [], "skip": []}
        self.raw: list[dict] = []
        n = 0
        for d in HISTORY:
            for _ in range(60):
                n += 1
                t = day_ms(d) + rng.randrange(86_400) * 1000
                r = {"listen_id": f"l{n}", "member": rng.choice(USERS), "heard_at": t, "song": rng.choice(SONGS),
                     "ms_played": rng.choice((5_000, 45_000, 200_000)), "mood": rng.choice(("calm", None))}
                lag_days = rng.choice((0, 0, 0, 1, 2))
                stream = rng.random() < 0.4
                arrived = t + rng.randrange(1, 90_000) if stream else None
                self.raw.append({**r, "kafka_partition": 0 if stream else None, "kafka_offset": n if stream else None,
                                 "origin": "kafka" if stream else "batch", "record_id": f"x:{n}",
                                 "arrival_date": d + timedelta(days=lag_days),
                                 "arrived_at": None if arrived is None else
                                 datetime.fromtimestamp(arrived / 1000, timezone.utc),
                                 "ingested_at": datetime(2026, 3, 6, tzinfo=timezone.utc), "date": d})
                et = "full_listen" if r["ms_played"] >= 30_000 else "skip"
                e = {f: r[f] for f in c.event_types[et]["fields"]}
                e.update(event_type=et, genre=None if rng.random() < 0.25 else "pop", def_version="h",
                         ingested_at=datetime(2026, 3, 6, tzinfo=timezone.utc), date=d)
                if et == "full_listen":
                    e["plays_7d"] = None if rng.random() < 0.05 else rng.randrange(9)
                self.events[et].append(e)
        for name in ("full_listen", "skip"):
            schema = c.event_schema(name)
            self.lake.replace_partitions("events", name, pl.DataFrame(self.events[name], schema=schema)
                                         .select(list(schema)), HISTORY)
        raw_schema = {**c.source_schema("listens"), "kafka_partition": pl.Int32, "kafka_offset": pl.Int64,
                      "origin": pl.String, "record_id": pl.String, "arrival_date": pl.Date,
                      "arrived_at": pl.Datetime("us", "UTC"), "ingested_at": pl.Datetime("us", "UTC"), "date": pl.Date}
        self.lake.replace_partitions("raw", "listens", pl.DataFrame(self.raw, schema=raw_schema), HISTORY)
        # Sequences as of the end of DAY: any lists will do for the figures, one user has none.
        self.sequences: dict[str, list[dict]] = {}
        for table in FEATURES:
            f = c.features[table]
            schema = c.sequence_schema(f)
            user = c.user_field(f)
            rows = []
            for u in USERS[:-1]:
                k = rng.randrange(0, f["max_length"] + 1)
                row = {user: u, "date": DAY}
                for field in c.stored_fields(f):
                    row[field] = [rng.choice(SONGS) if schema[field].inner == pl.String else rng.randrange(99)
                                  for _ in range(k)]
                rows.append(row)
            self.sequences[table] = rows
            self.lake.replace_partitions("sequences", table, pl.DataFrame(rows, schema=schema), [DAY])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    return Project(tmp_path_factory.mktemp("any_project"))


@pytest.fixture
def conn(project):
    c = connect(project.lake)
    yield c
    c.close()


def test_the_lake_is_shaped_unlike_the_demo(project):
    c = project.compiled
    schema = c.sequence_schema(c.features["recent_songs_v1"])
    assert "event_type" not in schema and "ts" not in schema and "user_id" not in schema
    assert "ms_played" not in c.event_schema("skip")


def test_sequence_lengths_from_a_stored_list_column(project, conn):
    got = sequence_lengths(conn, project.compiled, [DAY])
    want = []
    for table in FEATURES:
        field = project.compiled.stored_fields(project.compiled.features[table])[0]
        for length, users in sorted(Counter(len(r[field]) for r in project.sequences[table]).items()):
            want.append((table, length, users, DAY))
    assert sorted(got.rows()) == sorted(want)


def test_events_per_hour_by_the_sources_time_field(project, conn):
    got = events_per_hour(conn, project.compiled, [DAY])
    want = []
    for et, events in project.events.items():
        hours = Counter(datetime.fromtimestamp(e["heard_at"] / 1000, timezone.utc).hour
                        for e in events if e["date"] == DAY)
        want.extend((et, h, n, DAY) for h, n in hours.items())
    assert sorted(got.rows()) == sorted(want)


def test_enrichment_coverage_per_the_event_types_enrichments(project, conn):
    got = enrichment_coverage(conn, project.compiled, [DAY])
    want = []
    for et, cols in (("full_listen", (("song_genre", "genre", 0.8), ("plays_7d", "plays_7d", 0.99))),
                     ("skip", (("song_genre", "genre", 0.8),))):
        events = [e for e in project.events[et] if e["date"] == DAY]
        for name, column, minimum in cols:
            covered = sum(e[column] is not None for e in events)
            want.append((et, name, column, len(events), covered, covered / len(events), minimum, DAY))
    assert sorted(got.rows()) == sorted(want)


def test_late_arrival_lag_and_stream_lag(project, conn):
    got = late_arrival_lag(conn, project.compiled, HISTORY)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in project.raw:
        groups[(r["origin"], (r["arrival_date"] - r["date"]).days, r["date"])].append(r)
    per_day = Counter(r["date"] for r in project.raw)
    want = []
    for (origin, lag, d), rows in groups.items():
        lags = [r["arrived_at"].timestamp() * 1000 - r["heard_at"] for r in rows if r["arrived_at"] is not None]
        p50, p99 = ((quantile(lags, 0.5) / 1000, quantile(lags, 0.99) / 1000) if lags else (None, None))
        want.append(("listens", origin, lag, len(rows), len(rows) / per_day[d], p50, p99, d))
    key = lambda r: (r[7], r[1], r[2])  # noqa: E731
    assert len(got.rows()) == len(want)
    for g, w in zip(sorted(got.rows(), key=key), sorted(want, key=key)):
        assert g[:4] == w[:4] and g[7] == w[7]
        for a, b in zip(g[4:7], w[4:7]):
            assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6), (g, w)
    stream = stream_lag(conn, project.compiled, [DAY])
    lags = [r["arrived_at"].timestamp() * 1000 - r["heard_at"] for r in project.raw
            if r["date"] == DAY and r["arrived_at"] is not None]
    assert stream.get_column("events").to_list() == [len(lags)]
    assert math.isclose(stream.get_column("p99_lag_s")[0], quantile(lags, 0.99) / 1000, rel_tol=1e-9)


def test_action_mix_is_empty_without_its_fields(project, conn):
    got = action_mix(conn, project.compiled, HISTORY)
    assert got.is_empty() and got.schema == pl.Schema(SCHEMAS["action_mix"])


def test_report_renders_with_the_projects_figures(project, tmp_path):
    out = write_report(DAY, tmp_path / "report.html", lake=project.lake, compiled=project.compiled)
    page = out.read_text()
    for table in FEATURES:
        assert f"<th>users with a sequence in {table}</th><td>{len(project.sequences[table])}</td>" in page
    today = [e for e in project.events["full_listen"] if e["date"] == DAY]
    assert f"<th>full_listen events</th><td>{len(today)}</td>" in page
    raw_today = [r for r in project.raw if r["date"] == DAY]
    late = sum((r["arrival_date"] - r["date"]).days >= 1 for r in raw_today)
    assert f"{late:,} of {len(raw_today):,}" in page
    for key in ("sequence-lengths", "events-per-hour", "late-arrival-lag", "coverage"):
        assert f'id="plot-{key}"' in page
    data = report_data(DAY, project.lake, project.compiled)
    assert data["late_events_recorded"].is_empty()


def test_analysis_assets_for_the_project(project):
    assets = build_analysis_assets(project.compiled)
    mix = next(a for a in assets if a.key.path[1] == "action_mix")
    assert not mix.dependency_keys  # no source has the demo's action, surface and country
    result = dg.materialize(assets, partition_key=DAY.isoformat(), resources={
        "lake": LakeResource(uri=project.lake.root), "duckdb": DuckDBResource(database=":memory:")})
    assert result.success
    lengths = project.lake.read("analysis", "sequence_lengths")
    assert lengths.get_column("users").sum() == sum(len(r) for r in project.sequences.values())
    metadata = {e.asset_key.path[1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert metadata["sequence_lengths"]["recent_songs_v1_users"].value == len(project.sequences["recent_songs_v1"])
    assert metadata["action_mix"]["events"].value == 0 and project.lake.read("analysis", "action_mix").is_empty()
    coverage = metadata["enrichment_coverage"]
    assert coverage["below_min_coverage"].value == project.lake.read("analysis", "enrichment_coverage") \
        .filter(pl.col("coverage") < pl.col("min_coverage")).height
