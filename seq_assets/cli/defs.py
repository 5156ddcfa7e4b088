"""``seqctl defs validate|compile|diff``: check, compile and compare the definitions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from seq_assets.core import executors  # noqa: F401  (validation knows the registered executors)

DEFAULT_LOCK = Path(__file__).resolve().parents[2] / "signal_defs" / "versions.lock.json"


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
    from signal_defs.compile import (
        check_version_lock,
        compile_registry,
        updated_lock,
        write_compiled,
    )

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


def add_defs_commands(sub) -> None:
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
