"""The HTTP API (Starlette on uvicorn, the ASGI stack dagster-webserver already installs).

    GET  /v1/sequences/{feature}/{user_id}?n=&since=&fields=&format=json|arrays&as_of=
    POST /v1/sequences/{feature}/batch   {"user_ids": [...]} and the same options
    GET  /v1/features                    schema, N, window, freshness and completeness per feature
    GET  /healthz                        liveness and what is loaded
    GET  /metrics                        Prometheus text format

Requests of each tenant wait in their own queue and a single worker serves the queues in turn, so
a tenant flooding the server delays the others by at most one of its requests at a time.
"""

import asyncio
import contextlib
import hmac
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import orjson
import yaml
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seq_assets.serving.service import RequestError, SequenceService

log = logging.getLogger("seqplat.serve")
MAX_BATCH_USERS = 1000
LOCAL_TENANT = "local"


# ---- tenants -----------------------------------------------------------------------------------


@dataclass
class Tenant:
    name: str
    key: str | None
    features: list[str]
    max_n: int | None = None
    max_concurrency: int = 16

    def may_read(self, table: str, name: str) -> bool:
        return "*" in self.features or table in self.features or name in self.features


@dataclass
class Tenants:
    """No file: local mode, one tenant that needs no key. With a file: a key per tenant."""

    by_key: dict[str, Tenant] = field(default_factory=dict)
    local: Tenant | None = None

    @classmethod
    def load(cls, path: str | None) -> "Tenants":
        if not path:
            return cls(local=Tenant(LOCAL_TENANT, None, ["*"], None, 64))
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
        raw = doc.get("tenants")
        if not isinstance(raw, dict) or not raw:
            raise ValueError(f"{path}: expected a 'tenants:' mapping of tenant name to settings")
        out = cls()
        for name, t in raw.items():
            if not isinstance(t, dict) or not t.get("key"):
                raise ValueError(f"{path}: tenant {name!r} needs a 'key'")
            feats = t.get("features") or []
            if not isinstance(feats, list):
                raise ValueError(f"{path}: tenant {name!r}: 'features' must be a list")
            out.by_key[str(t["key"])] = Tenant(name, str(t["key"]), [str(x) for x in feats],
                                              int(t["max_n"]) if t.get("max_n") else None,
                                              int(t.get("max_concurrency", 16)))
        return out

    def authenticate(self, key: str | None) -> Tenant:
        if self.local is not None:
            return self.local
        if not key:
            raise RequestError(401, "missing X-API-Key header")
        for k, tenant in self.by_key.items():
            if hmac.compare_digest(k.encode(), key.encode()):
                return tenant
        raise RequestError(401, "unknown API key")


# ---- fair scheduling ---------------------------------------------------------------------------


class FairScheduler:
    """Per-tenant FIFO queues served round-robin by one worker on the event loop."""

    def __init__(self):
        self.queues: dict[str, deque] = {}
        self.pending: dict[str, int] = {}
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def submit(self, tenant: Tenant, fn):
        self._ensure_worker()
        if self.pending.get(tenant.name, 0) >= tenant.max_concurrency:
            raise RequestError(429, f"tenant {tenant.name!r} has {tenant.max_concurrency} requests in flight (its limit)")
        fut = asyncio.get_running_loop().create_future()
        self.queues.setdefault(tenant.name, deque()).append((fn, fut))
        self.pending[tenant.name] = self.pending.get(tenant.name, 0) + 1
        self._wake.set()
        try:
            return await fut
        finally:
            self.pending[tenant.name] -= 1

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while any(self.queues.values()):
                for name in list(self.queues):
                    q = self.queues[name]
                    if not q:
                        continue
                    fn, fut = q.popleft()
                    if fut.cancelled():
                        continue
                    try:
                        fut.set_result(fn())
                    except Exception as e:  # noqa: BLE001 - handed to the request that asked
                        fut.set_exception(e)
                    await asyncio.sleep(0)  # let new requests in between two jobs


# ---- the app -----------------------------------------------------------------------------------


class Metrics:
    def __init__(self, service: SequenceService):
        self.registry = CollectorRegistry()
        buckets = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
        self.latency = Histogram("seq_request_latency_seconds", "Request latency", ["endpoint", "feature", "tenant"],
                                 buckets=buckets, registry=self.registry)
        self.requests = Counter("seq_requests_total", "Requests", ["endpoint", "feature", "tenant", "status"],
                                registry=self.registry)
        self.errors = Counter("seq_request_errors_total", "Requests answered with an error", ["endpoint", "feature", "tenant", "status"],
                              registry=self.registry)
        self.freshness = Gauge("seq_freshness_lag_seconds", "Seconds since the newest event seen, per source",
                               ["source"], registry=self.registry)
        self.tail_records = Gauge("seq_stream_tail_records", "Records read by the serving stream tail",
                                  registry=self.registry)
        self.service = service

    def render(self) -> bytes:
        for source, lag in self.service.freshness().items():
            self.freshness.labels(source).set(lag if lag is not None else float("nan"))
        if self.service.tail is not None:
            self.tail_records.set(self.service.tail.records)
        return generate_latest(self.registry)


