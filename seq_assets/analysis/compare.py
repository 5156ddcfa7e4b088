"""Shadow comparison of two sequence tables with the same layout, for migrations.

Event level: events matched by id between baseline and candidate, compared field by field.
Sequence level: per user, exact match of the id lists, overlap (shared ids over the longer list),
normalized edit distance of the id lists, and the length difference. All per day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import polars as pl
from rapidfuzz.distance import Levenshtein

from seq_assets.core import snapshots
from seq_assets.core.compiled import Compiled
from seq_assets.storage.lake import Lake
from signal_defs.model import Source


@dataclass
class DayReport:
    day: date
    users_baseline: int
    users_candidate: int
    users_compared: int
    exact_match_rate: float
    mean_overlap: float
    mean_edit_distance: float
    mean_length_diff: float
    matched_events: int
    field_match_rate: dict[str, float]

    def metadata(self) -> dict[str, float]:
        out = {
            "users_compared": float(self.users_compared),
            "exact_match_rate": self.exact_match_rate,
            "mean_overlap": self.mean_overlap,
            "mean_edit_distance": self.mean_edit_distance,
            "mean_length_diff": self.mean_length_diff,
            "matched_events": float(self.matched_events),
        }
        out.update({f"field_match_{k}": v for k, v in self.field_match_rate.items() if v == v})
        return out


def open_table(lake: Lake, spec: str) -> pl.LazyFrame:
    """A feature table name (``engagements_v1``) in the lake, or the URI of an external Delta table."""
    if "/" in spec or "://" in spec:
        return pl.scan_delta(spec)
    lf = lake.scan("sequences", spec)
    if lf is None:
        raise ValueError(f"no sequences table {spec!r} in {lake.root} (give a feature table name or a Delta table path)")
    return lf


def table_keys(specs: list[str], lf: pl.LazyFrame, compiled: Compiled | None = None) -> tuple[str, str]:
    """The user column and the event id of sequence tables with one layout: those of the first of
    ``specs`` that names a feature of ``compiled``; else the table's one scalar column besides
    ``date`` and the definitions' default event id field."""
    for spec in specs:
        if compiled is None or "/" in spec or "://" in spec:
            continue
        try:
            f = compiled.feature(spec)
        except KeyError:
            continue
        return compiled.user_field(f), compiled.source_of(f)["event_id_field"]
    schema = lf.collect_schema()
    scalars = [c for c, t in schema.items() if c not in ("date", snapshots.ROW_KIND) and not isinstance(t, pl.List)]
    if len(scalars) != 1:
        raise ValueError(f"cannot tell the user column of {specs[0]} among {scalars}: name a feature of the definitions")
    return scalars[0], Source.event_id_field


def compare_day(baseline: pl.DataFrame, candidate: pl.DataFrame, day: date, user: str, event_id: str) -> DayReport:
    """Compare one day; ``user`` names the user column, ``event_id`` the list of event ids."""
    for name, df in (("baseline", baseline), ("candidate", candidate)):
        if event_id not in df.columns:
            raise ValueError(f"the {name} table stores no {event_id!r} (the event id) to match events by")
    users = baseline.select(user).join(candidate.select(user), on=user, how="full", coalesce=True)
    b = users.join(baseline, on=user, how="left").sort(user)
    c = users.join(candidate, on=user, how="left").sort(user)
    b_ids = b.get_column(event_id).fill_null([]).to_list()
    c_ids = c.get_column(event_id).fill_null([]).to_list()
    exact = overlap = edit = lendiff = 0.0
    for x, y in zip(b_ids, c_ids):
        exact += x == y
        longest = max(len(x), len(y))
        overlap += (len(set(x) & set(y)) / longest) if longest else 1.0
        edit += Levenshtein.normalized_distance(x, y) if longest else 0.0
        lendiff += abs(len(x) - len(y))
    n = max(len(b_ids), 1)
    fields = [f for f in baseline.columns if f in candidate.columns and f not in (user, "date", event_id)]
    be = baseline.select(user, event_id, *fields).explode([event_id, *fields]).drop_nulls(event_id)
    ce = candidate.select(user, event_id, *fields).explode([event_id, *fields]).drop_nulls(event_id)
    matched = be.join(ce, on=[user, event_id], how="inner", suffix="__c")
    rates = {}
    for f in fields:
        if matched.height:
            same = matched.select((pl.col(f).eq_missing(pl.col(f"{f}__c"))).mean()).item()
            rates[f] = float(same)
        else:
            rates[f] = float("nan")  # nothing matched: no evidence either way
    return DayReport(day, baseline.height, candidate.height, len(b_ids), exact / n, overlap / n, edit / n, lendiff / n,
                     matched.height, rates)


def compare(lake: Lake, baseline: str, candidate: str, days: list[date] | None = None,
            compiled: Compiled | None = None) -> list[DayReport]:
    """Per day in common (or ``days``); the user column and event id come from the definitions of the
    feature named (``compiled``), see :func:`table_keys`."""
    b_lf, c_lf = open_table(lake, baseline), open_table(lake, candidate)
    user, event_id = table_keys([baseline, candidate], b_lf, compiled)
    if days is None:
        b_days = set(b_lf.select(pl.col("date").unique()).collect().get_column("date").to_list())
        c_days = set(c_lf.select(pl.col("date").unique()).collect().get_column("date").to_list())
        days = sorted(b_days & c_days)
    reports = []
    for d in days:
        reports.append(compare_day(day_sequences(b_lf, d, user), day_sequences(c_lf, d, user), d, user, event_id))
    return reports


def day_sequences(lf: pl.LazyFrame, day: date, user: str) -> pl.DataFrame:
    """The sequences a table holds as of ``day`` (its full snapshot and the changes since, see
    :mod:`seq_assets.core.snapshots`), one row per user, without the row kinds."""
    cols = [c for c in lf.collect_schema() if c != snapshots.ROW_KIND]
    rows = snapshots.rows_as_of(lf, day, user)
    if rows is None:
        return lf.filter(pl.col("date") == day).select(cols).collect()
    return rows.read(*[c for c in cols if c != "date"]).with_columns(pl.lit(day, pl.Date).alias("date")).select(cols)


def format_report(baseline: str, candidate: str, reports: list[DayReport]) -> str:
    lines = [f"shadow comparison: baseline {baseline} vs candidate {candidate}", ""]
    head = f"{'day':<12}{'users':>8}{'exact':>8}{'overlap':>9}{'edit':>8}{'len diff':>10}{'matched ev':>12}"
    lines.append(head)
    lines.append("-" * len(head))
    for r in reports:
        lines.append(f"{r.day.isoformat():<12}{r.users_compared:>8}{r.exact_match_rate:>8.1%}{r.mean_overlap:>9.1%}"
                     f"{r.mean_edit_distance:>8.3f}{r.mean_length_diff:>10.2f}{r.matched_events:>12}")
    if reports:
        lines += ["", "event-level field match rate over matched events:"]
        fields = sorted({f for r in reports for f in r.field_match_rate})
        for f in fields:
            vals = [r.field_match_rate.get(f, float("nan")) for r in reports]
            lines.append(f"  {f:<24}" + " ".join(f"{v:>7.1%}" if v == v else f"{'n/a':>7}" for v in vals))
    else:
        lines.append("(no day in common)")
    return "\n".join(lines)
