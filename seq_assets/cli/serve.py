"""``seqctl serve``: the serving API over the lake, following the stream.

It stops within ``STOP_SECONDS`` of SIGTERM (what container platforms and ``make dev`` send) or
SIGINT, also when started with SIGINT ignored (uvicorn installs its own handlers for both): requests
in flight get ``DRAIN_SECONDS`` to finish, then the app's shutdown runs (the lake refresher and the
stream tail stop; a tail waiting on a broker that is down can take longer than that), and whatever
is still running when the time is up is left to the process exit. ``STOP_SECONDS`` is below the 3 s
``make dev`` gives each child before SIGKILL (scripts/supervise.sh).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time

from seq_assets import settings

log = logging.getLogger("seqplat.serve")

STOP_SECONDS = 2.5
DRAIN_SECONDS = 1


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


def cmd_serve(args) -> int:
    import uvicorn

    from seq_assets.serving.app import create_app
    from seq_assets.serving.service import SequenceService
    from seq_assets.serving.tail import KafkaTail
    from seq_assets.serving.tenants import Tenants

    t = time.time()
    service = SequenceService(settings.load_compiled(), settings.lake())
    log.warning("loaded %s in %.1fs", {k: s.snapshot.users for k, s in service.stores.items()}, time.time() - t)
    if not args.no_tail:
        KafkaTail(service, args.bootstrap or settings.kafka_bootstrap()).start()
    app = create_app(service, tenants=Tenants.load(settings.tenants_file()), refresh_seconds=args.refresh)
    print(f"serving on http://{args.host}:{args.port}", flush=True)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if not self.should_exit:
                _exit_after(STOP_SECONDS, 128 + sig)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", loop="uvloop",
                            http="httptools", access_log=False, timeout_graceful_shutdown=DRAIN_SECONDS)
    server = Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn raises the SIGINT it stopped on again once it has stopped
        pass
    return 0 if server.started else 3  # 3: it never served (the port is taken), as uvicorn.run exits


def add_serve_command(sub) -> None:
    p = sub.add_parser("serve", help="serve sequences over HTTP (default 127.0.0.1:8000)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--bootstrap", default=None, help="Kafka to follow for fresh events (default SEQ_KAFKA_BOOTSTRAP)")
    p.add_argument("--no-tail", action="store_true", help="do not follow the stream; serve the lake only")
    p.add_argument("--refresh", type=float, default=2.0, help="seconds between lake refreshes")
    p.set_defaults(fn=cmd_serve)
