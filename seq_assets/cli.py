"""``seqctl``: the command line for definitions, demo data, batch runs, the broker and serving."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path

DEFAULT_LOCK = Path(__file__).resolve().parent.parent / "signal_defs" / "versions.lock.json"


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- defs ------------------------------------------------------------------------------------


def cmd_defs_validate(args) -> int:
    from signal_defs import REGISTRY
    from signal_defs.validate import validate

    validate(REGISTRY)
    kinds: dict[str, int] = {}
    for d in REGISTRY.definitions:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    print("definitions are valid: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    return 0


def cmd_defs_compile(args) -> int:
    from signal_defs import REGISTRY
    from signal_defs.compile import check_version_lock, compile_registry, updated_lock, write_compiled

    compiled = compile_registry(REGISTRY)
    lock_path = Path(args.lock)
    lock = json.loads(lock_path.read_text()) if lock_path.exists() else {}
    problems = check_version_lock(compiled, lock)
    if problems:
        for p in problems:
            print(f"refused: {p}", file=sys.stderr)
        return 2
    out = write_compiled(compiled, args.out)
    new_lock = updated_lock(compiled, lock)
    if new_lock != lock and not args.no_lock_update:
        lock_path.write_text(json.dumps(new_lock, indent=2) + "\n")
        print(f"recorded new production versions in {lock_path}")
    print(f"compiled {len(compiled)} definitions into {out}")
    return 0


def cmd_defs_diff(args) -> int:
    from signal_defs.compile import diff_compiled, read_compiled

    lines = diff_compiled(read_compiled(args.old), read_compiled(args.new))
    print("\n".join(lines) if lines else "no changes")
    return 0


# ---- data ------------------------------------------------------------------------------------


def cmd_demo_data(args) -> int:
    from seq_assets import config
    from seq_assets.demo_data import DemoSpec, write_demo_data

    # History ends with yesterday, a closed day; today belongs to the stream (seqctl produce).
    end = date.fromisoformat(args.end_date) if args.end_date else config.today_utc() - timedelta(days=1)
    spec = DemoSpec(users=args.users, days=args.days, events=args.events, seed=args.seed, end_date=end)
    landing = args.landing or config.landing_dir()
    _progress(f"generating {spec.events} events for {spec.users} users over {spec.days} days into {landing}")
    summary = write_demo_data(spec, landing, progress=_progress)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _days(args) -> list[date]:
    from seq_assets.config import today_utc

    if args.start or args.end:
        start = date.fromisoformat(args.start or args.end)
        end = date.fromisoformat(args.end or args.start)
    else:
        end = today_utc() - timedelta(days=0 if args.include_today else 1)
        start = end - timedelta(days=args.days - 1)
    if end < start:
        raise SystemExit(f"--end {end} is before --start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def cmd_materialize(args) -> int:
    """Run the batch graph for a range of days, one run per day in order, recorded in DAGSTER_HOME."""
    import dagster as dg

    from seq_assets.definitions import defs as lazy_defs

    defs = lazy_defs()
    selection = dg.AssetSelection.groups(*args.groups) if args.groups else None
    instance = dg.DagsterInstance.get() if args.record else dg.DagsterInstance.ephemeral()
    days = _days(args)
    t0 = time.time()
    for i, day in enumerate(days, 1):
        t = time.time()
        result = dg.materialize(list(defs.assets), selection=selection, partition_key=day.isoformat(),
                                instance=instance, resources=defs.resources, raise_on_error=False)
        if not result.success:
            _progress(f"day {day} failed")
            return 1
        _progress(f"[{i}/{len(days)}] {day} materialized in {time.time() - t:.1f}s")
    _progress(f"{len(days)} day(s) in {time.time() - t0:.1f}s")
    return 0


def cmd_compare(args) -> int:
    from seq_assets.compare import compare, format_report
    from seq_assets.lake import Lake

    days = _days(args) if (args.start or args.end) else None
    reports = compare(Lake(), args.baseline, args.candidate, days)
    print(format_report(args.baseline, args.candidate, reports))
    if args.json:
        Path(args.json).write_text(json.dumps([{"day": r.day.isoformat(), **r.metadata()} for r in reports], indent=2))
    return 0


# ---- entry -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqctl", description="User-sequence platform command line.")
    sub = p.add_subparsers(dest="command", required=True)

    defs = sub.add_parser("defs", help="validate, compile and diff sequence definitions")
    dsub = defs.add_subparsers(dest="defs_command", required=True)
    dsub.add_parser("validate", help="check every definition; exit 2 naming each bad field").set_defaults(fn=cmd_defs_validate)
    c = dsub.add_parser("compile", help="compile definitions to portable JSON")
    c.add_argument("--out", required=True, help="output folder (one JSON file per definition plus index.json)")
    c.add_argument("--lock", default=str(DEFAULT_LOCK), help="production version lock file")
    c.add_argument("--no-lock-update", action="store_true", help="check against the lock but do not add to it")
    c.set_defaults(fn=cmd_defs_compile)
    d = dsub.add_parser("diff", help="readable diff of two compiled folders")
    d.add_argument("old")
    d.add_argument("new")
    d.set_defaults(fn=cmd_defs_diff)

    g = sub.add_parser("demo-data", help="generate deterministic synthetic history into the landing area")
    g.add_argument("--users", type=int, default=2000)
    g.add_argument("--days", type=int, default=7)
    g.add_argument("--events", type=int, default=200_000)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--end-date", default=None, help="last event day (default: yesterday, UTC)")
    g.add_argument("--landing", default=None, help="landing folder (default: SEQ_LANDING_DIR)")
    g.set_defaults(fn=cmd_demo_data)

    m = sub.add_parser("materialize", help="run the batch assets for a range of days, oldest first")
    m.add_argument("--start", help="first day YYYY-MM-DD")
    m.add_argument("--end", help="last day YYYY-MM-DD")
    m.add_argument("--days", type=int, default=7, help="without --start/--end: this many days ending yesterday")
    m.add_argument("--include-today", action="store_true", help="end the default range today, not yesterday")
    m.add_argument("--groups", nargs="*", help="only these asset groups (raw, enrichments, events, sequences)")
    m.add_argument("--record", action="store_true", help="record the runs in DAGSTER_HOME so the UI shows them")
    m.set_defaults(fn=cmd_materialize)

    cmp_ = sub.add_parser("compare", help="shadow comparison of two sequence tables (feature versions or a Delta path)")
    cmp_.add_argument("baseline", help="e.g. engagements_v1, or the path of an external sequence table")
    cmp_.add_argument("candidate", help="e.g. engagements_v2")
    cmp_.add_argument("--start", help="first day (default: every day both tables have)")
    cmp_.add_argument("--end", help="last day")
    cmp_.add_argument("--json", help="also write the figures as JSON to this file")
    cmp_.set_defaults(fn=cmd_compare, days=1, include_today=False)

    _add_runtime_commands(sub)
    return p


def _add_runtime_commands(sub) -> None:
    """Commands of the streaming and serving runtimes: broker, produce, serve."""
    from seq_assets.broker import add_broker_commands
    from seq_assets.serving.app import add_serve_command

    add_broker_commands(sub)  # seqctl broker, seqctl produce
    add_serve_command(sub)
    from seq_assets.analysis_cli import add_analysis_commands

    add_analysis_commands(sub)  # seqctl sql, seqctl show, seqctl report


def main(argv: list[str] | None = None) -> int:
    from signal_defs.validate import DefinitionError, DefinitionErrors

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except (DefinitionErrors, DefinitionError) as e:
        print(str(e), file=sys.stderr)
        return 2
    except (ValueError, KeyError, FileNotFoundError) as e:
        # A bad argument (unknown table, day, path): one line, not a traceback.
        print(f"seqctl {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
