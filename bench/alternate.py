"""Alternate one bench/batch.py phase between code trees on the same data, wall and CPU per run.

    git archive <commit> | tar -x -C /tmp/before          # the code to compare against
    .venv/bin/python bench/alternate.py pipeline --rounds 3 \\
        --tree before=/tmp/before:/tmp/cost2m-b --tree now=.:/tmp/cost2m-s

Each ``--tree NAME=ROOT:WORKDIR`` runs ``ROOT/bench/batch.py --reuse --phase PHASE`` on the bench
lake in WORKDIR (give each tree its own copy of the lake: a phase writes into it). ``pipeline``
removes events/ and sequences/ first, so every run starts as the bench's own pipeline phase does,
and each round starts with the bare copy (the baseline of raw -> events -> sequences). Printed per
run: the phase's own seconds, the CPU seconds of its process (user + system, from the child's
rusage) and the load average. The machine is shared: compare runs of one round, alternated.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys


def run(root: str, workdir: str, phase: str, argv: list[str]) -> tuple[dict, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, os.path.join(root, "bench", "batch.py"), *argv, "--workdir", workdir,
                           "--reuse", "--phase", phase], check=False, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"phase {phase} failed in {root}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(proc.stdout.strip().splitlines()[-1]), cpu


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["pipeline", "backfill", "copy"])
    p.add_argument("--tree", action="append", required=True, help="NAME=ROOT:WORKDIR")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--events", default="2000000")
    p.add_argument("--users", default="40000")
    a = p.parse_args()
    trees = [(t.split("=", 1)[0], *t.split("=", 1)[1].split(":", 1)) for t in a.tree]
    argv = ["--events", a.events, "--users", a.users]
    for r in range(a.rounds):
        plan = [(name, root, work, a.phase) for name, root, work in trees]
        if a.phase == "pipeline":
            plan.insert(0, (trees[0][0], trees[0][1], trees[0][2], "copy"))
        for name, root, work, phase in plan:
            if phase == "pipeline":
                for kind in ("events", "sequences"):
                    shutil.rmtree(os.path.join(work, "lake", kind), ignore_errors=True)
            res, cpu = run(root, work, phase, argv)
            load = os.getloadavg()[0]
            extra = ""
            if phase == "pipeline":
                extra = f"; events {res['timings']['events']:.2f} s, sequences {res['timings']['sequences']:.2f} s"
            elif phase == "backfill":
                extra = "; " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(res["steps"].items(), key=lambda kv: -kv[1]))
            label = "copy" if phase == "copy" else name
            print(f"round {r} {label:>8} {phase:>8}: wall {res['seconds']:6.2f} s, cpu {cpu:6.2f} s, load {load:.2f}{extra}",
                  flush=True)


if __name__ == "__main__":
    main()
