"""scripts/supervise.sh, the start and stop logic of `make dev` (scripts/dev.sh), with stand-in children.

A driver script sources it as dev.sh does, starts children the way dev.sh starts the broker, the
producer, the API and `dagster dev` (one ignores SIGTERM, one has a child of its own, one is a
foreground step), and is sent SIGTERM or SIGINT: it exits within 5 s and every process of its
children's groups is gone, also when the driver itself was started with SIGINT ignored; without
a child that ignores SIGTERM it takes well under the grace period. Children start with SIGINT at
its default whatever the driver had.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.signals import dispositions

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)
STOP_BOUND_S = 5.0

DRIVER = r"""
set -euo pipefail
SUPERVISE_PYTHON="$1"
OUT="$2"
. scripts/supervise.sh
supervise
spawn "$OUT/plain.log" sleep 300
echo "$SPAWNED" >> "$OUT/pids"
if [ "$4" = deaf ]; then
  spawn "$OUT/deaf.log" bash -c 'trap "" TERM; sleep 300 & wait'
  echo "$SPAWNED" >> "$OUT/pids"
fi
spawn "$OUT/parent.log" bash -c 'sleep 300 & sleep 300'
echo "$SPAWNED" >> "$OUT/pids"
spawn - sleep 300
echo "$SPAWNED" >> "$OUT/pids"
touch "$OUT/started"
if [ "$3" = step ]; then
  run_step sleep 300
else
  wait_child "$SPAWNED"
fi
echo "not reached" >&2
"""


def _groups_running(pgids: set[int]) -> list[tuple[int, int, str]]:
    """(pid, pgid, command) of every process, zombies aside, in one of the process groups ``pgids``."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,stat=,comm="], capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        pid, pgid, stat, comm = line.split(None, 3)
        if int(pgid) in pgids and not stat.startswith("Z"):
            rows.append((int(pid), int(pgid), comm))
    return rows


def _sigint_ignored(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn:"))
    return bool(mask & (1 << (signal.SIGINT - 1)))


@pytest.mark.parametrize("driver_sigint, stop_with, step, deaf, bound", [
    ("default", signal.SIGTERM, "wait", "deaf", STOP_BOUND_S),
    ("ignored", signal.SIGTERM, "wait", "deaf", STOP_BOUND_S),
    ("ignored", signal.SIGTERM, "step", "deaf", STOP_BOUND_S),
    ("default", signal.SIGINT, "step", "deaf", STOP_BOUND_S),
    ("ignored", signal.SIGTERM, "wait", "-", 2.0),  # nothing to SIGKILL: no waiting for the grace period
    ("default", signal.SIGHUP, "wait", "-", 2.0),  # the terminal closed
], ids=["sigterm", "sigterm-sigint-ignored", "sigterm-during-a-step-sigint-ignored", "sigint-during-a-step",
        "sigterm-without-a-deaf-child", "sighup"])
def test_children_are_gone_within_5s(tmp_path, driver_sigint, stop_with, step, deaf, bound):
    driver = subprocess.Popen(["bash", "-c", DRIVER, "driver", sys.executable, str(tmp_path), step, deaf], cwd=ROOT,
                              stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              preexec_fn=dispositions(sigint_ignored=driver_sigint == "ignored"))
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists():
            assert driver.poll() is None, driver.stderr.read()
            assert time.monotonic() < deadline, "the driver did not start its children"
            time.sleep(0.05)
        pgids = {int(p) for p in (tmp_path / "pids").read_text().split()}
        # Each child leads its own group (with whatever it started) once its wrapper has run.
        deadline = time.monotonic() + 10
        while {pgid for _, pgid, _ in _groups_running(pgids)} != pgids or any(
                comm == "python3" or comm.startswith("python") for _, _, comm in _groups_running(pgids)):
            assert time.monotonic() < deadline, _groups_running(pgids)
            time.sleep(0.05)
        time.sleep(0.3)  # the stand-ins have set their own dispositions
        running = _groups_running(pgids)
        assert len(running) >= (6 if deaf == "deaf" else 4), running  # children, theirs, the step (if any)
        for pid, _, comm in running:  # the children (their own background jobs get it ignored by their shell)
            assert pid not in pgids or not _sigint_ignored(pid), f"{comm} ({pid}) started with SIGINT ignored"

        t0 = time.monotonic()
        driver.send_signal(stop_with)
        try:
            code = driver.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the driver still runs {bound}s after {stop_with.name}")
        took = time.monotonic() - t0
        left = _groups_running(pgids)
        assert not left, f"still running {took:.1f}s after {stop_with.name}: {left}"
        assert code == 128 + stop_with, (code, driver.stderr.read())
        assert took < bound
        print(f"stopped in {took:.2f}s")
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid, _, _ in _groups_running(pgids if "pgids" in locals() else set()):
            os.kill(pid, signal.SIGKILL)  # what a failed stop left of the children this test started


def test_dev_sh_starts_every_process_through_the_supervisor():
    """What dev.sh starts, it starts with spawn, spawn_last or run_step (so a stop reaches it): no bare
    ``&``, no seqctl, dagster or python command of its own in the foreground but ``seqctl --help``."""
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "scripts" / "dev.sh").read_text().splitlines()]
    assert ". scripts/supervise.sh" in lines and "supervise" in lines
    for line in lines:
        assert not line.endswith("&"), line
        if any(f"$BIN/{cmd} " in line for cmd in ("seqctl", "dagster", "python")):
            assert line.split()[0] in ("spawn", "spawn_last", "run_step") or "--help" in line, line


ORDERED = r"""
set -euo pipefail
SUPERVISE_PYTHON="$1"
OUT="$2"
. scripts/supervise.sh
supervise
spawn_last /dev/null bash -c "trap 'echo broker stops >> $OUT/order; exit 0' TERM; while :; do sleep 0.05; done"
spawn /dev/null bash -c "trap 'sleep 0.5; echo reader done >> $OUT/order; exit 0' TERM; while :; do sleep 0.05; done"
spawn /dev/null bash -c "trap 'sleep 0.2; echo other done >> $OUT/order; exit 0' TERM; while :; do sleep 0.05; done"
touch "$OUT/started"
wait_child "$SPAWNED"
"""


def test_a_child_spawned_last_is_stopped_after_the_others(tmp_path):
    """The broker (spawn_last) gets SIGTERM only once the children that read from it are gone (dev.sh:
    the micro-batches in flight have been canceled)."""
    driver = subprocess.Popen(["bash", "-c", ORDERED, "driver", sys.executable, str(tmp_path)], cwd=ROOT,
                              stdin=subprocess.DEVNULL, preexec_fn=dispositions(sigint_ignored=True))
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline and driver.poll() is None
            time.sleep(0.05)
        time.sleep(1.0)  # the children have set their traps
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=STOP_BOUND_S) == 128 + signal.SIGTERM
        assert (tmp_path / "order").read_text().splitlines() == [
            "other done", "reader done", "broker stops"]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
