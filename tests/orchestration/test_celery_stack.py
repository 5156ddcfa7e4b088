"""scripts/stack.sh (make stack-up / stack-down): the stack comes up on loopback with what it prints,
and goes away.

Up with one worker: the printed environment names the lake on S3, the Celery executor and broker,
the buckets and a DAGSTER_HOME whose instance is on Postgres with the warm run launcher; Redis, the
S3 bucket and the worker answer. Down: no process of it is left and the Postgres folder is gone.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        out[name] = value.strip("'")
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stack_up_prints_a_working_environment_and_down_stops_it(tmp_path):
    import boto3
    import dagster as dg
    import redis
    from celery import Celery

    state = tmp_path / "stack"
    cmd = ["bash", str(ROOT / "scripts/stack.sh")]
    up = subprocess.run([*cmd, "up", "--workers", "1", "--buckets", "3", "--dir", str(state)], cwd=ROOT, check=False,
                        capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    pids = {p.name: int(p.read_text()) for p in (state / "pids").glob("*")}
    pgdir = Path((state / "pgdir").read_text().strip()) if (state / "pgdir").exists() else None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        env = _env_file(state / "env.sh")
        assert "export SEQ_EXECUTOR=celery" in up.stdout
        assert env["SEQ_EXECUTOR"] == "celery" and env["SEQ_USER_BUCKETS"] == "3"
        assert env["SEQ_LAKE_URI"].startswith("s3://")
        assert env["SEQ_CELERY_BROKER"].startswith("redis://127.0.0.1:")
        assert redis.Redis.from_url(env["SEQ_CELERY_BROKER"]).ping()
        options = json.loads(env["SEQ_STORAGE_OPTIONS"])
        s3 = boto3.client("s3", endpoint_url=options["AWS_ENDPOINT_URL"], region_name=options["AWS_REGION"],
                          aws_access_key_id=options["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=options["AWS_SECRET_ACCESS_KEY"])
        assert env["SEQ_LAKE_URI"].split("/")[2] in {b["Name"] for b in s3.list_buckets()["Buckets"]}
        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        try:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.run_launcher).__name__ == "WarmRunLauncher"
        finally:
            instance.dispose()
        app = Celery("ping", broker=env["SEQ_CELERY_BROKER"])
        assert [n for r in app.control.ping(timeout=2.0) for n in r] == ["seq-worker-0@127.0.0.1"]
        app.close()
        assert {"redis", "moto", "worker-0"} <= set(pids)
        assert pgdir is not None and pgdir.is_dir()
    finally:
        down = subprocess.run([*cmd, "down", "--dir", str(state)], cwd=ROOT, check=False, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
    assert down.returncode == 0, down.stderr
    assert not [name for name, pid in pids.items() if _alive(pid)]
    assert pgdir is None or not pgdir.exists()
