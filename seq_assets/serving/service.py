"""The serving contract in-process: request feature X for user U, get a well-defined sequence.

``SequenceService.get`` runs fetch -> filter -> enrich -> size -> featurize. It has no HTTP in it,
so tests, benchmarks and the HTTP app (``seq_assets.serving.app``) all call the same code.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone

import numpy as np
import polars as pl

from seq_assets.core.compiled import Compiled
from seq_assets.core.days import today_utc
from seq_assets.serving import enrich, featurize, size
from seq_assets.serving import filter as filter_stage
from seq_assets.serving.fetch import FeatureStore, Snapshot
from seq_assets.serving.shards import Shard
from seq_assets.serving.shared import SharedSnapshots
from seq_assets.storage.lake import Lake, add_actions, local_path

_DURATION = re.compile(r"^(\d+)\s*(ms|s|m|h|d|w)$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
FORMATS = ("json", "arrays")


class RequestError(Exception):
    """A bad request: ``status`` is the HTTP status to answer with, ``message`` says what is wrong."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message

    def body(self) -> dict:
        return {"error": self.message, "status": self.status}


class Misdirected(RequestError):
    """421: a sharded server asked for users another shard owns; ``owners`` says which shard owns whom."""

    def __init__(self, message: str, shard: Shard, owners: dict[int, list], batch: bool):
        super().__init__(421, message)
        self.shard, self.owners, self.batch = shard, owners, batch

    def body(self) -> dict:
        out = {**super().body(), "shards": self.shard.count}
        if not self.batch:
            (owner,) = self.owners
            return {**out, "shard": owner, "url": self.shard.url(owner)}
        return {**out, "owners": [{"shard": o, "url": self.shard.url(o), "user_ids": ids}
                                  for o, ids in sorted(self.owners.items())]}


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_time(value: str | int, now: int, what: str) -> int:
    """An ISO time (``2026-03-01`` or ``2026-03-01T12:00:00Z``), epoch ms (text or a whole number), or a
    duration back from now (``7d``)."""
    v = str(value).strip()
    m = _DURATION.match(v)
    if m:
        return now - int(m.group(1)) * _UNIT_MS[m.group(2)]
    if v.isdecimal():  # not isdigit: "²" is a digit int() does not read
        return int(v)
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise RequestError(400, f"bad {what} {value!r}: use an ISO time (2026-03-01T12:00:00Z), epoch ms, "
                                f"or a duration such as 30m, 12h, 7d") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


@dataclass
class Request:
    feature: str
    n: int
    start_ms: int
    end_ms: int | None
    fields: list[str]
    fmt: str


