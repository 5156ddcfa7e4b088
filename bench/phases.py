"""Running a benchmark phase in its own process, so its peak memory and imports are its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_phase(script: str, name: str, argv: list[str] | None = None) -> dict:
    """Run ``script --phase name <argv>``; the phase prints one JSON line last, which is returned."""
    cmd = [sys.executable, script, "--phase", name, *(sys.argv[1:] if argv is None else argv)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"phase {name} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def add_lake_args(p) -> None:
    """The bench lake's shape (10M events, 200k users, 7 days by default) and where it lives."""
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--end-date", default="2026-03-07")
    p.add_argument("--workdir", default="/tmp/seqbench")
    p.add_argument("--reuse", action="store_true", help="use the data a previous run left in --workdir")


def use_workdir(a) -> None:
    """Point the platform at the bench lake and landing folder under --workdir."""
    os.environ["SEQ_LANDING_DIR"] = f"{a.workdir}/landing"
    os.environ["SEQ_LAKE_URI"] = f"{a.workdir}/lake"
