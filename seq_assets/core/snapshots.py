"""The layout of ``sequences/<feature>``: full snapshots, and between them only what changed.

Every ``full_snapshot_every_days`` days (counted from 1970-01-01, so the days are fixed by the
calendar) a day's partition holds every user's sequence, rows marked :data:`FULL`. Every other day
holds only the users whose sequence changed since the day before: new events, events that left the
window or the cap (:data:`CHANGED`), and users whose sequence became empty (:data:`EMPTY`, empty
lists). A day that would hold no row at all holds one marker row with no user, so every built day
has a partition and a full day is known as one even with no users.

The sequences as of day D are, per user, the newest row at or before D since the newest full
partition at or before D (its *base*), without the empty ones. :func:`sequences_as_of` and
:func:`rows_as_of` resolve that; every reader of ``sequences/`` goes through them (training,
serving, SQL, the checks, the analysis, ``seqctl show|compare``, and the build itself for the day
before). A table written before this layout (no ``row_kind`` column, or rows with none) is read as
full days.

A day is written against what the table resolves for the day before, so right after a day's write
its read equals the rules applied to the events (:mod:`seq_assets.core.kernel`); a later rewrite of
an earlier day re-derives the days after it up to the next full partition
(:meth:`seq_assets.core.engine.Engine.sequences_days`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

import polars as pl

from signal_defs.model import SequenceFeature

if TYPE_CHECKING:
    from seq_assets.core.compiled import Compiled

ROW_KIND = "row_kind"
FULL, CHANGED, EMPTY = "full", "changed", "empty"
EPOCH = date(1970, 1, 1)
DEFAULT_PERIOD = next(f.default for f in dataclasses.fields(SequenceFeature) if f.name == "full_snapshot_every_days")


def period_days(feature: dict) -> int:
    """Days from one full snapshot to the next (compiled definitions from before the setting: the default)."""
    return int(feature.get("full_snapshot_every_days", DEFAULT_PERIOD))


def calendar_full(feature: dict, day: date) -> bool:
    """Whether ``day`` is one of the feature's full-snapshot days."""
    return (day - EPOCH).days % period_days(feature) == 0


def stored_schema(schema: dict) -> dict:
    """The columns a ``sequences/`` table stores: the sequence schema plus :data:`ROW_KIND`."""
    return {**schema, ROW_KIND: pl.String}


# ---- which stored rows make a day ------------------------------------------------------------


def partition_kinds(lf: pl.LazyFrame, end: date | None = None, start: date | None = None) -> dict[date, bool]:
    """The built days of a ``sequences/`` scan (between ``start`` and ``end`` when given) and whether
    each is a full snapshot. Reads only ``date`` and ``row_kind`` (a dictionary-coded column)."""
    if start is not None:
        lf = lf.filter(pl.col("date") >= start)
    if end is not None:
        lf = lf.filter(pl.col("date") <= end)
    if ROW_KIND not in lf.collect_schema():
        days = lf.select(pl.col("date").unique()).collect().get_column("date").to_list()
        return {d: True for d in days}
    full = (pl.col(ROW_KIND).is_null() | (pl.col(ROW_KIND) == FULL)).any().alias("full")
    df = lf.group_by("date").agg(full).collect()
    return dict(zip(df.get_column("date").to_list(), df.get_column("full").to_list()))


def base_day(kinds: dict[date, bool], day: date) -> date | None:
    """The newest full partition at or before ``day`` (None when there is none)."""
    return max((d for d, full in kinds.items() if full and d <= day), default=None)


@dataclass
class StoredRows:
    """The stored rows that make the sequences as of ``day``: ``positions`` index the rows of
    ``scan`` (the partitions from ``base`` to ``day``), ordered by user. ``read`` collects
    columns one call at a time (a caller can hold one nested column at a time); every call reads
    the same scan, which lines up row for row (checked on the user column)."""

    day: date
    base: date
    scan: pl.LazyFrame
    user: str
    positions: pl.Series
    users: pl.Series
    identity: bool  # the positions are every row in order: no gather needed

    def read(self, *columns: str) -> pl.DataFrame:
        cols = [c for c in dict.fromkeys([self.user, *columns])]
        got = self.scan.select(cols).collect()
        if not self.identity:
            got = got[self.positions]
        if not got.get_column(self.user).equals(self.users):
            raise RuntimeError(f"sequences rows of {self.day} moved between two reads of one table version")
        return got.select(list(columns))


def rows_as_of(lf: pl.LazyFrame, day: date, user: str, built_only: bool = True,
               users: pl.Series | None = None) -> StoredRows | None:
    """Resolve the rows of a ``sequences/`` scan ``lf`` (one table version) that make ``day``: per
    user the newest row since the base, empty sequences and marker rows dropped. None when
    ``day`` was not built (``built_only``; else when nothing at or before it is stored).
    ``users`` keeps only those ids. Raises when the day has no full snapshot to start from."""
    kinds = partition_kinds(lf, end=day)
    if not kinds or (built_only and day not in kinds):
        return None
    base = base_day(kinds, day)
    if base is None:
        raise ValueError(f"sequences as of {day}: no full snapshot at or before it is stored "
                         f"(the oldest stored day, {min(kinds)}, holds only changes)")
    scan = lf.filter((pl.col("date") >= base) & (pl.col("date") <= day))
    if users is not None:
        scan = scan.filter(pl.col(user).is_in(users.implode()))
    has_kind = ROW_KIND in lf.collect_schema()
    keys = scan.select(user, "date", *([ROW_KIND] if has_kind else [])).collect().with_row_index("_row")
    n = keys.height
    keys = keys.filter(pl.col(user).is_not_null())
    if base != day:
        keys = keys.filter(pl.col("date") == pl.col("date").max().over(user))
    if has_kind:
        keys = keys.filter(pl.col(ROW_KIND).is_null() | (pl.col(ROW_KIND) != EMPTY))
    if not keys.get_column(user).is_sorted():
        keys = keys.sort(user, maintain_order=True)
    positions = keys.get_column("_row")
    identity = keys.height == n and bool((positions == pl.int_range(n, eager=True, dtype=positions.dtype)).all())
    return StoredRows(day, base, scan, user, positions, keys.get_column(user), identity)


