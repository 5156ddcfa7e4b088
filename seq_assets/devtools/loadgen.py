"""A cheap HTTP load generator for the serving API: keep-alive connections on raw asyncio sockets.

Used by ``bench/serve.py`` and the serving tests. Each connection sends GET requests for ``paths``
in turn and reads each response (status line, headers, ``Content-Length`` body) before the next,
so a latency is one request's round trip.
"""

from __future__ import annotations

import asyncio
import time


async def _one_client(port: int, request_bytes: list[bytes], deadline: float, budget: list[int],
                      statuses: dict, lat_ok: list, lat_all: list, offset: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            req = request_bytes[i % len(request_bytes)]
            i += 1
            t = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length = next(int(x.split(":", 1)[1]) for x in lines[1:] if x.lower().startswith("content-length:"))
            await reader.readexactly(length)
            dt = time.perf_counter() - t
            statuses[status] = statuses.get(status, 0) + 1
            lat_all.append(dt)
            if status == 200:
                lat_ok.append(dt)
    finally:
        writer.close()


def flood(port: int, paths: list[str], headers: dict, seconds: float, concurrency: int,
          max_requests: int | None = None, stride: int = 7) -> dict:
    """``concurrency`` keep-alive connections sending GET ``paths`` in turn until ``seconds`` passed or
    ``max_requests`` were sent. Connection k starts at path ``k * stride``.

    Returns statuses (count per HTTP status), ``lat_ok`` and ``lat_all`` (seconds per request, of
    the 200s and of all) and the wall ``seconds``.
    """
    hdr = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    reqs = [f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n{hdr}\r\n".encode() for p in paths]
    statuses: dict[int, int] = {}
    lat_ok: list[float] = []
    lat_all: list[float] = []
    budget = [max_requests if max_requests is not None else 1 << 62]

    async def main():
        deadline = time.monotonic() + seconds
        await asyncio.gather(*[_one_client(port, reqs, deadline, budget, statuses, lat_ok, lat_all, k * stride)
                               for k in range(concurrency)])

    t = time.perf_counter()
    asyncio.run(main())
    return {"statuses": statuses, "lat_ok": lat_ok, "lat_all": lat_all, "seconds": time.perf_counter() - t}
