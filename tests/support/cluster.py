"""The scale-out stack for tests, on loopback and free ports: Redis (the Celery broker and result
backend), a throwaway PostgreSQL cluster (the Dagster instance every process shares), moto's S3
(the lake; ``tests/support/s3.py``) and K dagster-celery workers. Each part is a child process
started and stopped here (``scripts/stack.sh`` is the same for a shell).

PostgreSQL refuses to run as root: as root (CI is) the cluster is created and run as the
``postgres`` user (``runuser``), in a folder of its own under /tmp that user can reach. Workers run
in sessions of their own and are stopped with SIGTERM, then SIGKILL after a grace period (a process
started with SIGINT ignored keeps it ignored).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, ready, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        with contextlib.suppress(Exception):  # not up yet
            if ready():
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} was not ready after {timeout:.0f} s")


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the process's session, SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({k: v for k, v in (extra or {}).items() if v is not None})
    for k, v in (extra or {}).items():
        if v is None:
            env.pop(k, None)
    return env


def _popen(args: list[str], log: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    # A session of its own: a stop (SIGTERM, which a test process started with SIGINT ignored
    # still delivers) reaches every child of it.
    out = open(log, "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
    finally:
        out.close()


# ---- Redis ----------------------------------------------------------------------------------


@dataclass
class Redis:
    proc: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.proc)


def start_redis(folder: Path) -> Redis:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = _popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", str(folder), "--protected-mode", "no"],
                  folder / "redis.log")
    import redis

    _wait("redis-server", lambda: redis.Redis(host="127.0.0.1", port=port).ping(), proc=proc)
    return Redis(proc, port)


# ---- PostgreSQL -----------------------------------------------------------------------------


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"PostgreSQL's {name} is not installed (make install installs Debian's postgresql)")
    return path


@dataclass
class Postgres:
    folder: str
    port: int
    as_postgres: bool
    database: str = "dagster"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL with the driver named (SQLAlchemy 2.1 defaults to psycopg3, which
        breaks dagster-postgres' NOTIFY)."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        cmd = (["runuser", "-u", "postgres", "--"] if self.as_postgres else []) + args
        return subprocess.run(cmd, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)

    def stop(self) -> None:
        try:
            self._run([pg_bin("pg_ctl"), "-D", f"{self.folder}/data", "-m", "immediate", "-w", "stop"], timeout=60)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> Postgres:
    """A new cluster in a fresh folder under /tmp (the ``postgres`` user must reach it when root),
    trust authentication on loopback only, no fsync; with a ``dagster`` database."""
    as_postgres = os.geteuid() == 0
    folder = tempfile.mkdtemp(prefix="seq-pg-")
    if as_postgres:
        shutil.chown(folder, "postgres", "postgres")
    os.chmod(folder, 0o755)
    pg = Postgres(folder, free_port(), as_postgres)
    data = f"{folder}/data"
    pg._run([pg_bin("initdb"), "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"], timeout=120)
    pg._run([pg_bin("pg_ctl"), "-D", data, "-l", f"{folder}/postgres.log", "-w", "-t", "60",
             "-o", f"-p {pg.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
             "start"], timeout=90)
    pg._run([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", pg.database], timeout=60)
    return pg


def write_instance_yaml(home: Path, postgres_url: str, run_launcher: bool = False) -> Path:
    """A DAGSTER_HOME whose instance keeps runs, events and schedules in Postgres."""
    home.mkdir(parents=True, exist_ok=True)
    text = (f"storage:\n  postgres:\n    postgres_url: \"{postgres_url}\"\n"
            "telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    if run_launcher:
        text += ("run_launcher:\n  module: seq_assets.launcher\n  class: WarmRunLauncher\n"
                 "  config:\n    preload: [seq_assets.definitions]\n    idle_workers: 1\n")
    (home / "dagster.yaml").write_text(text)
    return home


# ---- S3 (moto) in a process of its own ---------------------------------------------------


@dataclass
class MotoProcess:
    proc: subprocess.Popen

    def stop(self) -> None:
        stop_process(self.proc)


def start_moto_process(folder: Path):
    """moto's S3 server as a process of its own (``moto_server``), for a benchmark whose own process
    should not serve S3 under the GIL; returns (MotoProcess, S3Server)."""
    import urllib.request

    from tests.support.s3 import S3Server

    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = _popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], folder / "moto.log")
    _wait("moto_server", lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2), proc=proc)
    return MotoProcess(proc), S3Server(f"http://127.0.0.1:{port}")


# ---- Celery workers -------------------------------------------------------------------------


@dataclass
class Workers:
    procs: list[subprocess.Popen]
    names: list[str]
    broker: str
    logs: list[Path] = field(default_factory=list)

    def ping(self) -> set[str]:
        from celery import Celery

        app = Celery("ping", broker=self.broker)
        try:
            return {name for reply in (app.control.ping(timeout=1.0) or []) for name in reply}
        finally:
            app.close()

    def wait(self, timeout: float = 180.0) -> None:
        """Until every worker answers a ping (stopping them all if one does not)."""
        try:
            _wait(f"{len(self.names)} celery workers", lambda: set(self.names) <= self.ping(), timeout=timeout)
        except (TimeoutError, RuntimeError):
            self.stop()
            tails = "\n".join(log.read_text()[-2000:] for log in self.logs if log.exists())
            raise RuntimeError(f"celery workers did not answer:\n{tails}") from None

    def stop(self) -> None:
        for p in self.procs:
            stop_process(p)


def start_workers(count: int, broker: str, backend: str, env: dict, folder: Path, concurrency: int = 1,
                  wait: bool = True) -> Workers:
    """``count`` dagster-celery workers (``celery -A dagster_celery.app worker``), each taking one
    step at a time, with ``env`` (the ``SEQ_*`` settings) added to this process's environment.
    (The code is imported by each pool process on its first step, not before the fork: polars must
    not be imported by a process that forks.) ``wait=False`` returns at once: call
    ``Workers.wait`` before using them."""
    folder.mkdir(parents=True, exist_ok=True)
    procs, names, logs = [], [], []
    tag = os.urandom(3).hex()
    for i in range(count):
        name = f"seq-{tag}-{i}@127.0.0.1"
        log = folder / f"worker-{i}.log"
        procs.append(_popen([str(VENV_BIN / "celery"), "-A", "dagster_celery.app", "-b", broker,
                             "--result-backend", backend, "worker", "-Q", "dagster", "-n", name,
                             f"--concurrency={concurrency}", "--prefetch-multiplier=1", "--without-gossip",
                             "--without-mingle", "-l", "INFO"],
                            log, env=_child_env({"PYTHONPATH": str(ROOT), **env}), cwd=ROOT))
        names.append(name)
        logs.append(log)
    workers = Workers(procs, names, broker, logs)
    if wait:
        workers.wait()
    return workers


# ---- the whole stack ------------------------------------------------------------------------


@dataclass
class Stack:
    redis: Redis
    postgres: Postgres
    home: Path
    env: dict  # SEQ_* for every process: the lake on S3, the executor and broker
    bucket: object = None  # the S3Bucket of the lake
    workers: Workers | None = None

    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))


@contextmanager
def scale_out_stack(folder: Path, s3, workers: int = 2, extra_env: dict | None = None):
    """Redis, Postgres, a DAGSTER_HOME on it, a bucket on the moto server ``s3`` for the lake, and
    ``workers`` Celery workers with the settings; everything stopped on exit."""
    import json

    from tests.support.s3 import S3Bucket

    started: list = []
    try:
        redis = start_redis(folder / "redis")
        started.append(redis)
        home = folder / "dagster_home"
        bucket = S3Bucket(s3, s3.new_bucket("lake"))
        env = {"SEQ_LAKE_URI": bucket.uri("lake"), "SEQ_STORAGE_OPTIONS": json.dumps(s3.storage_options()),
               "SEQ_EXECUTOR": "celery", "SEQ_CELERY_BROKER": redis.url, "SEQ_CELERY_BACKEND": redis.url,
               "DAGSTER_HOME": str(home), **(extra_env or {})}
        # The workers start while Postgres is created: they need it only once they take a step.
        pool = start_workers(workers, redis.url, redis.url, env, folder / "workers", wait=False) if workers else None
        if pool is not None:
            started.append(pool)
        pg = start_postgres()
        started.insert(1, pg)
        write_instance_yaml(home, pg.url)
        stack = Stack(redis, pg, home, env, bucket=bucket, workers=pool)
        if pool is not None:
            pool.wait()
        yield stack
    finally:
        for part in reversed(started):
            part.stop()
