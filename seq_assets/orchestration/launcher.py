"""A run launcher that hands runs to run worker processes that are already warm.

Dagster's default launcher asks the code server to spawn a fresh Python process per run, and the
call returns only once that process has imported Dagster and the code location: 3-8 s of a 2-core
machine, paid by every stream micro-batch before it reads a single record (and, as a sensor tick
submits its runs before the next tick starts, paid again in the tick interval).

``WarmRunLauncher`` keeps a pool of run worker processes. A worker imports the ``preload`` modules
(the code location) once, then executes the runs it is handed on its stdin one at a time, exactly
as ``dagster api execute_run`` does, reporting each end on its stdout. Launching a run writes its
id to an idle worker (starting one when all are busy), so a run starts in milliseconds. A worker
retires after ``max_runs_per_worker`` runs (bounding whatever a run leaves behind in memory) and
the pool keeps ``idle_workers`` warm ones ready.

Termination and run monitoring work from any process on the machine: the worker's pid is a run
tag, ``terminate`` interrupts it, and ``check_run_worker_health`` reports a worker that is gone,
so the daemon fails the run and run retries re-run it. Runs of a code location the launcher does
not preload go to the code server, as with ``DefaultRunLauncher``.

    run_launcher:
      module: seq_assets.launcher
      class: WarmRunLauncher
      config:
        preload: [seq_assets.definitions]
        idle_workers: 1
        max_runs_per_worker: 200
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import Array, Field, IntSource
from dagster._core.launcher import DefaultRunLauncher, LaunchRunContext
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClassData, serialize_value

PID_TAG = "seq/run_worker_pid"


def _pointer_module(run: DagsterRun) -> str | None:
    """The module a run's code is loaded from, when it is a module or package pointer."""
    origin = run.job_code_origin
    if origin is None:
        return None
    pointer = origin.repository_origin.code_pointer
    return getattr(pointer, "module", None)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not a live worker.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


