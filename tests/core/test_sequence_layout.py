"""sequences/ as full snapshots and only what changed between them (``seq_assets.core.snapshots``).

On the demo definitions and the ratings project, with a short window, a small cap and a full
snapshot every three days (so events leave the window and the cap, users' sequences become empty,
and the days cross snapshot boundaries), every reader gives, for every user and day, what a full
rebuild from ``events/`` gives: ``read_sequences``, ``point_in_time_sequences`` at the end of the
day, the SQL view ``sequences.<feature>`` and serving's snapshot load. That holds for a run over
all days (built day to day), for days built one run at a time, after a late event is backfilled
into a closed day (the days written against it are re-derived), and after retention, which keeps
the full snapshot a kept day is read over. A day of changes writes only the users whose sequence
changed, counted as a comparison of the full rebuilds finds them.
"""

from __future__ import annotations

import dataclasses
import importlib
import random
from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from seq_assets.core import snapshots
from seq_assets.core.compiled import Compiled, compile_definitions
from seq_assets.core.days import end_of_day_ms
from seq_assets.core.engine import Engine
from seq_assets.serving.columns import list_widths
from seq_assets.serving.fetch import Snapshot
from seq_assets.storage import maintenance
from seq_assets.storage.lake import Lake
from seq_assets.storage.sql import connect, query
from seq_assets.training import point_in_time_sequences, read_sequences
from signal_defs import Registry

PERIOD, WINDOW, CAP = 3, 3, 4
START = date(2026, 3, 3)  # a day of changes by the calendar: the first build is a full snapshot all the same
DAYS = [START + timedelta(days=i) for i in range(8)]
PROJECTS = {"demo": "signal_defs", "ratings": "tests.projects.ratings_defs"}


def _compiled(module: str) -> Compiled:
    reg = importlib.import_module(module).REGISTRY
    defs = [dataclasses.replace(d, window_days=WINDOW, max_length=CAP, full_snapshot_every_days=PERIOD)
            if d.kind == "feature" else d for d in reg.definitions]
    return Compiled(compile_definitions(Registry(defs)))


def _value(dtype, rng: random.Random, widths: dict, name: str, day: date):
    if dtype == pl.Date:
        return day
    if isinstance(dtype, pl.Datetime):
        return datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc)
    if isinstance(dtype, pl.List):
        return [rng.random() for _ in range(widths.get(name, 3))]
    if dtype.is_integer():
        return rng.randrange(50)
    if dtype.is_float():
        return rng.random()
    return rng.choice(["a", "b", "c"])


def _user_ids(c: Compiled, n: int) -> list:
    f = next(iter(c.features.values()))
    return list(range(1, n + 1)) if c.user_type(f).is_integer() else [f"m{i}" for i in range(1, n + 1)]


def _events(c: Compiled, et: str, day: date, users: list, rng: random.Random, widths: dict, tag: str = "") -> pl.DataFrame:
    """Events of ``et`` on ``day``: 1 to 5 for each of ``users``, at random times of the day."""
    schema = c.event_schema(et)
    src = c.sources[c.event_types[et]["source"]]
    rows = []
    start = end_of_day_ms(day) - 86_400_000
    for u in users:
        for _ in range(rng.randint(1, 5)):
            row = {k: _value(t, rng, widths, k, day) for k, t in schema.items()}
            row.update({src["user_field"]: u, src["time_field"]: start + rng.randrange(86_400_000),
                        src["event_id_field"]: f"{et}-{day}-{tag}{len(rows)}", "event_type": et})
            rows.append(row)
    return pl.DataFrame(rows, schema=schema)


def _write_history(c: Compiled, lake: Lake, seed: int) -> None:
    rng, widths = random.Random(seed), list_widths(c)
    pool = _user_ids(c, 10)
    ghost = pool[-1]  # active on the first day only: its sequence empties once that day leaves the window
    for i, day in enumerate(DAYS):
        for et in c.event_types:
            users = rng.sample(pool[:-1], rng.randint(3, 6)) + ([ghost] if i == 0 else [])
            lake.replace_partitions("events", et, _events(c, et, day, users, rng, widths), [day])


