"""A routing client for sharded serving: each request goes to the shard that owns its user.

    client = ShardedClient(["http://10.0.0.1:8000", "http://10.0.0.2:8000"])  # shard 0, shard 1
    client.sequence("engagements_v1", 42, n=50)
    client.batch("engagements_v1", [42, 7, 9])    # split by owner, answered in the order asked

The owner of a user is ``user_bucket_of(user_id, len(urls))`` (``seq_assets.core.buckets``), the
rule the shards themselves follow; a server that answers 421 anyway (a shard map that changed) is
asked once more at the URL its answer names. Standard library only (``http.client``), one kept-alive
connection per shard; one client per thread.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import quote, urlencode, urlsplit

from seq_assets.core.buckets import user_bucket_of


class ServingError(Exception):
    """A non-200 answer: ``status`` and the error ``body`` (a dict)."""

    def __init__(self, status: int, body: dict):
        super().__init__(f"{status}: {body.get('error', body)}")
        self.status, self.body = status, body


class ShardedClient:
    def __init__(self, urls: list[str], headers: dict[str, str] | None = None, timeout: float = 10.0):
        """``urls``: where shard 0, 1, ... answer (one URL: an unsharded server)."""
        if not urls:
            raise ValueError("a ShardedClient needs the URL of every shard, in shard order")
        self.urls = [u.rstrip("/") for u in urls]
        self.headers = dict(headers or {})
        self.timeout = timeout
        self._conns: dict[str, http.client.HTTPConnection] = {}

    def owner(self, user_id: int | str) -> int:
        return user_bucket_of(user_id, len(self.urls))

    # ---- requests -----------------------------------------------------------------------------

    def sequence(self, feature: str, user_id: int | str, **params) -> dict:
        """``GET /v1/sequences/{feature}/{user_id}`` at the owner shard; ``params`` as the API's query."""
        query = urlencode({k: v for k, v in params.items() if v is not None})
        path = f"/v1/sequences/{quote(feature, safe='')}/{quote(str(user_id), safe='')}" + (f"?{query}" if query else "")
        return self._call(self.urls[self.owner(user_id)], "GET", path, None)

    def batch(self, feature: str, user_ids: list, **params) -> dict:
        """``POST /v1/sequences/{feature}/batch``, one request per owner shard; results in the order asked."""
        parts: dict[int, list[int]] = {}
        for i, u in enumerate(user_ids):
            parts.setdefault(self.owner(u), []).append(i)
        results: list = [None] * len(user_ids)
        table = feature
        path = f"/v1/sequences/{quote(feature, safe='')}/batch"
        for shard, idx in parts.items():
            body = {"user_ids": [user_ids[i] for i in idx], **{k: v for k, v in params.items() if v is not None}}
            answer = self._call(self.urls[shard], "POST", path, body)
            table = answer["feature"]
            for i, r in zip(idx, answer["results"], strict=True):
                results[i] = r
        if not user_ids:  # still one request, so an unknown feature is an error as on one server
            table = self._call(self.urls[0], "POST", path, {"user_ids": [], **params})["feature"]
        return {"feature": table, "results": results}

    def get(self, path: str, shard: int = 0) -> dict:
        """Any GET of one shard (``/healthz``, ``/v1/features``)."""
        return self._call(self.urls[shard], "GET", path, None)

    def close(self) -> None:
        for c in self._conns.values():
            c.close()
        self._conns.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- transport ----------------------------------------------------------------------------

    def _call(self, base: str, method: str, path: str, body: dict | None, redirected: bool = False) -> dict:
        status, answer = self._send(base, method, path, body)
        if status == 421 and not redirected and answer.get("url"):  # the server knows a newer map
            return self._call(answer["url"], method, path, body, redirected=True)
        if status != 200:
            raise ServingError(status, answer)
        return answer

    def _send(self, base: str, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, **({"Content-Type": "application/json"} if data is not None else {})}
        for attempt in (0, 1):  # a kept-alive connection the server closed: once more on a new one
            conn = self._conn(base)
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else {}
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                self._conns.pop(base, None)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _conn(self, base: str) -> http.client.HTTPConnection:
        conn = self._conns.get(base)
        if conn is None:
            u = urlsplit(base)
            cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
            conn = self._conns[base] = cls(u.hostname, u.port, timeout=self.timeout)
        return conn