class _Worker:
    """One run worker process and whether it is executing a run now."""

    def __init__(self, preload: Sequence[str], on_idle):
        self.proc = subprocess.Popen([sys.executable, "-m", "seq_assets.orchestration.launcher", *preload],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.busy = False
        self.retired = False
        self.runs = 0
        self.run_id: str | None = None  # the run it executes now
        self._on_idle = on_idle
        threading.Thread(target=self._follow, daemon=True, name=f"run-worker-{self.proc.pid}").start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _follow(self) -> None:
        """Read the worker's "done" lines; reap it when it exits (so its pid stops looking alive)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            # Only the exact end line of its current run counts, not any output that looks like it.
            if self.run_id is not None and line.strip() == f"done {self.run_id}":
                self._on_idle(self, exited=False)
        self.proc.wait()
        self._on_idle(self, exited=True)

    def send(self, run_id: str, instance_ref: str, last: bool) -> None:
        assert self.proc.stdin is not None
        self.run_id = run_id
        self.proc.stdin.write(json.dumps({"run_id": run_id, "instance_ref": instance_ref}) + "\n")
        if last:
            self.proc.stdin.close()  # it exits after this run
            self.retired = True
        else:
            self.proc.stdin.flush()

    def close(self) -> None:
        try:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()  # an idle worker exits when its stdin closes
        except OSError:
            pass
        self.retired = True


class WarmRunLauncher(DefaultRunLauncher):
    """Launches runs on run worker processes started (and warmed) ahead of time."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, preload: Sequence[str] = (),
                 idle_workers: int = 1, max_runs_per_worker: int = 200):
        super().__init__(inst_data=inst_data)
        self._preload = list(preload)
        self._idle_target = max(0, int(idle_workers))
        self._max_runs = max(1, int(max_runs_per_worker))
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    @classmethod
    def config_type(cls) -> dict:
        return {
            "preload": Field(Array(str), is_required=False, default_value=[],
                             description="Modules a worker imports before its first run: the code location."),
            "idle_workers": Field(IntSource, is_required=False, default_value=1,
                                  description="Warm workers kept waiting for a run."),
            "max_runs_per_worker": Field(IntSource, is_required=False, default_value=200,
                                         description="Runs a worker executes before it retires."),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    # -- the pool ------------------------------------------------------------------------------------
    def _on_idle(self, worker: _Worker, exited: bool) -> None:
        with self._lock:
            worker.busy = False
            if exited or worker.retired:
                self._workers = [w for w in self._workers if w is not worker]
            if not exited:
                # Not on exit: a worker that cannot even start must not respawn in a loop.
                self._top_up()

    def _top_up(self) -> None:
        """Keep ``idle_workers`` warm workers ready (caller holds the lock)."""
        self._workers = [w for w in self._workers if w.alive() and not w.retired or w.busy]
        idle = sum(1 for w in self._workers if not w.busy and not w.retired)
        for _ in range(self._idle_target - idle):
            self._workers.append(_Worker(self._preload, self._on_idle))

    def _take_worker(self) -> _Worker:
        with self._lock:
            self._top_up()
            worker = next((w for w in self._workers if not w.busy and not w.retired and w.alive()), None)
            if worker is None:
                worker = _Worker(self._preload, self._on_idle)
                self._workers.append(worker)
            worker.busy = True
            worker.runs += 1
            return worker

    def prestart(self) -> None:
        """Start the idle workers now rather than at the first launch."""
        with self._lock:
            self._top_up()

    # -- RunLauncher ---------------------------------------------------------------------------------
    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        module = _pointer_module(run)
        if module is None or module not in self._preload:
            return super().launch_run(context)
        worker = self._take_worker()
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(worker.pid)})
        try:
            worker.send(run.run_id, serialize_value(self._instance.get_ref()), last=worker.runs >= self._max_runs)
        except (BrokenPipeError, OSError, ValueError):
            # The worker died before it took the run: launch this one on the code server instead.
            worker.close()
            self._instance.add_run_tags(run.run_id, {PID_TAG: ""})
            return super().launch_run(context)
        with self._lock:
            self._top_up()
        self._run_ids.add(run.run_id)

    def _worker_pid(self, run_id: str) -> int | None:
        run = self._instance.get_run_by_id(run_id)
        pid = (run.tags.get(PID_TAG) if run else None) or ""
        return int(pid) if pid.isdigit() else None

    def terminate(self, run_id: str) -> bool:
        pid = self._worker_pid(run_id)
        if pid is None:
            return super().terminate(run_id)
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        try:
            # The worker turns SIGINT into an interrupt of its current run (capture_interrupts).
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = self._worker_pid(run.run_id)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "not launched on a warm run worker")
        if _alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone", run_worker_id=str(pid))

    def dispose(self) -> None:
        with self._lock:
            workers, self._workers = self._workers, []
        for w in workers:
            w.close()
        super().dispose()


def _worker_main(preload: Sequence[str]) -> int:
    """A run worker: import the code location, then execute the runs read from stdin, one by one."""
    import importlib

    from dagster._cli.api import _execute_run_command_body
    from dagster._core.instance import DagsterInstance, InstanceRef
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts, pop_captured_interrupt

    for name in preload:
        importlib.import_module(name)
    instances: dict[str, DagsterInstance] = {}
    out = sys.stdout
    sys.stdout = sys.stderr  # run output must not mix with the "done" lines the launcher reads
    try:
        with capture_interrupts():
            for line in sys.stdin:
                if not line.strip():
                    continue
                msg = json.loads(line)
                ref = msg["instance_ref"]
                if ref not in instances:
                    instances[ref] = DagsterInstance.from_ref(deserialize_value(ref, InstanceRef))
                try:
                    _execute_run_command_body(msg["run_id"], instances[ref], lambda _event: None,
                                              set_exit_code_on_failure=False)
                finally:
                    pop_captured_interrupt()  # an interrupt ends the run it was meant for, not the next
                try:
                    out.write(f"done {msg['run_id']}\n")
                    out.flush()
                except OSError:
                    break  # the launching process is gone: nobody will hand us another run
    finally:
        for instance in instances.values():
            instance.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
