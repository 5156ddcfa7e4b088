"""``seqctl sql``, ``show``, ``report`` and ``compare``: offline analysis from the terminal.

    seqctl sql "SELECT date, count(*) FROM events.pin_click GROUP BY ALL ORDER BY 1"
    seqctl sql --format csv --out clicks.csv "SELECT * FROM events.pin_click WHERE date = '2026-03-02'"
    seqctl show engagements_v1 42 --as-of 2026-03-02T18:00:00Z
    seqctl report --date 2026-03-02 --out report.html
    seqctl compare engagements_v1 engagements_v2
"""

from __future__ import annotations

import json
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

from seq_assets import settings
from seq_assets.cli.common import add_day_range_args, day_range


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
    from seq_assets.storage.sql import IOStats, connect, query, views, write_result

    lake = settings.lake(args.lake)
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


def cmd_show(args) -> int:
    from seq_assets.analysis.timeline import timeline

    lake = settings.lake(args.lake)
    enrich = None
    if args.enrichments is not None:
        enrich = [x.strip() for x in args.enrichments.split(",") if x.strip()]
    try:
        text = timeline(args.feature, args.user_id, _parse_as_of(args.as_of), enrich, limit=args.limit, lake=lake,
                        compiled=settings.load_compiled())
    except (KeyError, ValueError, LookupError) as e:
        print(f"seqctl show: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    print(text)
    return 0


# ---- seqctl report -------------------------------------------------------------------------------


def cmd_report(args) -> int:
    from seq_assets.analysis.report import write_report

    lake = settings.lake(args.lake)
    t = time.perf_counter()
    out = write_report(date.fromisoformat(args.date), args.out, lake=lake, compiled=settings.load_compiled())
    _progress(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f}s")
    return 0


# ---- seqctl compare ------------------------------------------------------------------------------


def cmd_compare(args) -> int:
    from seq_assets.analysis.compare import compare, format_report

    days = day_range(args) if (args.start or args.end) else None
    reports = compare(settings.lake(), args.baseline, args.candidate, days, compiled=settings.load_compiled())
    print(format_report(args.baseline, args.candidate, reports))
    if args.json:
        Path(args.json).write_text(json.dumps([{"day": r.day.isoformat(), **r.metadata()} for r in reports], indent=2))
    return 0


# ---- registration --------------------------------------------------------------------------------


def add_analysis_commands(sub) -> None:
    """Register ``sql``, ``show``, ``report`` and ``compare`` on seqctl's subcommands."""
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
    q.set_defaults(fn=cmd_sql)

    s = sub.add_parser("show", help="a user's sequence as a timeline in the terminal, newest first")
    s.add_argument("feature", help="feature table or name, e.g. engagements_v1")
    s.add_argument("user_id", help="the user's id, read as the feature's user type (int64 or string)")
    s.add_argument("--as-of", help="YYYY-MM-DD: the sequence at the end of that day; an ISO time: the sequence "
                                   "just before it (point in time). Default: the latest partition")
    s.add_argument("--enrichments", "--fields", dest="enrichments",
                   help="comma-separated stored fields to show beside the time and event type, item and surface "
                        "(or, for a feature without those, its first fields; default: the feature's scalar enrichments)")
    s.add_argument("--limit", type=int, default=50, help="events shown (default 50)")
    s.set_defaults(fn=cmd_show)

    r = sub.add_parser("report", help="a self-contained HTML report of one day with plots")
    r.add_argument("--date", required=True, help="the day, YYYY-MM-DD")
    r.add_argument("--out", default="report.html", help="output HTML file (default report.html)")
    r.set_defaults(fn=cmd_report)
    for p in (q, s, r):  # every reading command can be pointed at another lake
        p.add_argument("--lake", help="lake root (default: SEQ_LAKE_URI)")

    cmp_ = sub.add_parser("compare", help="shadow comparison of two sequence tables (feature versions or a Delta path)")
    cmp_.add_argument("baseline", help="e.g. engagements_v1, or the path of an external sequence table")
    cmp_.add_argument("candidate", help="e.g. engagements_v2")
    add_day_range_args(cmp_, default_days=None)
    cmp_.add_argument("--json", help="also write the figures as JSON to this file")
    cmp_.set_defaults(fn=cmd_compare)
