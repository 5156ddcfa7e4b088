"""``seqctl serve``: the serving API over the lake, following the stream.

It stops within ``STOP_SECONDS`` of SIGTERM (what container platforms and ``make dev`` send) or
SIGINT, also when started with SIGINT ignored (uvicorn installs its own handlers for both): requests
in flight get ``DRAIN_SECONDS`` to finish, then the app's shutdown runs (the lake refresher and the
stream tail stop; a tail waiting on a broker that is down can take longer than that), and whatever
is still running when the time is up is left to the process exit. ``STOP_SECONDS`` is below the 3 s
``make dev`` gives each child before SIGKILL (scripts/supervise.sh).

``--shard I/N`` serves one shard of the users (``seq_assets.serving.shards``); ``--workers K`` runs K
worker processes on one port (SO_REUSEPORT: the kernel spreads connections), sharing one memory-mapped
copy of each snapshot (``seq_assets.serving.shared``). The parent only supervises: on SIGTERM,
SIGINT or SIGHUP it sends the workers SIGTERM (each stops as one server does), SIGKILLs any left
after ``STOP_SECONDS`` and removes the shared folder. See docs/serving-scale.md.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

from seq_assets import settings

log = logging.getLogger("seqplat.serve")

STOP_SECONDS = 2.5
DRAIN_SECONDS = 1
READY_TIMEOUT_S = 900  # how long a loaded worker waits for the others before it serves alone


def _exit_after(seconds: float, code: int) -> None:
    """Leave the process ``seconds`` from now, whatever holds it (a daemon timer: it holds nothing)."""
    def leave():
        log.warning("still stopping %.0fs after the signal; exiting", seconds)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)

    timer = threading.Timer(seconds, leave)
    timer.daemon = True
    timer.start()


def _shard(args):
    from seq_assets.serving.shards import Shard

    if not args.shard:
        return None
    urls = [u.strip() for u in args.shard_urls.split(",") if u.strip()] if args.shard_urls else settings.serve_shard_urls()
    return Shard.parse(args.shard, urls)


def cmd_serve(args) -> int:
    from seq_assets.serving.shards import ShardError

    try:
        shard = _shard(args)
    except ShardError as e:
        print(f"seqctl serve: {e}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"seqctl serve: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    if args.workers > 1:
        return _serve_workers(args, shard)
    return _serve(args, shard)


def _serve(args, shard, shared_dir: str | None = None, ready=None) -> int:
    """One server process; a worker's ``ready()``, called once it has loaded, returns its socket."""
    import uvicorn

    from seq_assets.serving.app import create_app
    from seq_assets.serving.service import SequenceService
    from seq_assets.serving.tail import KafkaTail
    from seq_assets.serving.tenants import Tenants

    t = time.time()
    service = SequenceService(settings.load_compiled(), settings.lake(), shard=shard, shared_dir=shared_dir)
    log.warning("loaded %s in %.1fs%s", {k: s.snapshot.users for k, s in service.stores.items()}, time.time() - t,
                f" (shard {shard})" if shard else "")
    if not args.no_tail:
        KafkaTail(service, args.bootstrap or settings.kafka_bootstrap()).start()
    app = create_app(service, tenants=Tenants.load(settings.tenants_file()), refresh_seconds=args.refresh)
    sock = ready() if ready is not None else None
    if sock is None:
        print(f"serving on http://{args.host}:{args.port}" + (f" (shard {shard})" if shard else ""), flush=True)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if not self.should_exit:
                _exit_after(STOP_SECONDS, 128 + sig)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", loop="uvloop",
                            http="httptools", access_log=False, timeout_graceful_shutdown=DRAIN_SECONDS)
    server = Server(config)
    try:
        server.run(sockets=None if sock is None else [sock])
    except KeyboardInterrupt:  # uvicorn raises the SIGINT it stopped on again once it has stopped
        pass
    return 0 if server.started else 3  # 3: it never served (the port is taken), as uvicorn.run exits


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when its parent dies (a SIGKILLed supervisor leaves no workers)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _listening_socket(host: str, port: int, listen: bool) -> socket.socket:
    """A TCP socket on ``host:port`` with SO_REUSEPORT: the workers' listening sockets share the port
    and the kernel spreads new connections over them (one socket shared by all, each worker's accept
    loop races the others and the first awake takes a burst of connections)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(2048)
    return sock


def _worker(args, shard, port: int, shared_dir: str, loaded) -> None:
    _die_with_parent()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s worker %(process)d %(name)s: %(message)s")

    def ready():
        # No worker accepts before every worker has loaded: an answer from the port means all of
        # them serve (the first to load would otherwise take every connection while the rest load).
        try:
            loaded.wait(timeout=READY_TIMEOUT_S)
        except threading.BrokenBarrierError:
            log.warning("not every worker loaded (one exited, or %ss passed): serving anyway", READY_TIMEOUT_S)
        return _listening_socket(args.host, port, listen=True)

    sys.exit(_serve(args, shard, shared_dir, ready))


def _serve_workers(args, shard) -> int:
    """K workers on one port, sharing the snapshots in one folder; this process supervises.

    The port is bound here first (not listening: it takes no connections) so that a taken port fails
    at once (only sockets of the same user with SO_REUSEPORT can share it); each worker listens on it
    with SO_REUSEPORT once every worker has loaded."""
    from seq_assets.serving.shared import default_dir

    try:
        sock = _listening_socket(args.host, args.port, listen=False)
    except OSError as e:
        print(f"seqctl serve: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 3
    port = sock.getsockname()[1]
    owned_dir = args.shared_dir is None
    shared_dir = args.shared_dir or tempfile.mkdtemp(prefix="seqserve-", dir=default_dir())
    stop = threading.Event()
    got: list[int] = []

    def on_signal(sig, frame):
        got.append(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold polars' threads
    loaded = ctx.Barrier(args.workers)
    workers = [ctx.Process(target=_worker, args=(args, shard, port, shared_dir, loaded), name=f"serve-worker-{i}")
               for i in range(args.workers)]
    try:
        for w in workers:
            w.start()
        print(f"serving on http://{args.host}:{port} with {args.workers} workers"
              + (f" (shard {shard})" if shard else "") + f", snapshots shared in {shared_dir}", flush=True)
        while not stop.wait(0.2):
            if not all(w.is_alive() for w in workers):
                loaded.abort()  # a worker that died while loading: the others serve without it
            if not any(w.is_alive() for w in workers):
                log.warning("every worker has exited")
                break
    finally:
        for w in workers:
            if w.is_alive() and w.pid:
                os.kill(w.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS + 0.5
        for w in workers:
            if w.pid:
                w.join(timeout=max(0.0, deadline - time.monotonic()))
        for w in workers:
            if w.is_alive():
                w.kill()
                w.join(timeout=1)
        sock.close()
        if owned_dir:
            shutil.rmtree(shared_dir, ignore_errors=True)
    if got:
        return 128 + got[0]
    return 0 if all(w.exitcode == 0 for w in workers) else 1


def add_serve_command(sub) -> None:
    p = sub.add_parser("serve", help="serve sequences over HTTP (default 127.0.0.1:8000)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--bootstrap", default=None, help="Kafka to follow for fresh events (default SEQ_KAFKA_BOOTSTRAP)")
    p.add_argument("--no-tail", action="store_true", help="do not follow the stream; serve the lake only")
    p.add_argument("--refresh", type=float, default=2.0, help="seconds between lake refreshes")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="serve only shard I of N of the users (the stable user hash); others get a 421")
    p.add_argument("--shard-urls", default=None, metavar="URL,URL,...",
                   help="where each shard answers, in shard order, named in 421s (default SEQ_SERVE_SHARDS)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes sharing one port and one memory-mapped copy of the snapshots")
    p.add_argument("--shared-dir", default=None,
                   help="the folder the workers share snapshots in (default a fresh one in /dev/shm, removed on exit)")
    p.set_defaults(fn=cmd_serve)
