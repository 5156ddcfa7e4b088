"""An independent oracle of the batch path over the demo lake: decoding, filters and sequences
recomputed in plain Python, and the demo lake every batch test reads."""


from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

DAY_MS = 86_400_000
DEMO_DAYS = (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3))
LATE_HORIZON_DAYS = 3

# The shipped source schema, written out here rather than read from the engine.
SOURCE_SCHEMA = {
    "event_id": "string", "user_id": "int64", "action": "string", "item_id": "int64", "ts": "int64",
    "surface": "string", "device": "string", "country": "string", "dwell_ms": "int64", "is_bot": "bool",
}
REQUIRED = {"event_id", "user_id", "action", "item_id", "ts", "surface", "device", "country", "is_bot"}
MAX_RECORD_BYTES = 64 * 1024


def day_of(ts_ms: int) -> date:
    return date(1970, 1, 1) + timedelta(days=ts_ms // DAY_MS)


def end_of_day(day: date) -> int:
    """Exclusive end of a UTC day in epoch ms (computed independently of seq_assets)."""
    return int(datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp() * 1000) + DAY_MS


def _int_ok(v) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and re.fullmatch(r"-?\d+", v) is not None)


def _type_ok(v, t: str) -> bool:
    if t == "int64":
        return _int_ok(v)
    if t == "bool":
        return isinstance(v, bool) or v in ("true", "false")
    return isinstance(v, (str, int, float, bool))


def classify(line: str) -> tuple[dict | None, str | None]:
    """(parsed object, None) for a good record, else (object or None, short reason)."""
    if len(line.encode()) > MAX_RECORD_BYTES:
        return None, "record larger than"
    try:
        obj = json.loads(line)
    except ValueError:
        return None, "unparseable JSON"
    if not isinstance(obj, dict):
        return None, "unparseable JSON"
    for name, t in SOURCE_SCHEMA.items():  # the first bad field in schema order is reported
        v = obj.get(name)
        if v is None:
            if name in REQUIRED:
                return obj, f"missing field {name!r}"
        elif not _type_ok(v, t):
            return obj, f"mistyped field {name!r}"
    return obj, None


def is_meaningful_for_counter(o: dict) -> bool:
    return o["action"] in ("click", "save", "closeup") and not o["is_bot"]


EVENT_FILTERS = {
    "pin_click": lambda o: o["action"] == "click" and not o["is_bot"],
    "pin_save": lambda o: o["action"] == "save" and not o["is_bot"],
    "pin_closeup": lambda o: o["action"] == "closeup" and o.get("dwell_ms") is not None
    and int(o["dwell_ms"]) >= 1000 and not o["is_bot"],
}


def oracle_sequences(events: list[dict], event_types, end_ms: int, window_days: int, max_length: int) -> dict:
    """{user_id: [event, ...]} newest first, ties by event_id ascending, deduped, windowed, truncated."""
    start = end_ms - window_days * DAY_MS
    per_user: dict[int, dict[str, dict]] = defaultdict(dict)
    for e in events:
        if e["event_type"] in event_types and start <= e["ts"] < end_ms:
            per_user[e["user_id"]].setdefault(e["event_id"], e)
    return {
        u: sorted(evs.values(), key=lambda e: (-e["ts"], e["event_id"]))[:max_length]
        for u, evs in per_user.items()
    }


@dataclass
class Record:
    line: str
    arrival: date
    obj: dict | None
    reason: str | None

    @property
    def event_day(self) -> date | None:
        if self.obj is not None and self.obj.get("ts") is not None and _int_ok(self.obj["ts"]):
            return day_of(int(self.obj["ts"]))
        return None


@dataclass
class Oracle:
    landing: Path
    records: list[Record] = field(default_factory=list)

    @classmethod
    def from_landing(cls, landing: Path) -> "Oracle":
        o = cls(landing)
        for path in sorted((landing / "user_engagements").glob("arrival_date=*/*.jsonl")):
            arrival = date.fromisoformat(path.parent.name.split("=", 1)[1])
            for line in path.read_text().splitlines():
                if line:
                    obj, reason = classify(line)
                    o.records.append(Record(line, arrival, obj, reason))
        return o

    @staticmethod
    def _arrivals(day: date) -> set[date]:
        return {day + timedelta(days=i) for i in range(LATE_HORIZON_DAYS + 1)}

    def raw(self, day: date) -> dict[str, dict]:
        """Valid records of event day ``day`` that arrived within the late horizon, by event id."""
        out: dict[str, dict] = {}
        arrivals = self._arrivals(day)
        for r in self.records:
            if r.reason is None and r.arrival in arrivals and r.event_day == day:
                o = dict(r.obj)
                o["user_id"], o["item_id"], o["ts"] = int(o["user_id"]), int(o["item_id"]), int(o["ts"])
                o["is_bot"] = o["is_bot"] in (True, "true")
                out.setdefault(o["event_id"], o)
        return out

    def dead(self, day: date) -> list[tuple[str, str]]:
        """(value, short reason) of dead letters dated ``day`` (event day, else arrival day)."""
        arrivals = self._arrivals(day)
        return sorted(
            (r.line, r.reason) for r in self.records
            if r.reason is not None and r.arrival in arrivals and (r.event_day or r.arrival) == day
        )

    def all_raw(self, days=DEMO_DAYS) -> list[dict]:
        out = []
        for d in days:
            out.extend(self.raw(d).values())
        return out

    def events(self, event_type: str, days=DEMO_DAYS) -> list[dict]:
        keep = EVENT_FILTERS[event_type]
        return [dict(o, event_type=event_type) for o in self.all_raw(days) if keep(o)]

    def all_events(self, days=DEMO_DAYS) -> list[dict]:
        return [e for et in EVENT_FILTERS for e in self.events(et, days)]

    def counter_30d(self, days=DEMO_DAYS):
        """A function event -> the number of prior engagements of its user with its item in 30 days."""
        hist: dict[tuple[int, int], list[int]] = defaultdict(list)
        for o in self.all_raw(days):
            if is_meaningful_for_counter(o):
                hist[(o["user_id"], o["item_id"])].append(o["ts"])

        def count(e: dict) -> int:
            t = e["ts"]
            return sum(1 for h in hist[(e["user_id"], e["item_id"])] if t - 30 * DAY_MS <= h < t)

        return count


@dataclass
class DemoLake:
    root: Path
    landing: Path
    lake: Path
    summary: dict
    results: dict

    def env(self) -> dict[str, str]:
        return {"SEQ_LAKE_URI": str(self.lake), "SEQ_LANDING_DIR": str(self.landing)}


def materialize_day(partition_key: str):
    """One real Dagster run of the whole batch graph for one daily partition."""
    import dagster as dg

    from seq_assets.orchestration.assets import build_assets
    from seq_assets.orchestration.resources import LakeResource
    from seq_assets.settings import load_compiled

    result = dg.materialize(build_assets(load_compiled()), partition_key=partition_key,
                            resources={"lake": LakeResource()})
    assert result.success, f"materialize {partition_key} failed"
    return result


