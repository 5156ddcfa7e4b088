"""``seqctl defs validate|compile|diff|new``: check, compile, compare and start definitions.

They work on the definitions of ``SEQ_DEFS_MODULE`` (a module of your own whose ``REGISTRY`` holds
them, its version lock ``versions.lock.json`` beside it), or on the shipped demo when it is unset.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from seq_assets import settings
from seq_assets.core import executors  # noqa: F401  (validation knows the registered executors)


def cmd_defs_validate(args) -> int:
    from signal_defs.validate import validate

    registry = settings.registry()
    validate(registry)
    kinds: dict[str, int] = {}
    for d in registry.definitions:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    print("definitions are valid: " + ", ".join(f"{n} {k}" for k, n in kinds.items()))
    return 0


def cmd_defs_compile(args) -> int:
    from signal_defs.compile import (
        check_version_lock,
        compile_registry,
        updated_lock,
        write_compiled,
    )

    compiled = compile_registry(settings.registry())
    lock_path = Path(args.lock) if args.lock else settings.defs_lock()
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
    from signal_defs.compile import compile_registry, diff_compiled, read_compiled

    new = read_compiled(args.new) if args.new else compile_registry(settings.registry())
    lines = diff_compiled(read_compiled(args.old), json.loads(json.dumps(new)))
    print("\n".join(lines) if lines else "no changes")
    return 0


def cmd_defs_new(args) -> int:
    from signal_defs import templates

    print(templates.template(args.kind, args.name), end="")
    return 0


def add_defs_commands(sub) -> None:
    defs = sub.add_parser("defs", help="validate, compile, diff and start sequence definitions "
                                       "(SEQ_DEFS_MODULE's REGISTRY, or the demo)")
    dsub = defs.add_subparsers(dest="defs_command", required=True)
    dsub.add_parser("validate", help="check every definition; exit 2 naming each bad field").set_defaults(fn=cmd_defs_validate)
    c = dsub.add_parser("compile", help="compile definitions to portable JSON")
    c.add_argument("--out", required=True, help="output folder (one JSON file per definition plus index.json)")
    c.add_argument("--lock", help="production version lock file (default: versions.lock.json beside the "
                                  "SEQ_DEFS_MODULE file, or signal_defs/versions.lock.json for the demo)")
    c.add_argument("--no-lock-update", action="store_true", help="check against the lock but do not add to it")
    c.set_defaults(fn=cmd_defs_compile)
    d = dsub.add_parser("diff", help="readable diff of two compiled folders")
    d.add_argument("old")
    d.add_argument("new", nargs="?", help="a compiled folder (default: the current definitions, compiled in memory)")
    d.set_defaults(fn=cmd_defs_diff)
    n = dsub.add_parser("new", help="print a definition to fill in, every parameter commented")
    n.add_argument("kind", choices=("source", "event-type", "feature"))
    n.add_argument("name", help="lower_snake_case name of the new definition")
    n.set_defaults(fn=cmd_defs_new)
