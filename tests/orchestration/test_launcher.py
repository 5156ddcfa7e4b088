"""The warm run launcher (seq_assets/launcher.py) of the shipped Dagster instance settings.

A stream micro-batch is launched through the real ``dagster job launch`` command with the instance
settings `make dev` uses (scripts/dagster.yaml): the run executes on a pre-started run worker, not
on a process the code server spawns, and lands its events. Termination and the worker health check
are exercised against real processes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from seq_assets.orchestration.launcher import PID_TAG, WarmRunLauncher
from tests.support.stream import (
    cursor_at_end,
    day_start_ms,
    event,
    keyed,
    produce,
    read_table,
    stream_pair,
    tick,
    utc_today,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def warm_home(tmp_path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "scripts" / "dagster.yaml", home / "dagster.yaml")
    return home


def _wait_finished(instance, run_id: str, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


def test_shipped_instance_uses_the_warm_launcher(warm_home):
    with dg.DagsterInstance.from_config(str(warm_home)) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, WarmRunLauncher)
        assert "seq_assets.definitions" in launcher._preload


def test_a_micro_batch_launched_by_dagster_runs_on_a_warm_worker(warm_home, kbroker, kafka_res, stream_lake):
    now = int(time.time() * 1000)
    day0 = day_start_ms(utc_today())
    ts = max(day0 + 1000, now - 60_000)
    start = cursor_at_end(kafka_res)
    evs = [event(f"warm-{i}", 10 + i % 3, "click", 100 + i, ts + i) for i in range(12)]
    produce(kbroker.bootstrap, keyed(evs))

    with dg.DagsterInstance.from_config(str(warm_home)) as instance:
        _, sensor = stream_pair()
        result = tick(sensor, instance, kafka_res, start)
        assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 1
        rr = result.run_requests[0]
        run_id = str(uuid.uuid4())
        env = {**os.environ, "DAGSTER_HOME": str(warm_home), "SEQ_KAFKA_BOOTSTRAP": kbroker.bootstrap}
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "dagster"), "job", "launch", "-w", str(ROOT / "workspace.yaml"),
             "-j", "stream_user_engagements", "--config-json", json.dumps(rr.run_config),
             "--tags", json.dumps(rr.tags), "--run-id", run_id],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        run = _wait_finished(instance, run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
        pid = run.tags.get(PID_TAG)
        assert pid and pid.isdigit(), run.tags
        # The run executed in that worker (its engine event names the pid), not in the launching CLI.
        logs = instance.all_logs(run_id)
        assert any(f"Started process for run (pid: {pid})" in (e.message or "") for e in logs)

    events = read_table(stream_lake, "events", "pin_click")
    assert events is not None
    assert sorted(events.get_column("event_id").to_list()) == sorted(e["event_id"] for e in evs)


def test_terminate_interrupts_the_worker_and_a_vanished_worker_fails_health(warm_home):
    from dagster._core.launcher import WorkerStatus
    from dagster._core.test_utils import create_run_for_test

    with dg.DagsterInstance.from_config(str(warm_home)) as instance:
        launcher = instance.run_launcher
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            run = create_run_for_test(instance, job_name="stream_user_engagements",
                                      status=dg.DagsterRunStatus.STARTED, tags={PID_TAG: str(worker.pid)})
            assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
            assert launcher.terminate(run.run_id) is True
            assert worker.wait(timeout=10) != 0  # SIGINT ended the sleeping process
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELING
            health = launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
            assert health.status == WorkerStatus.FAILED and str(worker.pid) in health.msg
        finally:
            worker.kill()
            worker.wait()


def test_one_warm_worker_runs_consecutive_runs(warm_home, kbroker, kafka_res, stream_lake, monkeypatch):
    """Two micro-batches launched by one launcher: both run, on the same (reused) worker process."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    monkeypatch.setenv("SEQ_KAFKA_BOOTSTRAP", kbroker.bootstrap)  # workers inherit this process's environment

    now = int(time.time() * 1000)
    ts = max(day_start_ms(utc_today()) + 1000, now - 60_000)
    recon = ReconstructableRepository.for_module("seq_assets.definitions", "defs", working_directory=str(ROOT))
    origin = recon.get_reconstructable_job("stream_user_engagements").get_python_origin()
    job, sensor = stream_pair()
    cursor = cursor_at_end(kafka_res)
    pids, ids = [], []
    with dg.DagsterInstance.from_config(str(warm_home)) as instance:
        for batch in range(2):
            evs = [event(f"reuse-{batch}-{i}", 20 + i, "click", 300 + i, ts + i) for i in range(5)]
            ids += [e["event_id"] for e in evs]
            produce(kbroker.bootstrap, keyed(evs))
            result = tick(sensor, instance, kafka_res, cursor)
            cursor = result.cursor
            (rr,) = result.run_requests
            run = instance.create_run_for_job(job_def=job, run_config=rr.run_config, tags=rr.tags,
                                              job_code_origin=origin)
            instance.launch_run(run.run_id, workspace=None)
            run = _wait_finished(instance, run.run_id)
            assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
            pids.append(run.tags[PID_TAG])
    assert pids[0] == pids[1], "the second run should reuse the warm worker of the first"
    events = read_table(stream_lake, "events", "pin_click")
    assert sorted(events.get_column("event_id").to_list()) == sorted(ids)
