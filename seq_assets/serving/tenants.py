"""Tenants of the serving API: who may read which feature, with which limits.

No tenants file: local mode, one tenant that needs no key. With a file (``SEQ_TENANTS_FILE``), a key
per tenant::

    tenants:
      ranking: {key: "secret-1", features: [engagements_v1], max_n: 500, max_concurrency: 16}
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

import yaml

from seq_assets.serving.service import RequestError

LOCAL_TENANT = "local"


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
