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
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from seq_assets.orchestration.launcher import PID_TAG, WarmRunLauncher, _alive
from tests.support.signals import dispositions
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
        assert launcher._grace == 5
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_resume_run_attempts == 0
        assert not instance.nux_enabled  # no newsletter pop-up in the UI


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


def _stand_in_worker(*ignored: signal.Signals) -> subprocess.Popen:
    """A process in a worker's place: it sleeps, ignoring ``ignored`` and with SIGINT and SIGTERM
    otherwise at their defaults, however this test process was started (tests/support/signals.py)."""
    def preexec():
        dispositions(sigint_ignored=False)()
        for sig in ignored:
            signal.signal(sig, signal.SIG_IGN)
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=preexec)


def _wait_status(instance, run_id: str, timeout: float) -> dg.DagsterRunStatus:
    deadline = time.monotonic() + timeout
    while (status := instance.get_run_by_id(run_id).status) not in (dg.DagsterRunStatus.CANCELED,
                                                                     dg.DagsterRunStatus.FAILURE):
        assert time.monotonic() < deadline, f"run still {status} after {timeout}s"
        time.sleep(0.1)
    return status


def test_terminate_interrupts_the_worker_and_a_vanished_worker_fails_health(warm_home):
    from dagster._core.launcher import WorkerStatus
    from dagster._core.test_utils import create_run_for_test

    with dg.DagsterInstance.from_config(str(warm_home)) as instance:
        launcher = instance.run_launcher
        worker = _stand_in_worker()
        try:
            run = create_run_for_test(instance, job_name="stream_user_engagements",
                                      status=dg.DagsterRunStatus.STARTED, tags={PID_TAG: str(worker.pid)})
            assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
            assert launcher.terminate(run.run_id) is True
            assert worker.wait(timeout=10) == -signal.SIGINT  # SIGINT ended the sleeping process
            # It ended without ending its run: the launcher marks the run canceled, never leaves it canceling.
            assert _wait_status(instance, run.run_id, timeout=10) == dg.DagsterRunStatus.CANCELED
            health = launcher.check_run_worker_health(instance.get_run_by_id(run.run_id))
            assert health.status == WorkerStatus.FAILED and str(worker.pid) in health.msg
        finally:
            worker.kill()
            worker.wait()


def test_run_monitoring_fails_a_run_whose_worker_is_gone_and_leaves_other_runs_alone(warm_home):
    """What the daemon's run monitoring (on in the shipped settings) does with the launcher's answers:
    a run whose warm worker is gone is failed; a run the launcher did not start (no worker pid, e.g.
    `seqctl materialize --record` executing in its own process) is not touched."""
    import logging

    from dagster._core.test_utils import create_run_for_test
    from dagster._daemon.monitoring.run_monitoring import monitor_started_run

    with dg.DagsterInstance.from_config(str(warm_home)) as instance:
        gone = _stand_in_worker()
        gone.kill()
        gone.wait()
        lost = create_run_for_test(instance, job_name="stream_user_engagements",
                                   status=dg.DagsterRunStatus.STARTED, tags={PID_TAG: str(gone.pid)})
        elsewhere = create_run_for_test(instance, job_name="daily_batch", status=dg.DagsterRunStatus.STARTED)
        for run in (lost, elsewhere):
            record = instance.get_run_records(dg.RunsFilter(run_ids=[run.run_id]))[0]
            monitor_started_run(instance, None, record, logging.getLogger("test"))
        assert instance.get_run_by_id(lost.run_id).status == dg.DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(elsewhere.run_id).status == dg.DagsterRunStatus.STARTED


