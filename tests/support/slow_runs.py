"""A code location whose runs wait, and the launcher scenario that terminates one (tests/orchestration).

``python -m tests.support.slow_runs DAGSTER_HOME JOB...`` is the scenario, run as its own process
so the test can start it with SIGINT ignored, as a platform started in the background is (its
warm run workers inherit that): for each job in turn the instance's ``WarmRunLauncher`` launches
it on a warm worker, the scenario waits until the op runs (``JOB@launch``: not at all, the worker
may still be importing), terminates the run and waits for it to finish. It prints one JSON line, a result per job: the final status, the seconds from
``terminate`` to the end, the worker's pid and whether that worker is still alive (a worker that
ended its run by the interrupt stays warm and takes the next run).

Jobs (in-process steps, as the platform's asset runs):

* ``wait_job``: an op that sleeps in short steps, so an interrupt reaches it at once;
* ``deaf_job``: an op that ignores SIGINT and SIGTERM first, like a run stuck in native code;
  only SIGKILL ends its worker.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.support.slow_runs"


def _sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)


@dg.op
def wait_a_minute() -> None:
    _sleep(60)


@dg.op
def wait_deaf() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the op runs on the worker's main thread
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _sleep(60)


@dg.job(executor_def=dg.in_process_executor)
def wait_job():
    wait_a_minute()


@dg.job(executor_def=dg.in_process_executor)
def deaf_job():
    wait_deaf()


defs = dg.Definitions(jobs=[wait_job, deaf_job])


def instance_yaml(grace_seconds: float) -> str:
    """Instance settings whose warm launcher preloads this module (one worker, started at the launch)."""
    return ("run_launcher:\n  module: seq_assets.launcher\n  class: WarmRunLauncher\n  config:\n"
            f"    preload: [{MODULE}]\n    idle_workers: 0\n    terminate_grace_seconds: {grace_seconds}\n"
            "telemetry:\n  enabled: false\n")


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def terminate_scenario(home: str, job_names: list[str]) -> list[dict]:
    """Launch each job in turn on the instance's warm launcher, terminate it once its op runs (at
    once for ``JOB@launch``), and wait for it to finish; one result per job."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from seq_assets.orchestration.launcher import PID_TAG, _alive

    jobs = {"wait_job": wait_job, "deaf_job": deaf_job}
    recon = ReconstructableRepository.for_module(MODULE, "defs", working_directory=str(ROOT))
    results = []
    with dg.DagsterInstance.from_config(home) as instance:
        launcher = instance.run_launcher
        for spec in job_names:
            name, _, when = spec.partition("@")
            origin = recon.get_reconstructable_job(name).get_python_origin()
            run = instance.create_run_for_job(job_def=jobs[name], job_code_origin=origin)
            instance.launch_run(run.run_id, workspace=None)

            def step_started() -> bool:
                return bool(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START))

            if when != "launch":
                _wait(step_started, 90, f"the op of {name} to start")
            pid = int(instance.get_run_by_id(run.run_id).tags[PID_TAG])
            t0 = time.monotonic()
            assert launcher.terminate(run.run_id)
            _wait(lambda: instance.get_run_by_id(run.run_id).is_finished, 60, f"{name} to finish")
            seconds = time.monotonic() - t0
            results.append({"job": spec, "status": instance.get_run_by_id(run.run_id).status.value,
                            "seconds": round(seconds, 2), "pid": pid, "worker_alive": _alive(pid),
                            "op_started": step_started(),
                            "sigint_ignored_here": signal.getsignal(signal.SIGINT) == signal.SIG_IGN})
    return results


if __name__ == "__main__":
    os.chdir(ROOT)  # workers import this module by name, from the working directory
    print(json.dumps(terminate_scenario(sys.argv[1], sys.argv[2:])), flush=True)
