"""``seqctl sql``, ``seqctl show`` and ``seqctl report``: offline analysis from the terminal.

    seqctl sql "SELECT date, count(*) FROM events.pin_click GROUP BY ALL ORDER BY 1"
    seqctl sql --format csv --out clicks.csv "SELECT * FROM events.pin_click WHERE date = '2026-03-02'"
    seqctl show engagements_v1 42 --as-of 2026-03-02T18:00:00Z
    seqctl report --date 2026-03-02 --out report.html
"""

from __future__ import annotations

import sys
import time
from datetime import date, datetime, timezone


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,} B" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


# ---- seqctl sql ----------------------------------------------------------------------------------


def cmd_sql(args) -> int:
    from seq_assets.lake import Lake
    from seq_assets.sql import IOStats, connect, query, views, write_result

    lake = Lake(args.lake) if args.lake else Lake()
    stats = IOStats() if args.stats else None
    conn = connect(lake, io_stats=stats)
    try:
        if args.tables:
            for v in views(conn):
                print(v)
            return 0
        text = args.query
        if text is None or text == "-":
            text = "" if text is None and sys.stdin.isatty() else sys.stdin.read()
        if not text.strip():
            print("seqctl sql: no query given", file=sys.stderr)
            return 2
        t = time.perf_counter()
        try:
            df = query(text, conn=conn)
        except Exception as e:  # noqa: BLE001 - a bad query is the user's, show it plainly
            if type(e).__module__.split(".")[0] in ("duckdb", "_duckdb"):
                print(f"seqctl sql: {e}", file=sys.stderr)
                if "does not exist" in str(e):
                    print("lake views: " + ", ".join(views(conn)), file=sys.stderr)
                return 1
            raise
        seconds = time.perf_counter() - t
    finally:
        conn.close()
    try:
        out = write_result(df, args.format, args.out, max_rows=args.max_rows)
    except ValueError as e:
        print(f"seqctl sql: {e}", file=sys.stderr)
        return 2
    if out is not None:
        sys.stdout.write(out)
        sys.stdout.flush()
    elif args.out:
        _progress(f"wrote {df.height} row(s) to {args.out} ({args.format})")
    if stats is not None:
        _progress(f"{seconds:.3f}s; read {_human_bytes(stats.bytes_read)} from {len(stats.files)} file(s)")
    return 0


# ---- seqctl show ---------------------------------------------------------------------------------


def _parse_as_of(text: str | None):
    """None, a date (end of that day: the day's partition) or an aware datetime (point in time)."""
    if not text:
        return None
    t = text.strip()
    if len(t) == 10:
        return date.fromisoformat(t)
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    dt = datetime.fromisoformat(t)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def latest_day(lake, table: str) -> date | None:
    """The newest ``date`` partition of ``sequences/<table>``."""
    import polars as pl

    from seq_assets.lake import add_actions

    t = lake.table("sequences", table)
    if t is None:
        return None
    adds = add_actions(t)
    if adds.is_empty() or "partition.date" not in adds.columns:
        return None
    return adds.get_column("partition.date").cast(pl.Date).max()


def enrichment_fields(compiled, f: dict) -> list[str]:
    """The stored fields of a feature that come from enrichments."""
    from seq_assets.analysis_queries import enrichment_columns

    cols = {c for et in f["event_types"] for _, c, _ in enrichment_columns(compiled, et)}
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