def test_cancel_runs_in_flight_cancels_only_unfinished_runs_with_the_tag(warm_home):
    """What `make dev` does as it stops: the micro-batches in flight end canceled, not failed."""
    from dagster._core.test_utils import create_run_for_test

    from seq_assets.orchestration.launcher import cancel_runs_in_flight

    with dg.DagsterInstance.from_config(str(warm_home)) as instance:
        worker = _stand_in_worker()
        try:
            def run(status, **tags):
                return create_run_for_test(instance, job_name="stream_user_engagements", status=status,
                                           tags={"seq/source": "user_engagements", **tags}).run_id

            running = run(dg.DagsterRunStatus.STARTED, **{PID_TAG: str(worker.pid)})
            not_taken = run(dg.DagsterRunStatus.STARTING)
            done = run(dg.DagsterRunStatus.SUCCESS, **{PID_TAG: str(worker.pid)})
            batch = create_run_for_test(instance, job_name="daily_batch", status=dg.DagsterRunStatus.STARTED).run_id
            assert cancel_runs_in_flight(instance, "seq/source", "the test stops") == 2
            assert instance.get_run_by_id(running).status == dg.DagsterRunStatus.CANCELING
            assert worker.wait(timeout=10) == -signal.SIGINT  # interrupted: a real worker ends the run now
            assert instance.get_run_by_id(not_taken).status == dg.DagsterRunStatus.CANCELED
            assert instance.get_run_by_id(done).status == dg.DagsterRunStatus.SUCCESS
            assert instance.get_run_by_id(batch).status == dg.DagsterRunStatus.STARTED
        finally:
            worker.kill()
            worker.wait()


def test_cancel_on_sigterm_cancels_the_runs_in_flight_at_once(warm_home):
    """`make dev`'s stop helper: Dagster loaded ahead, it cancels the micro-batches in flight as soon as
    SIGTERM comes, well inside the stop's bound, and exits."""
    from dagster._core.test_utils import create_run_for_test

    with dg.DagsterInstance.from_config(str(warm_home)) as instance:
        run_id = create_run_for_test(instance, job_name="stream_user_engagements", status=dg.DagsterRunStatus.STARTING,
                                     tags={"seq/source": "user_engagements"}).run_id
        helper = subprocess.Popen([sys.executable, "-m", "seq_assets.orchestration.launcher", "--cancel-on-sigterm",
                                   "seq/source", "the test stops"], cwd=ROOT, env={**os.environ, "DAGSTER_HOME": str(warm_home)},
                                  stdout=subprocess.PIPE, text=True, preexec_fn=dispositions(sigint_ignored=True))
        try:
            assert helper.stdout.readline().startswith("waiting for SIGTERM"), "the helper did not get ready"
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTING
            t0 = time.monotonic()
            helper.send_signal(signal.SIGTERM)
            assert helper.wait(timeout=10) == 0
            assert time.monotonic() - t0 < 2.0
            assert "canceled 1 run(s)" in helper.stdout.read()
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.CANCELED
        finally:
            if helper.poll() is None:
                helper.kill()
                helper.wait()


@pytest.mark.parametrize("ignored, ended_by", [
    ((signal.SIGINT,), signal.SIGTERM),
    ((signal.SIGINT, signal.SIGTERM), signal.SIGKILL),
], ids=["sigint-ignored", "sigint-and-sigterm-ignored"])
def test_terminate_escalates_to_sigterm_then_sigkill(warm_home, ignored, ended_by):
    """A worker that ignores SIGINT (started in the background) gets SIGTERM after the grace period,
    one that ignores that too gets SIGKILL after another; the run ends canceled either way."""
    from dagster._core.test_utils import create_run_for_test

    grace = 1
    yaml = (warm_home / "dagster.yaml").read_text()
    assert "terminate_grace_seconds: 5" in yaml  # the shipped setting
    (warm_home / "dagster.yaml").write_text(yaml.replace("terminate_grace_seconds: 5", f"terminate_grace_seconds: {grace}"))
    with dg.DagsterInstance.from_config(str(warm_home)) as instance:
        worker = _stand_in_worker(*ignored)
        try:
            time.sleep(0.5)  # the stand-in has set its dispositions
            run = create_run_for_test(instance, job_name="stream_user_engagements",
                                      status=dg.DagsterRunStatus.STARTED, tags={PID_TAG: str(worker.pid)})
            t0 = time.monotonic()
            assert instance.run_launcher.terminate(run.run_id) is True
            assert worker.wait(timeout=10 * grace) == -ended_by
            took = time.monotonic() - t0
            steps = 1 if ended_by == signal.SIGTERM else 2
            assert steps * grace <= took < steps * grace + 3, took
            assert _wait_status(instance, run.run_id, timeout=10) == dg.DagsterRunStatus.CANCELED
        finally:
            worker.kill()
            worker.wait()


