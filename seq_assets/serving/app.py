"""The HTTP API (Starlette on uvicorn, the ASGI stack dagster-webserver already installs).

    GET  /v1/sequences/{feature}/{user_id}?n=&since=&fields=&format=json|arrays&as_of=
    POST /v1/sequences/{feature}/batch   {"user_ids": [...]} and the same options
    GET  /v1/features                    schema, N, window, freshness and completeness per feature
    GET  /healthz                        liveness and what is loaded
    GET  /metrics                        Prometheus text format
    GET  /openapi.json                   the OpenAPI document of all of these

The route table at the end of ``create_app`` registers the routes and, with the request and response
models of ``api.py``, makes the OpenAPI document. Tenants (``tenants.py``), their fair scheduling
(``scheduler.py``) and the metrics (``metrics.py``) each have their own module; this one routes
requests through them to the service.
"""

import contextlib
import logging
import threading
import time

import orjson
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from seq_assets.serving import api
from seq_assets.serving.api import BatchRequest, Endpoint, SequenceOptions
from seq_assets.serving.metrics import Metrics
from seq_assets.serving.scheduler import FairScheduler
from seq_assets.serving.service import RequestError, SequenceService
from seq_assets.serving.tenants import Tenant, Tenants

log = logging.getLogger("seqplat.serve")


def _json(body, status: int = 200) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


def create_app(service: SequenceService, tenants: Tenants | None = None, refresh_seconds: float = 2.0) -> Starlette:
    tenants = tenants or Tenants.load(None)
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
            return _json(e.body(), e.status)
        except Exception:
            status = 500  # counted as the error it is, then answered by Starlette's 500
            raise
        finally:
            labels = (endpoint, label, tenant_name)
            metrics.latency.labels(*labels).observe(time.perf_counter() - t0)
            metrics.requests.labels(*labels, str(status)).inc()
            if status >= 400:
                metrics.errors.labels(*labels, str(status)).inc()

    async def get_sequence(request: Request) -> Response:
        feature = request.path_params["feature"]

        async def work(tenant: Tenant):
            user_id = service.user_id(feature, request.path_params["user_id"])  # the feature's user type
            opts = api.parse(SequenceOptions, dict(request.query_params))
            req = service.parse(feature, **opts.options(), max_n=tenant.max_n)
            service.check_owner([user_id])
            return await scheduler.submit(tenant, lambda: service.run(req, user_id))

        return await handle(request, "sequence", feature, work)

    async def post_batch(request: Request) -> Response:
        feature = request.path_params["feature"]

        async def work(tenant: Tenant):
            try:
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError as e:
                raise RequestError(400, f"body is not JSON: {e}") from None
            batch = api.parse(BatchRequest, body)
            ids = [service.user_id(feature, u, batch=True) for u in batch.user_ids]
            req = service.parse(feature, **batch.options(), max_n=tenant.max_n)
            service.check_owner(ids, batch=True)
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
                      "shard": None if service.shard is None else str(service.shard),
                      "tenants": "local" if tenants.local else len(tenants.by_key)})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc) -> Response:
        return _json({"error": f"no route {request.method} {request.url.path}", "status": 404}, 404)

    async def method_not_allowed(request: Request, exc) -> Response:
        response = _json({"error": f"{request.method} is not allowed on {request.url.path}", "status": 405}, 405)
        response.headers.update(getattr(exc, "headers", None) or {})  # Allow: the methods it takes
        return response

    async def openapi_json(request: Request) -> Response:
        return _json(document)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=refresher, name="refresh", daemon=True).start()
        yield
        stop.set()
        if service.tail is not None:
            service.tail.stop()

    misdirected = (421,) if service.shard is not None else ()  # only a shard answers 421
    endpoints = [
        Endpoint("POST", "/v1/sequences/{feature}/batch", post_batch, "Many users' sequences of one feature",
                 path_params=api.FeaturePath, body=BatchRequest, response=api.Batch, errors=(400, 404, 429, *misdirected),
                 keyed=True),
        Endpoint("GET", "/v1/sequences/{feature}/{user_id}", get_sequence, "A user's sequence",
                 path_params=api.SequencePath, query=SequenceOptions, response=api.Sequence, errors=(400, 404, 429, *misdirected),
                 keyed=True),
        Endpoint("GET", "/v1/features", features, "The features, their schema, N, window, freshness and completeness",
                 response=api.Features, keyed=True),
        Endpoint("GET", "/healthz", healthz, "Liveness and what is loaded", response=api.Health),
        Endpoint("GET", "/metrics", prometheus, "Prometheus metrics", media_type="text/plain"),
        Endpoint("GET", "/openapi.json", openapi_json, "This document"),
    ]
    names = sorted({*service.stores, *(s.feature["name"] for s in service.stores.values())})
    document = api.openapi(endpoints, names, keyed=tenants.local is None)
    return Starlette(
        routes=[Route(e.path, e.handler, methods=[e.method]) for e in endpoints],
        exception_handlers={404: not_found, 405: method_not_allowed},
        lifespan=lifespan,
    )
