"""Fair scheduling: each tenant's requests wait in their own queue, served in turn.

One worker on the event loop serves the queues round-robin, so a tenant flooding the server delays
the others by at most one of its requests at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque

from seq_assets.serving.service import RequestError
from seq_assets.serving.tenants import Tenant


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