def sequences_as_of(lake, compiled: Compiled, table: str, day: date, users: pl.Series | None = None,
                    columns: list[str] | None = None, built_only: bool = True) -> pl.DataFrame:
    """The feature's sequences as of the end of ``day``: one row per user (sorted), the user
    column, one list column per field of ``columns`` (default: the stored fields), then ``date``
    (the day). Empty, with those columns, when the day was not built (``built_only``). ``users``
    (ids of the feature's user type) keeps only those."""
    feature = compiled.features[table]
    user = compiled.user_field(feature)
    fields = compiled.stored_fields(feature) if columns is None else list(columns)
    schema = compiled.sequence_schema(feature)
    out_schema = {user: schema[user], **{f: schema[f] for f in fields}, "date": pl.Date}
    lf = lake.scan("sequences", table)
    rows = None if lf is None else rows_as_of(lf, day, user, built_only=built_only, users=users)
    if rows is None:
        return pl.DataFrame(schema=out_schema)
    got = rows.read(user, *fields)
    return got.with_columns(pl.lit(day, pl.Date).alias("date")).select(
        [pl.col(c).cast(t) for c, t in out_schema.items()])


# ---- what a day writes ---------------------------------------------------------------------------


def changed_users(previous: pl.DataFrame, current: pl.DataFrame, user: str, fields: list[str]) -> pl.Series:
    """The users whose sequence differs between two states (rows of one and not the other, or any
    field not equal), compared exactly."""
    if previous.is_empty():
        return current.get_column(user)
    if current.is_empty():
        return previous.get_column(user)
    j = current.select(user, *fields).join(previous.select(user, *fields), on=user, how="full",
                                           suffix="__prev", coalesce=True)
    differs = pl.any_horizontal([~pl.col(f).eq_missing(pl.col(f"{f}__prev")) for f in fields])
    return j.filter(differs).get_column(user)


def day_rows(seqs: pl.DataFrame, changed: pl.Series | None, user: str, day: date) -> pl.DataFrame:
    """What a day's partition holds: every user of ``seqs`` (the day's whole state, one row per
    user) when ``changed`` is None, else the rows of the ``changed`` users, with an empty row for
    each of them that has no sequence any more. A marker row (no user) when that is nothing."""
    if changed is None:
        out = seqs.with_columns(pl.lit(FULL).alias(ROW_KIND))
        kind = FULL
    else:
        ids = changed.unique().implode()
        out = seqs.filter(pl.col(user).is_in(ids)).with_columns(pl.lit(CHANGED).alias(ROW_KIND))
        gone = changed.filter(~changed.is_in(seqs.get_column(user).implode())).unique().sort()
        if len(gone):
            empty = _empty_rows(seqs.schema, user, gone, day, EMPTY)
            out = pl.concat([out, empty.select(out.columns)], how="vertical_relaxed").sort(user)
        kind = CHANGED
    if out.is_empty():
        out = _empty_rows(seqs.schema, user, pl.Series(user, [None], dtype=seqs.schema[user]), day, kind)
    return out


def _empty_rows(schema: dict, user: str, users: pl.Series, day: date, kind: str) -> pl.DataFrame:
    """Rows of ``users`` with every list empty, dated ``day``, of row kind ``kind``."""
    n = len(users)
    cols = {c: (users.cast(t).rename(c) if c == user else pl.Series(c, [day] * n, dtype=pl.Date) if c == "date"
                else pl.Series(c, [[] for _ in range(n)], dtype=t)) for c, t in schema.items()}
    return pl.DataFrame(cols).with_columns(pl.lit(kind).alias(ROW_KIND))


def following_days(kinds: dict[date, bool], day: date) -> list[date]:
    """The built days after ``day`` whose rows were written against it: up to the next full one."""
    later = sorted(d for d in kinds if d > day)
    out = []
    for d in later:
        if kinds[d]:
            break
        out.append(d)
    return out


def must_be_full(feature: dict, kinds: dict[date, bool], day: date) -> bool:
    """Whether ``day`` is written as a full snapshot: on the calendar's days, and when no full
    partition lies in the period before it (a first build, or a full day that was never built)."""
    if calendar_full(feature, day):
        return True
    since = day - timedelta(days=period_days(feature) - 1)
    return not any(full for d, full in kinds.items() if since <= d < day)


def retention_cutoff(lf: pl.LazyFrame | None, cutoff: date) -> date:
    """The day before which retention may drop a ``sequences/`` table's days when it would drop
    those before ``cutoff``: never the full snapshot that the oldest day kept is read from."""
    if lf is None:
        return cutoff
    kinds = partition_kinds(lf)
    kept = [d for d in kinds if d >= cutoff]
    base = base_day(kinds, min(kept)) if kept else None
    return min(cutoff, base) if base is not None else cutoff
