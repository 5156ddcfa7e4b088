"""``seqctl demo-data`` and ``seqctl materialize``: land demo history and run the batch graph."""

from __future__ import annotations

import json
from datetime import date, timedelta

from seq_assets import settings
from seq_assets.cli.common import add_day_range_args, day_range, progress
from seq_assets.core.days import today_utc


def cmd_demo_data(args) -> int:
    from seq_assets.devtools.demo_data import DemoSpec, write_demo_data

    # History ends with yesterday, a closed day; today belongs to the stream (seqctl produce).
    end = date.fromisoformat(args.end_date) if args.end_date else today_utc() - timedelta(days=1)
    spec = DemoSpec(users=args.users, days=args.days, events=args.events, seed=args.seed, end_date=end)
    landing = args.landing or settings.landing_dir()
    progress(f"generating {spec.events} events for {spec.users} users over {spec.days} days into {landing}")
    summary = write_demo_data(spec, landing, progress=progress)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_materialize(args) -> int:
    """Run the batch graph for a range of days, one run per day in order, recorded in DAGSTER_HOME."""
    from seq_assets.definitions import defs
    from seq_assets.orchestration.runs import materialize_days

    ok = materialize_days(defs(), day_range(args), groups=args.groups, record=args.record, progress=progress)
    return 0 if ok else 1


def add_batch_commands(sub) -> None:
    g = sub.add_parser("demo-data", help="generate deterministic synthetic history into the landing area")
    g.add_argument("--users", type=int, default=2000)
    g.add_argument("--days", type=int, default=7)
    g.add_argument("--events", type=int, default=200_000)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--end-date", default=None, help="last event day (default: yesterday, UTC)")
    g.add_argument("--landing", default=None, help="landing folder (default: SEQ_LANDING_DIR)")
    g.set_defaults(fn=cmd_demo_data)

    m = sub.add_parser("materialize", help="run the batch assets for a range of days, oldest first")
    add_day_range_args(m, default_days=7)
    m.add_argument("--include-today", action="store_true", help="end the default range today, not yesterday")
    m.add_argument("--groups", nargs="*", help="only these asset groups (raw, enrichments, events, sequences)")
    m.add_argument("--record", action="store_true", help="record the runs in DAGSTER_HOME so the UI shows them")
    m.set_defaults(fn=cmd_materialize)
