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
the pool keeps ``idle_workers`` warm ones ready. A burst of runs grows the pool; once it is over,
a worker idle for ``idle_timeout_seconds`` beyond those ``idle_workers`` retires, so over months
the pool (and its memory) shrinks back after every burst.

Termination and run monitoring work from any process on the machine: the worker's pid is a run
tag, and ``check_run_worker_health`` reports a worker that is gone, so the daemon fails the run
and run retries re-run it. ``terminate`` sends the worker SIGINT, which ends its current run (the
worker goes on to the next); a worker that has not ended the run ``terminate_grace_seconds``
later gets SIGTERM, and after as long again SIGKILL (its process group). A run whose worker is
gone without ending it is marked canceled, so a terminated run never hangs in CANCELING. SIGINT
alone is not enough: a process started in the background by a shell, by ``nohup`` or by a service
manager inherits SIGINT ignored, and so would its workers; and a run stuck in native code does not
see it. Runs of a code location the launcher does not preload go to the code server, as with
``DefaultRunLauncher``.

    run_launcher:
      module: seq_assets.launcher
      class: WarmRunLauncher
      config:
        preload: [seq_assets.definitions]
        idle_workers: 1
        max_runs_per_worker: 200
        idle_timeout_seconds: 300
        terminate_grace_seconds: 5
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import Array, Field, IntSource
from dagster._core.launcher import DefaultRunLauncher, LaunchRunContext
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
from dagster._serdes import ConfigurableClassData, serialize_value

PID_TAG = "seq/run_worker_pid"
DEFAULT_TERMINATE_GRACE_SECONDS = 5.0
DEFAULT_IDLE_TIMEOUT_SECONDS = 300.0

log = logging.getLogger("seqplat.launcher")


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


