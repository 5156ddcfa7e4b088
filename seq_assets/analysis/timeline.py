"""A user's sequence as a readable timeline, newest first (what ``seqctl show`` prints)."""

from __future__ import annotations

from datetime import date, datetime, timezone

import polars as pl

from seq_assets.core.compiled import Compiled
from seq_assets.storage.lake import Lake, add_actions
from seq_assets.training import point_in_time_sequences, read_sequences


def latest_day(lake, table: str) -> date | None:
    """The newest ``date`` partition of ``sequences/<table>``."""
    t = lake.table("sequences", table)
    if t is None:
        return None
    adds = add_actions(t)
    if adds.is_empty() or "partition.date" not in adds.columns:
        return None
    return adds.get_column("partition.date").cast(pl.Date).max()


def enrichment_fields(compiled, f: dict) -> list[str]:
    """The stored fields of a feature that come from enrichments."""
    cols = {c for et in f["event_types"] for _, c, _ in compiled.index_enrichment_columns(et)}
    return [x for x in compiled.stored_fields(f) if x in cols]


def _fmt_gap(ms: int | None) -> str:
    if ms is None:
        return ""
    s = ms / 1000
    if s < 60:
        return f"+{s:.0f}s"
    if s < 3600:
        return f"+{s / 60:.0f}m"
    if s < 86400:
        return f"+{s / 3600:.1f}h"
    return f"+{s / 86400:.1f}d"


def _fmt_value(v) -> str:
    if v is None:
        return "·"
    if isinstance(v, (list, tuple)) or hasattr(v, "to_list"):
        vals = list(v.to_list() if hasattr(v, "to_list") else v)
        head = ", ".join(f"{x:.3f}" if isinstance(x, float) else str(x) for x in vals[:3])
        return f"[{head}{', …' if len(vals) > 3 else ''}] ({len(vals)})"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# The demo's columns shown beside the time when a feature stores them; otherwise its first fields.
BASE_COLUMNS = ("event_type", "item_id", "surface")


def parse_user(compiled: Compiled, f: dict, user_id: int | str) -> int | str:
    """A user id (text from the command line, or a value) as the feature's user type."""
    table = f"{f['name']}_v{f['version']}"
    if compiled.user_type(f) == pl.String:
        if isinstance(user_id, str):
            return user_id
        raise ValueError(f"user id must be a string for feature {table}, got {user_id!r}")
    try:
        if isinstance(user_id, bool) or not isinstance(user_id, (int, str)):
            raise ValueError
        return int(user_id)
    except ValueError:
        raise ValueError(f"user id must be an int64 for feature {table}, got {user_id!r}") from None


def base_columns(compiled: Compiled, f: dict, shown: list[str], count: int = len(BASE_COLUMNS)) -> list[str]:
    """The columns shown beside the time: those of :data:`BASE_COLUMNS` the feature stores, else
    its first ``count`` stored scalar fields other than the time and ``shown``."""
    stored = compiled.stored_fields(f)
    base = [c for c in BASE_COLUMNS if c in stored]
    if base:
        return base
    schema = compiled.sequence_schema(f)
    rest = [c for c in stored if c != f["ordering"]["by"] and c not in shown
            and not isinstance(schema[c].inner, pl.List)]
    return rest[:count]


def timeline(feature: str, user_id: int | str, as_of=None, enrichments: list[str] | None = None, limit: int = 50,
             *, lake: Lake, compiled: Compiled) -> str:
    """The user's sequence as a readable timeline, newest first (the text ``seqctl show`` prints)."""
    f = compiled.feature(feature)
    table = f"{f['name']}_v{f['version']}"
    user_id = parse_user(compiled, f, user_id)
    stored = compiled.stored_fields(f)
    enrich = enrichments if enrichments is not None else [
        c for c in enrichment_fields(compiled, f) if not isinstance(compiled.sequence_schema(f)[c].inner, pl.List)]
    unknown = [c for c in enrich if c not in stored]
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} of {table}; stored fields: {', '.join(stored)}")
    ts_col, base = f["ordering"]["by"], base_columns(compiled, f, enrich)
    fields = list(dict.fromkeys([ts_col, *base, *enrich]))

    if as_of is None:
        as_of = latest_day(lake, table)
        if as_of is None:
            raise LookupError(f"sequences/{table} has no partitions yet")
    if isinstance(as_of, datetime):
        user = compiled.user_field(f)
        labels = pl.DataFrame({user: [user_id], "request_ts": [int(as_of.timestamp() * 1000)]},
                              schema={user: compiled.user_type(f), "request_ts": pl.Int64})
        seqs = point_in_time_sequences(table, labels, fields=fields, lake=lake, compiled=compiled)
        when = f"just before {as_of.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M:%S')} UTC"
    else:
        seqs = read_sequences(table, as_of, users=[user_id], fields=fields, lake=lake, compiled=compiled)
        when = f"at the end of {as_of.isoformat()} (UTC)"
    row = seqs.row(0, named=True) if seqs.height else None
    n = len(row[ts_col]) if row else 0
    head = (f"{table} · user {user_id} · {when} · {n} event{'s' if n != 1 else ''} "
            f"(last {f['max_length']} within {f['window_days']} days), newest first")
    if not n:
        return head + "\n(no events)"

    ts = row[ts_col]
    cols = ["time (UTC)", "gap", *base, *enrich]
    rows = []
    shown = min(n, limit)
    for i in range(shown):
        t = datetime.fromtimestamp(ts[i] / 1000, tz=timezone.utc)
        gap = ts[i] - ts[i + 1] if i + 1 < n else None
        rows.append([t.strftime("%Y-%m-%d %H:%M:%S"), _fmt_gap(gap),
                     *[_fmt_value(row[c][i]) for c in cols[2:]]])
    widths = [max(len(c), *(len(r[j]) for r in rows)) for j, c in enumerate(cols)]
    lines = [head, "", "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip(),
             "  ".join("─" * w for w in widths)]
    day = None
    for r in rows:
        if r[0][:10] != day and day is not None:
            lines.append(f"{'·' * 3} {r[0][:10]}")
        day = r[0][:10]
        lines.append("  ".join(v.rjust(w) if j == 1 else v.ljust(w) for j, (v, w) in enumerate(zip(r, widths))).rstrip())
    if n > shown:
        lines.append(f"… {n - shown} older event{'s' if n - shown != 1 else ''} not shown (--limit)")
    return "\n".join(lines)