def timeline(feature: str, user_id: int, as_of=None, enrichments: list[str] | None = None, limit: int = 50,
             lake=None, compiled=None) -> str:
    """The user's sequence as a readable timeline, newest first (the text ``seqctl show`` prints)."""
    import polars as pl

    from seq_assets.compiled import load_compiled
    from seq_assets.lake import Lake
    from seq_assets.training import point_in_time_sequences, read_sequences

    compiled = compiled or load_compiled()
    lake = lake or Lake()
    f = compiled.feature(feature)
    table = f"{f['name']}_v{f['version']}"
    stored = compiled.stored_fields(f)
    enrich = enrichments if enrichments is not None else [
        c for c in enrichment_fields(compiled, f) if not isinstance(compiled.sequence_schema(f)[c].inner, pl.List)]
    unknown = [c for c in enrich if c not in stored]
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} of {table}; stored fields: {', '.join(stored)}")
    ts_col, base = f["ordering"]["by"], ["event_type", "item_id", "surface"]
    fields = list(dict.fromkeys([ts_col, *[c for c in base if c in stored], *enrich]))

    if as_of is None:
        as_of = latest_day(lake, table)
        if as_of is None:
            raise LookupError(f"sequences/{table} has no partitions yet")
    if isinstance(as_of, datetime):
        labels = pl.DataFrame({"user_id": [int(user_id)],
                               "request_ts": [int(as_of.timestamp() * 1000)]})
        seqs = point_in_time_sequences(table, labels, fields=fields, lake=lake, compiled=compiled)
        when = f"just before {as_of.astimezone(timezone.utc).strftime('%Y-%m-%d %H:%M:%S')} UTC"
    else:
        seqs = read_sequences(table, as_of, users=[int(user_id)], fields=fields, lake=lake, compiled=compiled)
        when = f"at the end of {as_of.isoformat()} (UTC)"
    row = seqs.row(0, named=True) if seqs.height else None
    n = len(row[ts_col]) if row else 0
    head = (f"{table} · user {user_id} · {when} · {n} event{'s' if n != 1 else ''} "
            f"(last {f['max_length']} within {f['window_days']} days), newest first")
    if not n:
        return head + "\n(no events)"

    ts = row[ts_col]
    cols = ["time (UTC)", "gap", *[c for c in base if c in stored], *enrich]
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


def cmd_show(args) -> int:
    from seq_assets.lake import Lake

    lake = Lake(args.lake) if args.lake else Lake()
    enrich = None
    if args.enrichments is not None:
        enrich = [x.strip() for x in args.enrichments.split(",") if x.strip()]
    try:
        text = timeline(args.feature, args.user_id, _parse_as_of(args.as_of), enrich, limit=args.limit, lake=lake)
    except (KeyError, ValueError, LookupError) as e:
        print(f"seqctl show: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    print(text)
    return 0


# ---- seqctl report -------------------------------------------------------------------------------


def cmd_report(args) -> int:
    from seq_assets.lake import Lake
    from seq_assets.report import write_report

    lake = Lake(args.lake) if args.lake else Lake()
    t = time.perf_counter()
    out = write_report(date.fromisoformat(args.date), args.out, lake=lake)
    _progress(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f}s")
    return 0


# ---- registration --------------------------------------------------------------------------------


def add_analysis_commands(sub) -> None:
    """Register ``sql``, ``show`` and ``report`` on seqctl's subcommands."""
    q = sub.add_parser("sql", help="SQL over every lake table with DuckDB (views like events.pin_click)",
                       description="Run a DuckDB SQL query over the lake. Every Delta table <kind>/<name> is the "
                                   "view <kind>.<name>: raw.user_engagements, events.pin_click, "
                                   "sequences.engagements_v1, ... Filters on date prune partitions.")
    q.add_argument("query", nargs="?", help="the SQL text ('-' or nothing: read it from standard input)")
    q.add_argument("--format", choices=("table", "csv", "json", "parquet"), default="table")
    q.add_argument("--out", help="write the result to this file (required for parquet)")
    q.add_argument("--max-rows", type=int, default=50, help="rows shown by --format table (default 50)")
    q.add_argument("--stats", action="store_true", help="print time, files opened and bytes read to stderr")
    q.add_argument("--tables", action="store_true", help="list the lake views and exit")
    q.add_argument("--lake", help="lake root (default: SEQ_LAKE_URI)")
    q.set_defaults(fn=cmd_sql)

    s = sub.add_parser("show", help="a user's sequence as a timeline in the terminal, newest first")
    s.add_argument("feature", help="feature table or name, e.g. engagements_v1")
    s.add_argument("user_id", type=int)
    s.add_argument("--as-of", help="YYYY-MM-DD: the sequence at the end of that day; an ISO time: the sequence "
                                   "just before it (point in time). Default: the latest partition")
    s.add_argument("--enrichments", "--fields", dest="enrichments",
                   help="comma-separated stored fields to show beside time, event type, item and surface "
                        "(default: the feature's scalar enrichments)")
    s.add_argument("--limit", type=int, default=50, help="events shown (default 50)")
    s.add_argument("--lake", help="lake root (default: SEQ_LAKE_URI)")
    s.set_defaults(fn=cmd_show)

    r = sub.add_parser("report", help="a self-contained HTML report of one day with plots")
    r.add_argument("--date", required=True, help="the day, YYYY-MM-DD")
    r.add_argument("--out", default="report.html", help="output HTML file (default report.html)")
    r.add_argument("--lake", help="lake root (default: SEQ_LAKE_URI)")
    r.set_defaults(fn=cmd_report)
