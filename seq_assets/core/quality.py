"""Quality checks as pure functions over the lake: freshness, completeness, coverage, schema drift,
uniqueness and sequence invariants. The Dagster checks (seq_assets.checks and the in-body checks
of seq_assets.assets) are thin shells around these; thresholds come from the definitions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING

import polars as pl

from seq_assets.core import snapshots
from seq_assets.core.compiled import Compiled
from seq_assets.core.days import DAY_MS, day_of_ms, end_of_day_ms
from seq_assets.core.kernel import window_bounds
from seq_assets.core.predicates import to_expr

if TYPE_CHECKING:  # handed a lake; core imports no storage
    from seq_assets.storage.lake import Lake


@dataclass
class Outcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def _fmt_types(schema: dict) -> dict[str, str]:
    return {k: str(v) for k, v in schema.items()}


def schema_drift(actual: dict, expected: dict) -> Outcome:
    """The table's columns against the compiled definition: missing, extra or retyped columns fail."""
    a, e = _fmt_types(actual), _fmt_types(expected)
    missing = [c for c in e if c not in a]
    extra = [c for c in a if c not in e]
    retyped = [f"{c}: {a[c]} (expected {e[c]})" for c in e if c in a and a[c] != e[c]]
    passed = not (missing or extra or retyped)
    desc = "schema matches the definition" if passed else "; ".join(
        x for x in (f"missing {missing}" if missing else "", f"extra {extra}" if extra else "",
                    f"retyped {retyped}" if retyped else "") if x)
    return Outcome(passed, desc, {"missing": len(missing), "extra": len(extra), "retyped": len(retyped),
                                  "columns": len(a)})


def table_schema_drift(lake: Lake, kind: str, name: str, expected: dict) -> Outcome:
    """The table's columns against ``expected`` (a ``sequences/`` table also stores its row kinds)."""
    if kind == "sequences":
        expected = snapshots.stored_schema(expected)
    lf = lake.scan(kind, name)
    if lf is None:
        return Outcome(False, f"table {kind}/{name} does not exist", {"missing": len(expected), "extra": 0, "retyped": 0})
    return schema_drift(dict(lf.collect_schema()), expected)


def uniqueness(df: pl.DataFrame, key: str) -> Outcome:
    """No two rows share ``key`` (for ``events/``: the source's ``event_id_field``)."""
    dupes = df.height - df.get_column(key).n_unique() if df.height else 0
    return Outcome(dupes == 0, f"{dupes} duplicated {key} values" if dupes else f"{key} is unique",
                   {"rows": df.height, "duplicates": dupes})


def late_arrivals(lake: Lake, source: str, day: date) -> int:
    """Events of ``day`` delivered on a later day: batch deliveries by arrival day, plus the stream's count."""
    lf = lake.scan("raw", source, days=[day], columns=["arrival_date", "date"])
    batch_late = 0 if lf is None else int(lf.filter(pl.col("arrival_date") > pl.col("date")).select(pl.len()).collect().item())
    return batch_late


def completeness(compiled: Compiled, event_type: str, raw: pl.DataFrame, events: pl.DataFrame, lake: Lake | None = None,
                 day: date | None = None) -> Outcome:
    """Indexed events of a day against the raw archive of that day after the event type's filter."""
    et = compiled.event_types[event_type]
    src = compiled.sources[et["source"]]
    eid = src["event_id_field"]
    none = pl.Series(eid, [], compiled.source_schema(et["source"])[eid])
    expected = raw.filter(to_expr(et["filter"])).get_column(eid).unique() if raw.height else none
    got = events.get_column(eid).unique() if events.height else none
    missing = int((~expected.is_in(got.implode())).sum()) if len(expected) else 0
    extra = int((~got.is_in(expected.implode())).sum()) if len(got) else 0
    ratio = (len(got) - extra) / len(expected) if len(expected) else 1.0
    meta = {"expected": len(expected), "indexed": len(got), "missing": missing, "extra": extra, "completeness": ratio}
    if lake is not None and day is not None:
        meta["late_arrivals"] = late_arrivals(lake, et["source"], day)
    passed = missing == 0 and extra == 0
    desc = (f"all {len(expected)} filtered raw events are indexed" if passed
            else f"{missing} filtered raw events are not indexed, {extra} indexed events are not in raw")
    return Outcome(passed, desc, meta)


def coverage(compiled: Compiled, event_type: str, events: pl.DataFrame) -> Outcome:
    """Share of events carrying each enrichment, against the enrichment's min_coverage."""
    meta, low = {}, []
    for _, c, minimum in compiled.index_enrichment_columns(event_type):
        threshold = float(minimum or 0.0)
        share = float(events.get_column(c).is_not_null().mean()) if events.height and c in events.columns else (1.0 if not events.height else 0.0)
        meta[f"coverage_{c}"] = share
        meta[f"min_coverage_{c}"] = threshold
        if share < threshold:
            low.append(f"{c} {share:.1%} < {threshold:.0%}")
    return Outcome(not low, "coverage below threshold: " + ", ".join(low) if low else "every enrichment meets its coverage", meta)


