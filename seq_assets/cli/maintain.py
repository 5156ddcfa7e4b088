"""``seqctl maintain``: the ``maintain_lake`` job's work from the shell, with its figures per table."""

from __future__ import annotations

import json
import time
from datetime import date

from seq_assets import settings
from seq_assets.core.days import today_utc


def cmd_maintain(args) -> int:
    from seq_assets.storage import maintenance
    from seq_assets.storage.sql import format_table

    lake = settings.lake()
    compiled = settings.load_compiled()
    specs = maintenance.select_tables(maintenance.lake_tables(compiled, lake), args.table)
    today = date.fromisoformat(args.today) if args.today else today_utc()
    reports = maintenance.maintain_lake(lake, specs, scope=args.scope, today=today, now_ms=int(time.time() * 1000),
                                        retention_hours=settings.vacuum_retention_hours(),
                                        horizon_days=compiled.horizon_days(), dry_run=args.dry_run,
                                        log_retention_hours=settings.log_retention_hours())
    if args.json:
        print(json.dumps([{"table": r.table, "dry_run": r.dry_run, **r.figures(), "settling_days": r.settling}
                          for r in reports], indent=2))
        return 0
    what = "would do (dry run, nothing changed)" if args.dry_run else "did"
    print(f"maintenance ({args.scope}) {what}, today {today}, vacuum retention {settings.vacuum_retention_hours()}h, "
          f"log retention {settings.log_retention_hours()}h:")
    print(format_table(maintenance.report_frame(reports), max_rows=max(1, len(reports))))
    for r in reports:
        if r.settling:
            print(f"{r.table}: left {', '.join(r.settling)} alone while a partition replace settles")
    return 0


def add_maintain_command(sub) -> None:
    m = sub.add_parser("maintain", help="compact, apply retention, vacuum and checkpoint the lake's tables")
    m.add_argument("--table", action="append", metavar="KIND/NAME",
                   help="only this table (repeatable; default: every table)")
    m.add_argument("--scope", choices=("today", "full"), default="full",
                   help="today: compact the streamed days still written into (today and the late horizon); "
                        "full (default): everything")
    m.add_argument("--today", default=None, help="the day retention counts back from (default: today, UTC)")
    m.add_argument("--dry-run", action="store_true", help="print what would happen, change nothing")
    m.add_argument("--json", action="store_true", help="the figures as JSON")
    m.set_defaults(fn=cmd_maintain)