def _kill(pid: int, sig: int) -> bool:
    """Send ``sig`` to a worker (SIGKILL to its whole process group when it leads one); False if it is gone."""
    try:
        if sig == signal.SIGKILL and os.getpgid(pid) == pid:
            os.killpg(pid, sig)  # whatever the run started dies with it
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        return False
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
        self.idle_since = time.monotonic()  # when it last became idle (it starts idle)
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
                 idle_workers: int = 1, max_runs_per_worker: int = 200,
                 terminate_grace_seconds: float = DEFAULT_TERMINATE_GRACE_SECONDS,
                 idle_timeout_seconds: float = DEFAULT_IDLE_TIMEOUT_SECONDS):
        super().__init__(inst_data=inst_data)
        self._preload = list(preload)
        self._idle_target = max(0, int(idle_workers))
        self._max_runs = max(1, int(max_runs_per_worker))
        self._grace = max(0.0, float(terminate_grace_seconds))
        self._idle_timeout = max(0.0, float(idle_timeout_seconds))
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._disposed = threading.Event()
        self._reaper: threading.Thread | None = None

    @classmethod
    def config_type(cls) -> dict:
        return {
            "preload": Field(Array(str), is_required=False, default_value=[],
                             description="Modules a worker imports before its first run: the code location."),
            "idle_workers": Field(IntSource, is_required=False, default_value=1,
                                  description="Warm workers kept waiting for a run."),
            "max_runs_per_worker": Field(IntSource, is_required=False, default_value=200,
                                         description="Runs a worker executes before it retires."),
            "terminate_grace_seconds": Field(float, is_required=False, default_value=DEFAULT_TERMINATE_GRACE_SECONDS,
                                             description="Seconds a terminated run's worker gets after SIGINT "
                                                         "before SIGTERM, and after SIGTERM before SIGKILL."),
            "idle_timeout_seconds": Field(float, is_required=False, default_value=DEFAULT_IDLE_TIMEOUT_SECONDS,
                                          description="Seconds a worker beyond the idle_workers waits for a run "
                                                      "before it retires."),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(inst_data=inst_data, **config_value)

    # -- the pool ------------------------------------------------------------------------------------
    def _on_idle(self, worker: _Worker, exited: bool) -> None:
        with self._lock:
            worker.busy = False
            worker.idle_since = time.monotonic()
            if exited or worker.retired:
                self._workers = [w for w in self._workers if w is not worker]
            if not exited:
                # Not on exit: a worker that cannot even start must not respawn in a loop.
                self._top_up()
                self._watch_idle()

    def _idle_beyond_target(self) -> list[_Worker]:
        """The idle workers beyond the ``idle_workers`` kept warm, longest idle first (caller holds the lock)."""
        idle = sorted((w for w in self._workers if not w.busy and not w.retired and w.alive()),
                      key=lambda w: w.idle_since)
        return idle[:max(0, len(idle) - self._idle_target)]

    def retire_idle(self, now: float | None = None) -> int:
        """Retire the workers beyond ``idle_workers`` that have waited ``idle_timeout_seconds`` for a
        run (longest idle first); how many. A retired worker exits once its stdin is closed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            doomed = [w for w in self._idle_beyond_target() if now - w.idle_since >= self._idle_timeout]
            for w in doomed:
                w.close()
            self._workers = [w for w in self._workers if w not in doomed]
        return len(doomed)

    def _watch_idle(self) -> None:
        """Start the thread that retires idle workers, when some are beyond the target (caller holds the lock)."""
        stopped = self._reaper is None or not self._reaper.is_alive()
        if stopped and self._idle_beyond_target() and not self._disposed.is_set():
            self._reaper = threading.Thread(target=self._reap, daemon=True, name="run-worker-reaper")
            self._reaper.start()

    def _reap(self) -> None:
        """Retire idle workers as their time comes; ends when none is beyond the target."""
        while not self._disposed.is_set():
            try:
                self.retire_idle()
                with self._lock:
                    extra = self._idle_beyond_target()
                    if not extra:
                        self._reaper = None
                        return
                    wait = min(w.idle_since for w in extra) + self._idle_timeout - time.monotonic()
            except Exception:  # a reaper must never take the launcher down
                log.exception("retiring idle run workers")
                wait = self._idle_timeout
            self._disposed.wait(max(0.05, min(wait, 60.0)))

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
        # The worker turns SIGINT into an interrupt of its current run (capture_interrupts).
        if _kill(pid, signal.SIGINT):
            threading.Thread(target=self._escalate, args=(run_id, pid), daemon=True,
                             name=f"terminate-{run_id[:8]}").start()
        else:
            self._cancel_if_unfinished(run_id, f"its run worker process {pid} was already gone")
        return True

    def _run_ended(self, run_id: str, pid: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the run to finish or its worker to be gone; whether one happened."""
        deadline = time.monotonic() + timeout
        while True:
            run = self._instance.get_run_by_id(run_id)
            if run is None or run.is_finished or not _alive(pid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _escalate(self, run_id: str, pid: int) -> None:
        """After SIGINT: SIGTERM, then SIGKILL, each once the grace period passed with the run unfinished."""
        try:
            sent = "SIGINT"
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if self._run_ended(run_id, pid, self._grace):
                    break
                log.warning("run %s: worker %s did not stop %gs after %s; sending %s",
                            run_id, pid, self._grace, sent, sig.name)
                if not _kill(pid, sig):
                    break
                sent = sig.name
            else:
                self._run_ended(run_id, pid, self._grace)
            if not _alive(pid):
                self._cancel_if_unfinished(run_id, f"its run worker process {pid} stopped after {sent}")
        except Exception:
            log.exception("terminating run %s", run_id)

    def _cancel_if_unfinished(self, run_id: str, why: str) -> None:
        run = self._instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            self._instance.report_run_canceled(run, message=f"Run terminated: {why}.")

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        pid = self._worker_pid(run.run_id)
        if pid is None:
            # Run monitoring fails a run on any answer but RUNNING, and this launcher cannot see the
            # process of a run it did not start (a code server's, `seqctl materialize --record`):
            # those are left alone, as a launcher without health checks would leave them.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not launched on a warm run worker: not checked")
        if _alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone", run_worker_id=str(pid))

    def dispose(self) -> None:
        self._disposed.set()
        with self._lock:
            workers, self._workers = self._workers, []
        for w in workers:
            w.close()
        super().dispose()


def _restore_interrupts() -> None:
    """Put SIGINT (and SIGTERM) back to Python's defaults in a worker that inherited them ignored.

    A platform started in the background (a shell's ``&``, ``nohup``, a service manager) passes
    SIGINT ignored on to every process it starts, so ``terminate``'s SIGINT would do nothing
    until its SIGTERM; and Dagster's interrupt capture, once left, gives SIGTERM the handler of
    SIGINT, so SIGTERM can come in ignored as well. Safe here only: a worker leads its own
    session, so no terminal's Ctrl-C reaches it, only ``terminate``.
    """
    if os.getsid(0) != os.getpid():
        return
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _worker_main(preload: Sequence[str]) -> int:
    """A run worker: import the code location, then execute the runs read from stdin, one by one."""
    import importlib

    _restore_interrupts()

    from dagster._cli.api import _execute_run_command_body
    from dagster._core.instance import DagsterInstance, InstanceRef
    from dagster._serdes import deserialize_value
    from dagster._utils.interrupts import capture_interrupts, pop_captured_interrupt

    instances: dict[str, DagsterInstance] = {}
    out = sys.stdout
    sys.stdout = sys.stderr  # run output must not mix with the "done" lines the launcher reads
    try:
        # An interrupt while the code location imports is kept, not fatal: its run is canceling by
        # then, and is ended below without being executed.
        with capture_interrupts():
            for name in preload:
                importlib.import_module(name)
            for line in sys.stdin:
                if not line.strip():
                    continue
                msg = json.loads(line)
                ref = msg["instance_ref"]
                if ref not in instances:
                    instances[ref] = DagsterInstance.from_ref(deserialize_value(ref, InstanceRef))
                instance = instances[ref]
                # An interrupt that came between runs was meant for a run that ended first; one
                # meant for this run came after ``terminate`` marked it canceling, seen here.
                pop_captured_interrupt()
                run = instance.get_run_by_id(msg["run_id"])
                if run is not None and run.status == DagsterRunStatus.CANCELING:
                    instance.report_run_canceled(run, message="Run terminated before its run worker started it.")
                elif run is not None and run.status != DagsterRunStatus.CANCELED:
                    try:
                        _execute_run_command_body(msg["run_id"], instance, lambda _event: None,
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


def cancel_runs_in_flight(instance, tag: str, why: str) -> int:
    """Cancel every run carrying ``tag`` that has not finished; how many.

    For a platform that is stopping with what these runs read: ``make dev`` stops its in-memory
    broker, and a stream micro-batch still reading from it would fail (and be retried, on the next
    start, against a broker that has other records at those offsets). Canceled instead, it ends
    gray with the reason, and is not retried. A run on a live warm worker is marked canceling and
    interrupted, so the worker ends it; one whose worker is gone, or that no worker took yet, is
    marked canceled.
    """
    from dagster import RunsFilter

    unfinished = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING,
                  DagsterRunStatus.STARTED]  # a canceling one is being ended already
    runs = [r for r in instance.get_runs(filters=RunsFilter(statuses=unfinished)) if tag in r.tags]
    canceled = 0
    for listed in runs:
        run = instance.get_run_by_id(listed.run_id)  # as it is now: it may have ended since
        if run is None or run.is_finished or run.status == DagsterRunStatus.CANCELING:
            continue
        canceled += 1
        pid = run.tags.get(PID_TAG) or ""
        if run.status == DagsterRunStatus.STARTED and pid.isdigit() and _alive(int(pid)):
            instance.report_run_canceling(run, message=f"Terminating: {why}.")
            if _kill(int(pid), signal.SIGINT):
                continue
        instance.report_run_canceled(run, message=f"Run terminated: {why}.")
    return canceled


def _cancel_on_sigterm(tag: str, why: str) -> int:
    """Wait for SIGTERM (or SIGINT), then :func:`cancel_runs_in_flight`: a stop has no time to import
    Dagster and open the instance, so that is done ahead."""
    from dagster import DagsterInstance

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    with DagsterInstance.get() as instance:
        instance.get_runs(limit=1)  # the storage is open and warm
        print("waiting for SIGTERM to cancel the runs in flight", flush=True)
        while not stopping.wait(3600):
            pass
        print(f"canceled {cancel_runs_in_flight(instance, tag, why)} run(s) in flight", flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--cancel-on-sigterm"]:  # --cancel-on-sigterm TAG WHY (scripts/dev.sh)
        code = _cancel_on_sigterm(sys.argv[2], sys.argv[3])
        os._exit(code)  # done and flushed: tearing down the interpreter can take seconds the stop has not got
    sys.exit(_worker_main(sys.argv[1:]))
