"""What every ``seqctl`` command group shares: progress lines and the day-range arguments."""

from __future__ import annotations

import sys
import time
from datetime import date, timedelta

from seq_assets.core.days import today_utc


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def add_day_range_args(p, default_days: int | None) -> None:
    p.add_argument("--start", help="first day YYYY-MM-DD")
    p.add_argument("--end", help="last day YYYY-MM-DD")
    if default_days is not None:
        p.add_argument("--days", type=int, default=default_days,
                       help="without --start/--end: this many days ending yesterday")


def day_range(args) -> list[date]:
    """The days ``--start``/``--end`` name, or ``--days`` days ending yesterday (today with ``--include-today``)."""
    if args.start or args.end:
        start = date.fromisoformat(args.start or args.end)
        end = date.fromisoformat(args.end or args.start)
    else:
        end = today_utc() - timedelta(days=0 if getattr(args, "include_today", False) else 1)
        start = end - timedelta(days=args.days - 1)
    if end < start:
        raise SystemExit(f"--end {end} is before --start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]
