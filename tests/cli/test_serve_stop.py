"""``seqctl serve`` stops within 5 s of SIGTERM, as container platforms and ``make dev`` send it.

Also when started with SIGINT ignored (a process started in the background by a shell, by nohup
or by a service manager), and with its stream tail retrying a broker that is down, whose shutdown
alone takes longer than that.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.serving_helpers import ROOT, free_port, shared_lake, stop_process, wait_http
from tests.support.signals import dispositions

pytestmark = pytest.mark.timeout(180)
STOP_BOUND_S = 5.0


def _children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # the parent pid
            out.append(int(stat.parent.name))
    return out


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sigint, tail, workers", [
    ("default", False, 1),
    ("ignored", False, 1),
    ("ignored", True, 1),
    ("ignored", True, 2),
], ids=["no-tail", "no-tail-sigint-ignored", "tail-on-a-down-broker-sigint-ignored",
        "two-workers-tail-on-a-down-broker-sigint-ignored"])
def test_serve_stops_within_5s_of_sigterm(tmp_path_factory, tmp_path, sigint, tail, workers):
    lake = shared_lake(tmp_path_factory)
    port = free_port()
    # A tail on a port nobody listens on: it keeps failing to connect and retrying.
    args = ["--bootstrap", f"127.0.0.1:{free_port()}"] if tail else ["--no-tail"]
    if workers > 1:  # the supervisor and its workers, each a process of its own
        args += ["--workers", str(workers), "--shared-dir", str(tmp_path / "shm")]
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "seqctl"), "serve", "--port", str(port), *args],
                            env=lake.env(), cwd=str(ROOT), stdin=subprocess.DEVNULL,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            preexec_fn=dispositions(sigint_ignored=sigint == "ignored"))
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        if tail:
            time.sleep(3)  # the tail is inside a connection attempt or its retry wait
        workers_pids = _children_of(proc.pid)
        if workers > 1:  # the workers, besides spawn's resource tracker
            assert sum(b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes() for p in workers_pids) == workers
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"seqctl serve still running {STOP_BOUND_S}s after SIGTERM; log:\n{log.read_text()[-2000:]}")
        took = time.monotonic() - t0
        assert code in (-signal.SIGTERM, 128 + signal.SIGTERM), (code, log.read_text()[-2000:])
        # the workers and multiprocessing's resource tracker (it leaves when the parent's pipe closes)
        while [p for p in workers_pids if _running(p)] and time.monotonic() < t0 + STOP_BOUND_S:
            time.sleep(0.05)
        assert not [p for p in workers_pids if _running(p)], "a child outlived seqctl serve by 5 s"
        print(f"stopped in {took:.2f}s with {code}")
    finally:
        stop_process(proc)