@pytest.mark.parametrize("own_session, restored", [(True, True), (False, False)])
def test_a_worker_restores_sigint_only_in_a_session_of_its_own(own_session, restored):
    """A worker (its own session leader, as the launcher starts it) that inherited SIGINT and SIGTERM
    ignored puts Python's defaults back; a process that shares a terminal's session keeps them."""
    code = ("import os, signal\n"
            f"if {own_session}: os.setsid()\n"
            "from seq_assets.orchestration.launcher import _restore_interrupts\n"
            "_restore_interrupts()\n"
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler,"
            " signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)")

    def preexec():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         preexec_fn=preexec)
    assert out.stdout.split() == [str(restored)] * 2, out.stderr[-2000:]


def test_terminating_runs_on_a_worker_started_with_sigint_ignored(tmp_path):
    """The launcher (and so the worker it starts) runs in a process whose SIGINT is ignored, as in a
    platform started in the background, by nohup or a service manager. A running run is still
    ended by the interrupt alone, canceled, and its worker takes the next run; a run deaf to SIGINT
    and SIGTERM (stuck in native code) is ended by SIGKILL after twice the grace period; a run
    terminated while its new worker still imports the code location ends canceled without starting."""
    from tests.support.slow_runs import instance_yaml

    grace = 3
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml(grace))
    proc = subprocess.run([sys.executable, "-m", "tests.support.slow_runs", str(home),
                           "wait_job", "deaf_job", "wait_job@launch"],
                          cwd=ROOT, preexec_fn=dispositions(sigint_ignored=True),
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    waiting, deaf, early = json.loads(proc.stdout.strip().splitlines()[-1])
    assert waiting["sigint_ignored_here"] is True
    assert waiting["status"] == deaf["status"] == "CANCELED", (waiting, deaf)
    assert waiting["seconds"] < grace and waiting["worker_alive"], waiting  # no escalation was needed
    assert deaf["pid"] == waiting["pid"], "the interrupted worker should have taken the next run"
    assert 2 * grace <= deaf["seconds"] < 2 * grace + 5 and not deaf["worker_alive"], deaf
    # Terminated as soon as it was handed to a fresh worker, still importing: ended, never started.
    assert early["status"] == "CANCELED" and not early["op_started"], early
    assert early["pid"] != deaf["pid"] and early["seconds"] < 2 * grace + 5, early
    for pid in {waiting["pid"], deaf["pid"], early["pid"]}:
        deadline = time.monotonic() + 10
        while _alive(pid):  # and no worker outlives its launcher
            assert time.monotonic() < deadline, f"worker {pid} still running after its launcher exited"
            time.sleep(0.1)


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


def test_workers_beyond_the_idle_ones_retire_after_the_idle_timeout_and_busy_ones_never():
    """A burst of three runs grows the pool to three workers; as the runs end, the workers beyond
    ``idle_workers`` retire once idle for ``idle_timeout_seconds`` (longest idle first), their
    processes exit, and the pool is back to one warm worker. A worker with a run is never retired."""
    launcher = WarmRunLauncher(preload=["json"], idle_workers=1, idle_timeout_seconds=3600)
    try:
        burst = [launcher._take_worker() for _ in range(3)]  # three runs at once, as _take_worker hands them out
        assert len({w.pid for w in burst}) == 3 and all(w.busy for w in burst)
        launcher._on_idle(burst[0], exited=False)  # the runs end in turn (a worker's "done" line)
        launcher._on_idle(burst[1], exited=False)
        assert launcher.retire_idle() == 0  # not idle long enough
        later = time.monotonic() + 3600
        assert launcher.retire_idle(now=later) == 1  # burst[0] idled longest; burst[1] stays warm
        assert burst[0].proc.wait(timeout=60) == 0  # its stdin closed: it exits
        assert launcher._workers == [burst[1], burst[2]] and burst[2].busy and burst[2].alive()
        assert launcher.retire_idle(now=later + 3600) == 0  # the one idle worker is the one kept

        launcher._idle_timeout = 0.2  # now the thread that watches idle workers does it on its own
        launcher._on_idle(burst[2], exited=False)
        deadline = time.monotonic() + 60
        while len(launcher._workers) > 1:
            assert time.monotonic() < deadline, "the idle worker beyond idle_workers did not retire"
            time.sleep(0.1)
        assert launcher._workers == [burst[2]]  # the one idle most recently is kept
        assert burst[1].proc.wait(timeout=60) == 0 and burst[2].alive()
    finally:
        launcher.dispose()
    for w in burst:
        w.proc.wait(timeout=60)
