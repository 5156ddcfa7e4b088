"""The README's "Onboard your own events" steps, run as a newcomer would: the shell block as written
(in a temporary folder and on a free port instead of /tmp/my-defs and 8765), from the repository."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _steps() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- onboarding:start -->", 1)[1].split("<!-- onboarding:end -->", 1)[0]
    return block.split("```bash\n", 1)[1].split("```", 1)[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_readme_onboarding_steps_serve_a_sequence(tmp_path):
    port = _free_port()
    script = _steps().replace("/tmp/my-defs", str(tmp_path / "my-defs")).replace("8765", str(port))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEQ_", "DAGSTER_HOME"))}
    log, err = tmp_path / "stdout", tmp_path / "stderr"
    with log.open("w") as o, err.open("w") as e:
        # A session of its own: whatever the steps leave running is stopped with them.
        proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=ROOT, env=env, stdout=o, stderr=e,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=300)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text()
    assert rc == 0, out[-3000:] + err.read_text()[-3000:]
    assert "definitions are valid" in out
    # seqctl sql: both members have a sequence; the bad line is a dead letter that names the field.
    assert re.search(r"\b7\b.*\b7\b", out) and re.search(r"\b42\b", out)
    assert "member_id" in out.split("reason", 1)[1]
    # seqctl show: member 42's two ratings, newest first.
    assert "recent_ratings_v1 · user 42" in out
    served = json.loads(out.strip().splitlines()[-1])
    assert [e["rating_id"] for e in served["events"]] == ["r-2", "r-1"]
    assert [e["title_id"] for e in served["events"]] == [9, 7]
