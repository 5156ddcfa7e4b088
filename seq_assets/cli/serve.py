"""``seqctl serve``: the serving API over the lake, following the stream."""

from __future__ import annotations

import logging
import time

from seq_assets import settings

log = logging.getLogger("seqplat.serve")


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
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", loop="uvloop", http="httptools",
                access_log=False)
    return 0


def add_serve_command(sub) -> None:
    p = sub.add_parser("serve", help="serve sequences over HTTP (default 127.0.0.1:8000)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--bootstrap", default=None, help="Kafka to follow for fresh events (default SEQ_KAFKA_BOOTSTRAP)")
    p.add_argument("--no-tail", action="store_true", help="do not follow the stream; serve the lake only")
    p.add_argument("--refresh", type=float, default=2.0, help="seconds between lake refreshes")
    p.set_defaults(fn=cmd_serve)