class SequenceService:
    def __init__(self, compiled: Compiled, lake: Lake, shard: Shard | None = None,
                 shared_dir: str | None = None):
        """``shard``: serve only that shard's users (others are a 421); ``shared_dir``: the folder the
        worker processes of one server share their snapshots in (``serving.shared``)."""
        self.compiled = compiled
        self.lake = lake
        self.shard = shard if shard is not None and shard.count > 1 else None
        shared = None if shared_dir is None else SharedSnapshots(shared_dir, Snapshot, str(self.shard or "all"))
        self.stores = {t: FeatureStore(self.compiled, t, self.lake, self.shard, shared) for t in self.compiled.features}
        self.enrichers = enrich.build(self.compiled, self.lake)
        self.serving_cols = {c for e in self.compiled.lookups("serving") for c in e["columns"]}
        self._lake_files: dict[str, set[str]] = {}
        self._lake_versions: dict[str, int] = {}  # the events/ version each poll read up to
        self._refresh_lock = threading.Lock()
        self.last_refresh: float | None = None
        self.tail = None  # a KafkaTail, when the stream is followed
        self.refresh()

    # ---- keeping up to date -----------------------------------------------------------------

    def refresh(self) -> None:
        """Swap in a newer closed snapshot, the newest enrichment snapshots, and newly indexed events."""
        with self._refresh_lock:
            today = today_utc()
            for store in self.stores.values():
                day = self._closed_day(store.table, today)
                if day is not None and day != store.snapshot.day:
                    store.load_snapshot(day)
            for e in self.enrichers.values():
                e.refresh(today)
            self._poll_events()
            self.last_refresh = time.time()

    def _closed_day(self, table: str, today: date) -> date | None:
        lf = self.lake.scan("sequences", table, end=today)
        if lf is None:
            return None
        days = lf.select(pl.col("date").unique()).collect().get_column("date").sort().to_list()
        closed = [d for d in days if d < today]
        return closed[-1] if closed else (days[-1] if days else None)

    def _poll_events(self) -> None:
        """Read the ``events/`` files added since the last poll for days after the oldest snapshot, and
        those added to earlier days after that snapshot was written (late events the stream indexed).

        A file a compaction wrote holds rows of files already read or in the snapshot: the files it
        replaced that are neither are read instead (they stay on storage for the vacuum retention).
        """
        days = [s.snapshot.day for s in self.stores.values()]
        since = min((d for d in days if d is not None), default=None)
        written = [s.snapshot.written_ms for s in self.stores.values() if s.snapshot.day is not None]
        written_ms = None if not written or None in written else min(written)
        wanted = {et for s in self.stores.values() for et in s.feature["event_types"]}
        later = None  # the files holding events the snapshots do not (every file before the first)
        if since is not None:
            later = pl.col("partition.date") > since
            if written_ms is not None:
                later = later | (pl.col("modification_time") > written_ms)
        for et in wanted:
            t = self.lake.table("events", et)
            if t is None:
                continue
            adds = add_actions(t)
            if later is not None and "partition.date" in adds.columns:
                adds = adds.filter(later)
            root = (local_path(t.table_uri) or t.table_uri).rstrip("/")
            uris = {f"{root}/{p}" for p in adds.get_column("path").to_list()}
            seen = self._lake_files.setdefault(et, set())
            new = uris - seen
            last, self._lake_versions[et] = self._lake_versions.get(et), t.version()
            if new and last is not None:
                for c in self._compactions(et, last, t):
                    wrote = {f"{root}/{p}" for p in c.wrote}
                    replaced = c.replaced if later is None else c.replaced.filter(later)
                    seen |= wrote
                    new = (new - wrote) | ({f"{root}/{p}" for p in replaced.get_column("path").to_list()} - seen)
            new = sorted(new)
            if not new:
                continue
            df = pl.read_parquet(new, hive_partitioning=False, storage_options=self.lake.storage_options)
            seen.update(new)
            for store in self.stores.values():
                if et in store.feature["event_types"]:
                    store.add_fresh(df)

    def _compactions(self, event_type: str, after: int, table):
        try:
            return self.lake.compactions("events", event_type, after, table)
        except Exception:  # noqa: BLE001 - a version no longer readable: read what the compactions wrote
            return []

    # ---- requests ---------------------------------------------------------------------------

    def store(self, feature: str) -> FeatureStore:
        if feature in self.stores:
            return self.stores[feature]
        try:
            f = self.compiled.feature(feature)
        except KeyError:
            raise RequestError(404, f"unknown feature {feature!r}; known features: {', '.join(sorted(self.stores))}") from None
        return self.stores[f"{f['name']}_v{f['version']}"]

    def parse(self, feature: str, n=None, since=None, fields=None, fmt=None, as_of=None, max_n: int | None = None) -> Request:
        store = self.store(feature)
        f = store.feature
        cap = f["max_length"] if max_n is None else min(f["max_length"], max_n)
        if n is None or n == "":
            n = cap
        else:
            try:
                n = int(n)
            except (TypeError, ValueError):
                raise RequestError(400, f"n must be a whole number, got {n!r}") from None
            if not 1 <= n <= cap:
                why = f"the feature's N is {f['max_length']}" if cap == f["max_length"] else f"your limit is {cap}"
                raise RequestError(400, f"n={n} out of range: must be between 1 and {cap} ({why})")
        now = now_ms()
        end = parse_time(as_of, now, "as_of") if as_of else None
        ref = end if end is not None else now
        since_ms = parse_time(since, ref, "since") if since else None
        available = [*store.fields, *[c for c in f["fields"] if c in self.serving_cols]]
        if fields:
            asked = [x.strip() for x in (fields.split(",") if isinstance(fields, str) else fields) if x.strip()]
            unknown = [x for x in asked if x not in available]
            if unknown:
                raise RequestError(400, f"unknown field(s) {', '.join(unknown)} of {store.table}; fields: {', '.join(available)}")
            out_fields = asked
        else:
            out_fields = [x for x in f["fields"] if x in available]
        fmt = fmt or "json"
        if fmt not in FORMATS:
            raise RequestError(400, f"unknown format {fmt!r}: use json or arrays")
        return Request(store.table, n, filter_stage.window_start(f, ref, since_ms), end, out_fields, fmt)

    def user_id(self, feature: str, value, batch: bool = False) -> int | str:
        """``value`` as an id of the feature's users, in their type (int64 or string): a path segment
        (text) or, with ``batch``, a JSON value of a batch body (an int64 id must be a JSON number
        there). An id that does not fit is a 400 naming the type the feature expects."""
        store = self.store(feature)
        what = "user_ids" if batch else "user_id"
        if store.user_type == pl.String:
            if isinstance(value, str):
                return value
            raise RequestError(400, f"{what} must be {'strings' if batch else 'a string'} "
                                    f"(string for feature {store.table}), got {value!r}")
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            number = int(value)
        elif isinstance(value, str) and not batch and _INTEGER.match(value.strip()):
            number = int(value)
        else:
            raise RequestError(400, f"{what} must be {'integers' if batch else 'an integer'} "
                                    f"(an int64 for feature {store.table}), got {value!r}")
        if not -(2**63) <= number < 2**63:
            raise RequestError(400, f"{what} {value} is out of range (an int64 for feature {store.table})")
        return number

    def check_owner(self, user_ids: list, batch: bool = False) -> None:
        """A 421 naming the owner shard(s) when this server is a shard and does not own every user.

        A batch is answered whole or not at all: one with users of other shards is a 421 listing
        which shard owns which of them (``serving.client.ShardedClient`` splits batches by owner)."""
        if self.shard is None:
            return
        owners: dict[int, list] = {}
        for u in user_ids:
            o = self.shard.owner(u)
            if o != self.shard.index:
                owners.setdefault(o, []).append(u)
        if not owners:
            return
        n = self.shard.count
        if not batch:
            ((o, (u,)),) = owners.items()
            url = self.shard.url(o)
            raise Misdirected(f"user {u!r} belongs to shard {o}/{n}{f' at {url}' if url else ''}, "
                              f"not this shard ({self.shard})", self.shard, owners, batch)
        listed = ", ".join(f"{len(ids)} to shard {o}/{n}" for o, ids in sorted(owners.items()))
        raise Misdirected(f"this shard ({self.shard}) does not hold {sum(map(len, owners.values()))} of the "
                          f"batch's users: {listed}; send each shard its users", self.shard, owners, batch)

    def run(self, req: Request, user_id: int | str) -> dict:
        store = self.stores[req.feature]
        snap, fresh = store.fetch(user_id)
        events = filter_stage.apply(snap, fresh, store.feature, req.start_ms, req.end_ms)
        events = size.apply(events, req.n)
        events = enrich.apply(events, self.enrichers, req.fields)
        body: dict = {"feature": req.feature, "user_id": user_id, "n": req.n}
        if req.fmt == "json":
            body["events"] = featurize.to_json(events, req.fields)
        else:
            body.update(featurize.to_arrays(events, req.fields, req.n))
        return body

    def get(self, feature: str, user_id: int | str, **params) -> dict:
        req = self.parse(feature, **params)
        uid = self.user_id(req.feature, user_id)
        self.check_owner([uid])
        return self.run(req, uid)

    def get_batch(self, feature: str, user_ids: list[int] | list[str], **params) -> dict:
        req = self.parse(feature, **params)
        ids = [self.user_id(req.feature, u, batch=True) for u in user_ids]
        self.check_owner(ids, batch=True)
        return {"feature": req.feature, "results": [self.run(req, u) for u in ids]}

    # ---- introspection ----------------------------------------------------------------------

    def freshness(self) -> dict[str, float | None]:
        """Seconds between now and the newest event each source has shown the server."""
        out: dict[str, float | None] = {}
        now = time.time()
        for source in self.compiled.sources:
            newest = None
            for store in self.stores.values():
                # Each store's newest event time is read in its source's time field.
                if store.fresh.newest_ts is not None and source in store.sources:
                    newest = max(newest or 0, store.fresh.newest_ts)
            if self.tail is not None and self.tail.newest_ts.get(source):
                newest = max(newest or 0, self.tail.newest_ts[source])
            out[source] = None if newest is None else max(0.0, now - newest / 1000)
        return out

    def features(self) -> list[dict]:
        fresh = self.freshness()
        out = []
        for table, store in self.stores.items():
            f = store.feature
            schema = {c: str(t.inner) for c, t in self.compiled.sequence_schema(f).items() if c in store.fields}
            for c in f["fields"]:
                if c in self.serving_cols:
                    e = next(e for e in self.compiled.lookups("serving") if c in e["columns"])
                    schema[c] = e["columns"][c]
            lag = [fresh[s] for s in store.sources if fresh.get(s) is not None]
            snap_day = store.snapshot.day
            closed_behind = (today_utc() - snap_day).days - 1 if snap_day else None
            out.append({
                "feature": table, "name": f["name"], "version": f["version"], "lifecycle": f["lifecycle"],
                "owner": f["owner"], "event_types": f["event_types"], "max_length": f["max_length"],
                "window_days": f["window_days"], "fields": [c for c in f["fields"] if c in schema], "schema": schema,
                "freshness": {"lag_seconds": max(lag) if lag else None,
                              "stream_tail": self.tail is not None and self.tail.alive()},
                "completeness": {"snapshot_day": snap_day.isoformat() if snap_day else None,
                                 "snapshot_users": store.snapshot.users,
                                 "closed_days_not_in_snapshot": closed_behind,
                                 "fresh_events": 0 if store.fresh.frame is None else store.fresh.frame.height},
            })
        return out