def _json(body, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


def create_app(service: SequenceService, tenants: Tenants | None = None, refresh_seconds: float = 2.0) -> Starlette:
    tenants = tenants or Tenants.load(os.environ.get("SEQ_TENANTS_FILE"))
    scheduler = FairScheduler()
    metrics = Metrics(service)
    stop = threading.Event()

    def refresher():
        while not stop.wait(refresh_seconds):
            try:
                service.refresh()
            except Exception as e:  # noqa: BLE001 - keep serving the last good state
                log.warning("refresh failed: %s", e)

    async def handle(request: Request, endpoint: str, feature: str, work) -> Response:
        t0 = time.perf_counter()
        tenant_name = "unknown"
        # The feature label is a known table name (or "unknown"), never the client's text: a label
        # per path a client makes up would grow the registry without bound.
        label = "-" if not feature else (feature if feature in service.stores else "unknown")
        status = 200
        try:
            tenant = tenants.authenticate(request.headers.get("x-api-key"))
            tenant_name = tenant.name
            if feature:
                store = service.store(feature)
                label = store.table
                if not tenant.may_read(store.table, store.feature["name"]):
                    raise RequestError(403, f"tenant {tenant.name!r} may not read feature {store.table!r}")
                feature = store.table
            body = await work(tenant)
            return _json(body)
        except RequestError as e:
            status = e.status
            return _json({"error": e.message, "status": e.status}, e.status)
        except Exception:
            status = 500  # counted as the error it is, then answered by Starlette's 500
            raise
        finally:
            labels = (endpoint, label, tenant_name)
            metrics.latency.labels(*labels).observe(time.perf_counter() - t0)
            metrics.requests.labels(*labels, str(status)).inc()
            if status >= 400:
                metrics.errors.labels(*labels, str(status)).inc()

    def options(request: Request, tenant: Tenant, body: dict | None = None) -> dict:
        src = body if body is not None else request.query_params
        return {"n": src.get("n"), "since": src.get("since"), "fields": src.get("fields"),
                "fmt": src.get("format"), "as_of": src.get("as_of"), "max_n": tenant.max_n}

    async def get_sequence(request: Request) -> Response:
        feature = request.path_params["feature"]

        async def work(tenant: Tenant):
            raw = request.path_params["user_id"]
            try:
                user_id = int(raw)
            except ValueError:
                raise RequestError(400, f"user_id must be an integer, got {raw!r}") from None
            if not -(2**63) <= user_id < 2**63:
                raise RequestError(400, f"user_id {raw} is out of range (a 64-bit integer)")
            opts = options(request, tenant)
            req = service.parse(feature, **opts)
            return await scheduler.submit(tenant, lambda: service.run(req, user_id))

        return await handle(request, "sequence", feature, work)

    async def post_batch(request: Request) -> Response:
        feature = request.path_params["feature"]

        async def work(tenant: Tenant):
            try:
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError as e:
                raise RequestError(400, f"body is not JSON: {e}") from None
            if not isinstance(body, dict) or not isinstance(body.get("user_ids"), list):
                raise RequestError(400, 'body must be {"user_ids": [...]} plus optional n, since, fields, format, as_of')
            ids = body["user_ids"]
            if len(ids) > MAX_BATCH_USERS:
                raise RequestError(400, f"at most {MAX_BATCH_USERS} user_ids per batch, got {len(ids)}")
            if not all(isinstance(u, int) and not isinstance(u, bool) for u in ids):
                raise RequestError(400, "user_ids must be integers")
            fields = body.get("fields")
            if isinstance(fields, list):
                body["fields"] = ",".join(map(str, fields))
            req = service.parse(feature, **options(request, tenant, body))
            return await scheduler.submit(tenant, lambda: {"feature": req.feature,
                                                           "results": [service.run(req, u) for u in ids]})

        return await handle(request, "batch", feature, work)

    async def features(request: Request) -> Response:
        async def work(tenant: Tenant):
            return {"features": [f for f in service.features() if tenant.may_read(f["feature"], f["name"])]}

        return await handle(request, "features", "", work)

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok", "features": {t: s.snapshot.users for t, s in service.stores.items()},
                      "snapshot_days": {t: str(s.snapshot.day) for t, s in service.stores.items()},
                      "stream_tail": service.tail is not None and service.tail.alive(),
                      "tenants": "local" if tenants.local else len(tenants.by_key)})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc) -> Response:
        return _json({"error": f"no route {request.method} {request.url.path}", "status": 404}, 404)

    async def method_not_allowed(request: Request, exc) -> Response:
        return _json({"error": f"{request.method} is not allowed on {request.url.path}", "status": 405}, 405)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=refresher, name="refresh", daemon=True).start()
        yield
        stop.set()
        if service.tail is not None:
            service.tail.stop()

    return Starlette(
        routes=[
            Route("/v1/sequences/{feature}/batch", post_batch, methods=["POST"]),
            Route("/v1/sequences/{feature}/{user_id}", get_sequence, methods=["GET"]),
            Route("/v1/features", features, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: method_not_allowed},
        lifespan=lifespan,
    )


# ---- seqctl serve ------------------------------------------------------------------------------


def cmd_serve(args) -> int:
    import uvicorn

    from seq_assets import config
    from seq_assets.serving.tail import KafkaTail

    t = time.time()
    service = SequenceService()
    log.warning("loaded %s in %.1fs", {k: s.snapshot.users for k, s in service.stores.items()}, time.time() - t)
    if not args.no_tail:
        KafkaTail(service, args.bootstrap or config.kafka_bootstrap()).start()
    app = create_app(service, refresh_seconds=args.refresh)
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