def sequence_invariants(feature: dict, seqs: pl.DataFrame, day: date, user: str) -> Outcome:
    """In order (by the ordering column, ties by the tie-break ascending), at most N, inside the
    window, no two events of a user with the same dedup key. ``user`` names the user column; an
    ordering or dedup column the sequences do not store is not checked."""
    if seqs.is_empty():
        return Outcome(True, "no sequences", {"users": 0})
    o = feature["ordering"]
    stored = [c for c in seqs.columns if c not in (user, "date")]
    start, end = window_bounds(feature, end_of_day_ms(day))
    bad_order = outside = dup_users = 0
    if o["by"] in stored:
        newer = (lambda a, b: a > b) if o["descending"] else (lambda a, b: a < b)
        keys = [o["by"]] + ([o["tie_break"]] if o["tie_break"] in stored else [])
        flat = seqs.select(user, *[pl.col(k).alias(f"_{i}") for i, k in enumerate(keys)]).explode(
            [f"_{i}" for i in range(len(keys))]).drop_nulls("_0").with_row_index("_i")
        if seqs.get_column(user).n_unique() == seqs.height:
            # One row per user (what readers resolve): a user's events are consecutive rows of the
            # exploded frame, so the event before is the row before when it is the same user's; the
            # same result as a window over the users, without grouping.
            same = pl.col(user).eq_missing(pl.col(user).shift(1)) & (pl.col("_i") > 0)

            def before(c: str) -> pl.Expr:
                return pl.when(same).then(pl.col(c).shift(1))
        else:
            def before(c: str) -> pl.Expr:
                return pl.col(c).shift(1).over(user, order_by="_i")
        t, prev_t = pl.col("_0"), before("_0")
        bad = newer(t, prev_t)
        if len(keys) > 1:
            bad = bad | ((t == prev_t) & (pl.col("_1") <= before("_1")))
        bad_order = flat.filter(bad).height
        outside = flat.filter((t < start) | (t >= end)).height
    too_long = seqs.filter(pl.col(stored[0]).list.len() > feature["max_length"]).height if stored else 0
    dedup_key = [k for k in feature["dedup_key"] if k in stored]
    if dedup_key and len(dedup_key) == len(feature["dedup_key"]):
        pairs = seqs.select(user, *dedup_key).with_row_index("_row").explode(dedup_key)
        # A key seen twice within a row: one hash over (row, key), the same as a window per row.
        dup_users = pairs.filter(pl.struct("_row", *dedup_key).is_duplicated()).get_column("_row").n_unique()
    passed = not (bad_order or too_long or outside or dup_users)
    problems = [f"{n} {what}" for n, what in ((bad_order, "events out of order"), (too_long, "sequences longer than N"),
                                              (outside, "events outside the window"),
                                              (dup_users, "sequences with a duplicated event")) if n]
    return Outcome(passed, "; ".join(problems) if problems else "sorted, at most N, inside the window",
                   {"users": seqs.height, "out_of_order": bad_order, "too_long": too_long,
                    "outside_window": outside, "duplicated": dup_users})


def freshness(compiled: Compiled, lake: Lake, event_type: str, now_ms: int | None = None) -> Outcome:
    """Lag of the newest indexed event against now, against the source's freshness SLO."""
    et = compiled.event_types[event_type]
    slo = int(compiled.sources[et["source"]]["freshness_slo_seconds"])
    now_ms = now_ms or int(time.time() * 1000)
    ts = compiled.sources[et["source"]]["time_field"]
    lf = lake.scan("events", event_type, columns=[ts, "date"])
    if lf is None:
        return Outcome(False, f"events/{event_type} has no data", {"lag_seconds": float("inf"), "slo_seconds": slo})
    newest_day = lf.select(pl.col("date").max()).collect().item()
    newest = lf.filter(pl.col("date") == newest_day).select(pl.col(ts).max()).collect().item() if newest_day else None
    if newest is None:
        return Outcome(False, f"events/{event_type} is empty", {"lag_seconds": float("inf"), "slo_seconds": slo})
    lag = max(0.0, (now_ms - newest) / 1000)
    return Outcome(lag <= slo, f"newest event is {lag:,.0f}s old (SLO {slo}s)", {"lag_seconds": lag, "slo_seconds": slo})


def sequences_freshness(feature: dict, lake: Lake, table: str, now_ms: int) -> Outcome:
    """Whether ``sequences/<table>`` has every closed day that is due: a day's snapshot is due the
    feature's ``freshness_hours`` after the day ends, so yesterday's by 00:00 UTC plus those hours."""
    hour_ms = DAY_MS // 24
    hours = int(feature["freshness_hours"])
    due = day_of_ms(now_ms - hours * hour_ms) - timedelta(days=1)  # the newest day past its deadline
    lf = lake.scan("sequences", table, columns=["date"])
    newest = None if lf is None else lf.select(pl.col("date").max()).collect().item()
    # Hours past the deadline of the first day missing after the newest one (0 while none is late).
    missing = due if newest is None else newest + timedelta(days=1)
    late = max(0.0, (now_ms - end_of_day_ms(missing) - hours * hour_ms) / hour_ms)
    meta = {"freshness_hours": hours, "hours_late": late,
            "newest_day_age_hours": float("inf") if newest is None else (now_ms - end_of_day_ms(newest)) / hour_ms}
    if newest is None:
        return Outcome(False, f"sequences/{table} has no partition; {due} was due {hours}h after it ended", meta)
    if newest < due:
        return Outcome(False, f"newest partition {newest}; {missing} was due {hours}h after it ended, "
                              f"{late:,.1f}h ago", meta)
    return Outcome(True, f"newest partition {newest}; every day due by now ({due}, {hours}h after the day) is there", meta)