def _rebuild(engine: Engine, table: str, day: date) -> pl.DataFrame:
    """The sequences of the day from the whole window of events/: what a full snapshot holds."""
    return engine.build_sequences_day(table, day)


def assert_reads_equal_rebuild(engine: Engine, table: str, days: list[date]) -> None:
    c, lake = engine.compiled, engine.lake
    f = c.features[table]
    user, fields = c.user_field(f), c.stored_fields(f)
    conn = connect(lake, tables=[f"sequences.{table}"])
    widths = list_widths(c)
    heights = 0
    try:
        for d in days:
            want = _rebuild(engine, table, d)
            heights += want.height
            assert want.height > 0, d
            got = read_sequences(table, d, lake=lake, compiled=c)
            assert got.height == want.height, (table, d)
            assert_frame_equal(got, want.select(got.columns), check_dtypes=True)
            sql = query(f'SELECT * FROM sequences."{table}" WHERE date = DATE \'{d}\' ORDER BY "{user}"', conn=conn)
            assert_frame_equal(sql, want.select(sql.columns))
            ids = sorted({*_user_ids(c, 12), *want[user].to_list()})
            labels = pl.DataFrame({user: ids, "request_ts": end_of_day_ms(d)},
                                  schema={user: c.user_type(f), "request_ts": pl.Int64})
            pit = point_in_time_sequences(table, labels, lake=lake, compiled=c)
            pit = pit.filter(pl.col(fields[0]).list.len() > 0).sort(user)
            assert_frame_equal(pit.select(user, *fields), want.select(user, *fields))
            snap = Snapshot.load(lake, table, d, fields, widths, user)
            assert snap.user_ids.tolist() == want[user].to_list(), d
            assert np.diff(snap.offsets).tolist() == want[fields[0]].list.len().to_list()
            for x in fields:
                flat = snap.events.cols[x]
                assert [np.asarray(flat[a:b]).tolist() for a, b in zip(snap.offsets[:-1], snap.offsets[1:])] == \
                    want[x].to_list(), (d, x)
        listed = ", ".join(f"DATE '{d}'" for d in days)
        whole = query(f'SELECT count(*) AS n FROM sequences."{table}" WHERE date IN ({listed})', conn=conn)["n"][0]
        assert whole == heights
    finally:
        conn.close()


def _changed_by_rebuild(engine: Engine, table: str, day: date) -> int:
    """Users whose rebuilt sequence differs from the day before's, compared row by row in Python."""
    user = engine.compiled.user_field(engine.compiled.features[table])
    now, before = (
        {r[user]: r for r in _rebuild(engine, table, d).drop("date").iter_rows(named=True)}
        for d in (day, day - timedelta(days=1)))
    return sum(now.get(u) != before.get(u) for u in set(now) | set(before))


@pytest.fixture(params=sorted(PROJECTS))
def project(request, tmp_path):
    c = _compiled(PROJECTS[request.param])
    lake = Lake(str(tmp_path / "lake"))
    _write_history(c, lake, seed=len(request.param))
    return Engine(c, lake), tmp_path


def test_a_run_over_every_day_writes_the_changes_and_reads_like_a_rebuild(project):
    engine, _ = project
    for table, f in engine.compiled.features.items():
        writes = {d: info for d, _, info in engine.sequences_days(table, DAYS)}
        assert list(writes) == DAYS
        kinds = snapshots.partition_kinds(engine.lake.scan("sequences", table))
        # The first day (no snapshot before it) and every third day by the calendar are full.
        assert [d for d in DAYS if kinds[d]] == sorted({DAYS[0], *(d for d in DAYS if snapshots.calendar_full(f, d))})
        assert sum(kinds.values()) >= 3  # two boundaries crossed
        for d, w in writes.items():
            assert w.full_snapshot == kinds[d]
            assert w.bytes_written > 0
            if w.full_snapshot:
                assert w.rows == w.users
            else:
                assert w.changed_users == _changed_by_rebuild(engine, table, d), (table, d)
                assert w.rows == max(w.changed_users, 1)  # a marker row when nobody changed
        stored = engine.lake.read("sequences", table)
        assert (stored[snapshots.ROW_KIND] == snapshots.EMPTY).sum() > 0  # someone's sequence emptied
        assert_reads_equal_rebuild(engine, table, DAYS)


