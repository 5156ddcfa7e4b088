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