def _widest(c: Compiled) -> str:
    """The feature over the most event types (the others are covered by the run over every day)."""
    return max(sorted(c.features), key=lambda t: len(c.features[t]["event_types"]))


def test_days_built_one_run_at_a_time_read_like_a_rebuild(project):
    engine, _ = project
    for table in [_widest(engine.compiled)]:
        for d in DAYS:  # each run starts from the stored day before, not from one in memory
            ((_, _, w),) = list(engine.sequences_days(table, [d]))
            assert w.full_snapshot or w.changed_users == _changed_by_rebuild(engine, table, d)
        assert_reads_equal_rebuild(engine, table, DAYS)


def test_a_late_event_backfilled_into_a_closed_day_rederives_the_days_written_against_it(project):
    engine, _ = project
    c, lake = engine.compiled, engine.lake
    table = _widest(c)
    list(engine.sequences_days(table, DAYS))
    kinds = snapshots.partition_kinds(lake.scan("sequences", table))
    late_day = next(d for d in DAYS[1:] if not kinds[d] and not kinds[d + timedelta(days=1)])
    next_full = min(d for d in DAYS if d > late_day and kinds[d])
    before = {d: read_sequences(table, d, lake=lake, compiled=c) for d in DAYS}
    # A late event for a user of that day and one for a user never seen, backfilled into the day.
    rng, widths = random.Random(7), list_widths(c)
    for et in c.event_types:
        have = lake.read("events", et, days=[late_day])
        user = c.sources[c.event_types[et]["source"]]["user_field"]
        late = _events(c, et, late_day, [have[user][0], _user_ids(c, 12)[-1]], rng, widths, tag="late")
        lake.replace_partitions("events", et, pl.concat([have, late]), [late_day])
    rerun = [(d, w.rederived) for d, _, w in engine.sequences_days(table, [late_day])]
    assert rerun == [(late_day, False)] + [(d, True) for d in DAYS if late_day < d < next_full]
    # Up to the next full snapshot every day reads as the events now say; from it on, the days are
    # those they were (as a rebuild of one day leaves the later days of a full-snapshot layout).
    assert_reads_equal_rebuild(engine, table, [d for d in DAYS if late_day <= d < next_full])
    for d in DAYS:
        if d < late_day or d >= next_full:
            assert read_sequences(table, d, lake=lake, compiled=c).equals(before[d]), d
    assert not read_sequences(table, late_day, lake=lake, compiled=c).equals(before[late_day])
    # The close-days schedule rebuilds every day from the late one on: then every day is exact.
    list(engine.sequences_days(table, [d for d in DAYS if d >= late_day]))
    assert_reads_equal_rebuild(engine, table, DAYS)


def test_retention_keeps_the_full_snapshot_a_kept_day_is_read_over(project):
    engine, _ = project
    table = min(engine.compiled.features)
    list(engine.sequences_days(table, DAYS))
    kinds = snapshots.partition_kinds(engine.lake.scan("sequences", table))
    oldest_kept = next(d for d in DAYS[1:] if not kinds[d])
    today = oldest_kept + timedelta(days=2)
    maintenance.drop_expired(engine.lake, "sequences", table, retention_days=2, today=today)
    left = snapshots.partition_kinds(engine.lake.scan("sequences", table))
    base = snapshots.base_day(kinds, oldest_kept)
    assert min(left) == base < oldest_kept
    assert_reads_equal_rebuild(engine, table, [d for d in DAYS if d >= oldest_kept])
