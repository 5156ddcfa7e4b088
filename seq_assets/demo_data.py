"""Deterministic synthetic data for the demo: pin engagements plus daily enrichment snapshots.

Everything is generated column-at-a-time with polars / pyarrow compute (no Python loop per
event), so 10M events take seconds and memory stays proportional to the output. The same
``DemoSpec`` always yields the same bytes.

Shape of the engagement stream (source ``user_engagements``)
------------------------------------------------------------
* ``spec.events`` distinct events (malformed ones included); duplicate deliveries come on top,
  so a landing area holds about ``1.02 * events`` records.
* Users 1..users are Zipf-Mandelbrot distributed (exponent 1, offset ``users / 100``): the
  lowest ids are the heavy head (hundreds of events), most users have a handful. Items
  1..items are Zipf too (item 1 is the most popular pin), with ~30% of a session's events
  revisiting the previous event's pin (click -> closeup on the same pin).
* Each user's events come in sessions (mean ~5 events, seconds to minutes apart, ~5% of gaps
  are zero so equal ``ts`` ties exist). Sessions start at random times across the window,
  weighted by a UTC diurnal curve, so a user's sessions are typically hours apart.
* Per-user traits are keyed on (seed, user_id), so they hold across windows: a primary device
  (ios/android/web), a country (a dozen ISO codes, US-heavy) and a bot flag (~1% of users;
  all their events carry ``is_bot: true``).
* Actions: impression 45%, click 20%, closeup 15%, save 8%, share 5%, hide 4%, comment 3%.
  closeups always carry ``dwell_ms`` (log-normal, median 2.5 s, ~15% below one second);
  other actions carry it 5% of the time, else JSON null.

Delivery (what a consumer of the landing area / Kafka topic sees)
-----------------------------------------------------------------
Every record arrives a little after its event time (log-normal jitter, seconds to a minute),
so delivery order is not event-time order. On top of that, each labelled in ``is_fault``:

* ``out_of_order`` (5%): held back 1-30 minutes, overtaken by later events of its user.
* ``late`` (3%): delivered 1-3 days after its event day (never after the last day + 3).
* ``duplicate`` (2% extra rows): a byte-identical copy of an earlier clean record, re-sent
  minutes later (60%) or about a day later (40%).
* malformed (0.3% of events, split in thirds): ``malformed_json`` (a truncated record that
  does not parse), ``missing_field`` (no user_id, ts, event_id or item_id) and
  ``mistyped_field`` (``"user_id":"abc"``, ``"ts":"yesterday"`` or ``"is_bot":"maybe"``).

Enrichment snapshots (one per event day)
----------------------------------------
``item_embedding``: 32-d float32, N(0, 1/dim) per component (norm ~1) keyed on
(seed, item_id), random-walking ~5% a day; ~97% of items present. ``item_category``:
"cat_00".."cat_49" (skewed), ~95% of items present. ``item_popularity``: every item,
expected engagements per million events from its Zipf weight, times a daily wobble.

Randomness: event-level draws use ``pyarrow.compute.random`` seeded per named stream
(fast); entity-level draws (user traits, item snapshots) use a counter-based splitmix64 hash
of (seed, id), so they do not depend on how many events or items are generated.
"""

from __future__ import annotations

import math
import shutil
import zlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "DemoSpec",
    "FAULT_KINDS",
    "ENRICHMENT_NAMES",
    "generate_event_lines",
    "generate_enrichment_snapshots",
    "write_demo_data",
]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

FAULT_KINDS = ("duplicate", "malformed_json", "missing_field", "mistyped_field", "late", "out_of_order")
MALFORMED_KINDS = ("malformed_json", "missing_field", "mistyped_field")
ENRICHMENT_NAMES = ("item_embedding", "item_category", "item_popularity")
SOURCE_DIR = "user_engagements"

# Rates of injected faults (fractions of distinct events; duplicates are extra rows).
MALFORMED_RATE = 0.003
LATE_RATE = 0.03
OUT_OF_ORDER_RATE = 0.05
DUPLICATE_RATE = 0.02
BOT_USER_RATE = 0.01

SESSION_BREAK_P = 0.2  # per event: mean session length ~5 events
ITEM_REUSE_P = 0.3
SAME_SURFACE_P = 0.8
PRIMARY_DEVICE_P = 0.95
EMBEDDING_PRESENT_P = 0.97
CATEGORY_PRESENT_P = 0.95
N_CATEGORIES = 50
EMBEDDING_DAILY_DRIFT = 0.05
ITEM_ZIPF_OFFSET = 5.0

ACTIONS = (("impression", 0.45), ("click", 0.20), ("closeup", 0.15), ("save", 0.08),
           ("share", 0.05), ("hide", 0.04), ("comment", 0.03))
SURFACES = (("home_feed", 0.55), ("search", 0.20), ("related_pins", 0.18), ("profile", 0.07))
DEVICES = (("ios", 0.45), ("android", 0.40), ("web", 0.15))
COUNTRIES = (("US", 0.38), ("BR", 0.10), ("GB", 0.08), ("DE", 0.07), ("FR", 0.06), ("IN", 0.06),
             ("MX", 0.05), ("CA", 0.05), ("JP", 0.04), ("AU", 0.04), ("ES", 0.04), ("IT", 0.03))
# Relative activity per UTC hour: the audience is mostly American and European evenings.
DIURNAL = (6.0, 5.0, 4.0, 3.0, 2.0, 1.5, 1.2, 1.2, 1.5, 2.0, 2.5, 3.0,
           3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 7.5, 7.0, 6.5)

_FAULT_CODES = (None, *FAULT_KINDS)  # code 0 = clean; index into this tuple = fault code
_CODE = {k: i for i, k in enumerate(_FAULT_CODES)}


@dataclass(frozen=True)
class DemoSpec:
    users: int = 2000
    days: int = 3
    events: int = 50_000
    seed: int = 7
    end_date: date | None = None  # last event day (UTC), inclusive; None -> today's UTC date
    items: int | None = None  # None -> max(500, min(200_000, events // 20))
    embedding_dim: int = 32

    @property
    def n_items(self) -> int:
        return self.items if self.items is not None else max(500, min(200_000, self.events // 20))

    @property
    def last_day(self) -> date:
        return self.end_date or datetime.now(timezone.utc).date()

    @property
    def event_days(self) -> list[date]:
        last = self.last_day
        return [last - timedelta(days=self.days - 1 - i) for i in range(self.days)]


# ---- randomness -------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_U64 = pa.uint64()


def _splitmix64(x: int) -> int:
    z = (x + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _stream_seed(*parts: object) -> int:
    """A 63-bit seed from any parts; crc32 rather than hash() because hash() is salted per run."""
    h = 0
    for p in parts:
        h = _splitmix64(h ^ zlib.crc32(repr(p).encode()))
    return h >> 1


def _u64(v: int) -> pa.Scalar:
    return pa.scalar(v & _MASK64, _U64)


class _Streams:
    """Named, independent uniform streams: adding a stream never shifts the others."""

    def __init__(self, *root: object) -> None:
        self._root = root

    def uniform(self, name: str, n: int) -> pl.Series:
        if n == 0:
            return pl.Series(name, [], dtype=pl.Float64)
        return pl.Series(name, pc.random(n, initializer=_stream_seed(*self._root, name)))

    def normal(self, name: str, n: int) -> pl.Series:
        return _box_muller(self.uniform(name + "/a", n), self.uniform(name + "/b", n)).alias(name)


def _keyed_uniform(keys: pl.Series, *salt: object) -> pl.Series:
    """Uniform [0, 1) from splitmix64(key), so a value depends on (salt, key) only."""
    if len(keys) == 0:
        return pl.Series(keys.name, [], dtype=pl.Float64)
    x = keys.cast(pl.UInt64).rechunk().to_arrow()
    z = pc.add(pc.multiply(x, _u64(_GOLDEN)), _u64(_stream_seed(*salt)))
    z = pc.multiply(pc.bit_wise_xor(z, pc.shift_right(z, _u64(30))), _u64(0xBF58476D1CE4E5B9))
    z = pc.multiply(pc.bit_wise_xor(z, pc.shift_right(z, _u64(27))), _u64(0x94D049BB133111EB))
    z = pc.bit_wise_xor(z, pc.shift_right(z, _u64(31)))
    u = pc.multiply(pc.cast(pc.shift_right(z, _u64(11)), pa.float64()), 2.0**-53)
    return pl.Series(keys.name, u)


def _box_muller(u1: pl.Series, u2: pl.Series) -> pl.Series:
    # 1 - u1 is in (0, 1], so the log never sees zero.
    return ((1.0 - u1).log() * -2.0).sqrt() * (u2 * (2.0 * math.pi)).cos()


def _zipf_cdf(n: int, exponent: float, offset: float) -> pl.Series:
    w = (pl.int_range(1, n + 1, eager=True).cast(pl.Float64) + offset).pow(-exponent)
    c = w.cum_sum()
    return c / c[-1]


def _draw_ranks(cdf: pl.Series, u: pl.Series) -> pl.Series:
    """Inverse-CDF draw: 1-based rank per uniform."""
    return cdf.search_sorted(u, side="right").clip(upper_bound=len(cdf) - 1).cast(pl.Int64) + 1


def _draw_category(u: pl.Series, table: tuple[tuple[str, float], ...]) -> pl.Series:
    """Draw labels with the table's probabilities, as an Enum (1 byte a row instead of a string)."""
    names = [n for n, _ in table]
    total = sum(p for _, p in table)
    acc, cdf = 0.0, []
    for _, p in table:
        acc += p / total
        cdf.append(acc)
    cdf[-1] = 1.0
    idx = pl.Series(cdf).search_sorted(u, side="right").clip(upper_bound=len(names) - 1)
    return pl.Series(u.name, names, dtype=pl.Enum(names)).gather(idx)


def _lognormal_ms(z: pl.Series, median_ms: float, sigma: float) -> pl.Series:
    return ((z * sigma).exp() * median_ms).round().cast(pl.Int64)


# ---- time window ------------------------------------------------------------------------------

def _day_ms(d: date) -> int:
    return (d - date(1970, 1, 1)).days * DAY_MS


def _resolve_window(spec: DemoSpec, start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    days = spec.event_days
    start = _day_ms(days[0]) if start_ms is None else int(start_ms)
    end = _day_ms(days[-1]) + DAY_MS if end_ms is None else int(end_ms)
    if end <= start:
        raise ValueError(f"empty event window [{start}, {end})")
    return start, end


def _diurnal_bins(start_ms: int, end_ms: int) -> tuple[pl.Series, pl.Series, pl.Series]:
    """Hour bins clipped to the window: (bin start, bin width, cdf weighted by DIURNAL x width)."""
    lo, width, weight = [], [], []
    b = start_ms - start_ms % HOUR_MS
    while b < end_ms:
        s, e = max(b, start_ms), min(b + HOUR_MS, end_ms)
        lo.append(s)
        width.append(e - s)
        weight.append(DIURNAL[(b // HOUR_MS) % 24] * (e - s))
        b += HOUR_MS
    total, acc, cdf = sum(weight), 0.0, []
    for w in weight:
        acc += w / total
        cdf.append(acc)
    cdf[-1] = 1.0
    return pl.Series(lo, dtype=pl.Int64), pl.Series(width, dtype=pl.Int64), pl.Series(cdf)


# ---- users ------------------------------------------------------------------------------------

def _user_traits(spec: DemoSpec) -> pl.DataFrame:
    """Per-user traits keyed on (seed, user_id); row i is user i + 1."""
    uid = pl.int_range(1, spec.users + 1, eager=True, dtype=pl.Int64).alias("user_id")
    n_bots = round(spec.users * BOT_USER_RATE)
    bot_key = _keyed_uniform(uid, spec.seed, "bot")
    bots = pl.DataFrame({"user_id": uid, "k": bot_key}).bottom_k(n_bots, by=["k", "user_id"])["user_id"]
    return pl.DataFrame({
        "user_id": uid,
        "is_bot": uid.is_in(bots.implode()),
        "device": _draw_category(_keyed_uniform(uid, spec.seed, "device"), DEVICES),
        "country": _draw_category(_keyed_uniform(uid, spec.seed, "country"), COUNTRIES),
    })


# ---- events -----------------------------------------------------------------------------------

def _sessions(user: pl.Series, rng: _Streams) -> pl.DataFrame:
    """Split each user's (contiguous) events into sessions and lay out in-session offsets."""
    n = len(user)
    starts = (user != user.shift(1)).fill_null(True) | (rng.uniform("session_break", n) < SESSION_BREAK_P)
    session = (starts.cast(pl.Int64).cum_sum() - 1).alias("session")
    # Gap mixture: mostly seconds, some tens of seconds, a few minutes; 5% zero -> ts ties.
    kind = pl.col("kind")
    scale = (pl.when(kind < 0.05).then(0.0).when(kind < 0.60).then(8_000.0)
             .when(kind < 0.90).then(40_000.0).otherwise(180_000.0))
    expo = -(1.0 - rng.uniform("gap", n)).log()
    frame = pl.DataFrame({"starts": starts, "session": session, "expo": expo,
                          "kind": rng.uniform("gap_kind", n)})
    frame = frame.with_columns(gap=pl.when(pl.col("starts")).then(0)
                               .otherwise((pl.col("expo") * scale).round().cast(pl.Int64)))
    cum = frame["gap"].cum_sum()
    first = starts.arg_true()
    offset = cum - cum.gather(first.gather(session))
    return pl.DataFrame({"session": session, "starts": starts, "offset": offset})


def _session_starts(n_sessions: int, duration: pl.Series, start_ms: int, end_ms: int,
                    rng: _Streams) -> pl.Series:
    """Session start times: diurnal-weighted over the window, shifted so the session fits in it."""
    lo, width, cdf = _diurnal_bins(start_ms, end_ms)
    b = cdf.search_sorted(rng.uniform("session_hour", n_sessions), side="right").clip(upper_bound=len(cdf) - 1)
    t0 = lo.gather(b) + (rng.uniform("session_time", n_sessions) * width.gather(b).cast(pl.Float64)).floor().cast(pl.Int64)
    latest = (end_ms - 1) - duration
    return pl.DataFrame({"t0": t0, "latest": latest}).select(
        pl.min_horizontal("t0", "latest").clip(lower_bound=start_ms))["t0"]


def _event_core(spec: DemoSpec, rng: _Streams, start_ms: int, end_ms: int) -> pl.DataFrame:
    """The distinct events, grouped by user (generation order), without faults or arrivals."""
    n = spec.events
    # Sorted uniforms give sorted users: events arrive grouped by user without sorting 10M rows.
    user_cdf = _zipf_cdf(spec.users, 1.0, max(2.0, spec.users / 100.0))
    user = _draw_ranks(user_cdf, rng.uniform("user", n).sort()).alias("user_id")
    sess = _sessions(user, rng)
    session = sess["session"]
    first = sess["starts"].arg_true()
    last = pl.concat([first.slice(1) - 1, pl.Series([n - 1], dtype=first.dtype)])
    duration = sess["offset"].gather(last)
    t0 = _session_starts(len(first), duration, start_ms, end_ms, rng)
    ts = (t0.gather(session) + sess["offset"]).clip(start_ms, end_ms - 1).alias("ts")

    traits = _user_traits(spec)
    uidx = user - 1
    session_surface = _draw_category(rng.uniform("session_surface", len(first)), SURFACES)
    surface = pl.select(
        pl.when(pl.lit(rng.uniform("surface_keep", n) < SAME_SURFACE_P))
        .then(pl.lit(session_surface.gather(session)))
        .otherwise(pl.lit(_draw_category(rng.uniform("surface", n), SURFACES)))
    ).to_series()
    device = pl.select(
        pl.when(pl.lit(rng.uniform("device_keep", n) < PRIMARY_DEVICE_P))
        .then(pl.lit(traits["device"].gather(uidx)))
        .otherwise(pl.lit(_draw_category(rng.uniform("device", n), DEVICES)))
    ).to_series()

    item_cdf = _zipf_cdf(spec.n_items, 1.0, ITEM_ZIPF_OFFSET)
    fresh_item = _draw_ranks(item_cdf, rng.uniform("item", n))
    reuse = ~sess["starts"] & (rng.uniform("item_reuse", n) < ITEM_REUSE_P)
    # Forward fill never crosses a session: the first event of a session is never a reuse.
    item = pl.select(pl.when(pl.lit(reuse)).then(None).otherwise(pl.lit(fresh_item)).forward_fill()).to_series()

    action = _draw_category(rng.uniform("action", n), ACTIONS)
    closeup_dwell = _lognormal_ms(rng.normal("dwell_closeup", n), 2_500.0, 0.9).clip(lower_bound=50)
    other_dwell = _lognormal_ms(rng.normal("dwell_other", n), 600.0, 1.0).clip(lower_bound=20)
    has_other = rng.uniform("dwell_other_p", n) < 0.05
    return pl.DataFrame({
        "n": pl.int_range(n, eager=True, dtype=pl.Int64),
        "user_id": user,
        "action": action,
        "item_id": item.cast(pl.Int64),
        "ts": ts,
        "surface": surface.cast(session_surface.dtype),
        "device": device.cast(traits["device"].dtype),
        "country": traits["country"].gather(uidx),
        "_closeup_dwell": closeup_dwell,
        "_other_dwell": other_dwell,
        "_has_other": has_other,
        "is_bot": traits["is_bot"].gather(uidx),
    }).with_columns(
        dwell_ms=pl.when(pl.col("action") == "closeup").then(pl.col("_closeup_dwell"))
        .when(pl.col("_has_other")).then(pl.col("_other_dwell"))
        .otherwise(None)
    ).drop("_closeup_dwell", "_other_dwell", "_has_other")


def _fault_plan(n: int, rng: _Streams) -> pl.DataFrame:
    """Exact, disjoint fault counts: the k smallest of one uniform per event get faults, in order."""
    n_mal = round(n * MALFORMED_RATE)
    counts = [
        ("malformed_json", n_mal - 2 * (n_mal // 3)),
        ("missing_field", n_mal // 3),
        ("mistyped_field", n_mal // 3),
        ("late", round(n * LATE_RATE)),
        ("out_of_order", round(n * OUT_OF_ORDER_RATE)),
    ]
    k = sum(c for _, c in counts)
    u = rng.uniform("fault", n)
    picked = (pl.DataFrame({"u": u}).with_row_index("i")
              .bottom_k(k, by=["u", "i"]).sort(["u", "i"])["i"])
    labels = pl.concat([pl.repeat(_CODE[kind], c, dtype=pl.UInt8, eager=True) for kind, c in counts])
    code = pl.zeros(n, dtype=pl.UInt8, eager=True).scatter(picked, labels)
    # The variant picks which field is missing / mistyped and where a record is cut.
    variant = (rng.uniform("fault_variant", n) * 12).floor().cast(pl.UInt8)
    cut = rng.uniform("fault_cut", n)
    return pl.DataFrame({"fault": code, "variant": variant, "cut": cut})


def _arrivals(frame: pl.DataFrame, rng: _Streams, cap_ms: int) -> pl.Series:
    """Delivery time of each event: jitter for all, minutes for out_of_order, days for late."""
    n = len(frame)
    jitter = _lognormal_ms(rng.normal("arrival_jitter", n), 2_000.0, 1.2)
    hold = (rng.uniform("ooo_hold", n) * (29 * MINUTE_MS) + MINUTE_MS).cast(pl.Int64)
    lag_u = rng.uniform("late_days", n)
    late_days = pl.select(pl.when(pl.lit(lag_u) < 0.6).then(1).when(pl.lit(lag_u) < 0.9).then(2).otherwise(3)).to_series()
    time_of_day = (rng.uniform("late_time", n) * DAY_MS).cast(pl.Int64)
    return frame.select(
        pl.when(pl.col("fault") == _CODE["late"])
        .then((pl.col("ts") // DAY_MS + pl.lit(late_days)) * DAY_MS + pl.lit(time_of_day))
        .when(pl.col("fault") == _CODE["out_of_order"])
        .then(pl.col("ts") + pl.lit(jitter) + pl.lit(hold))
        .otherwise(pl.col("ts") + pl.lit(jitter))
        .clip(upper_bound=cap_ms)
        .alias("arrival_ts")
    ).to_series()


def _duplicates(frame: pl.DataFrame, rng: _Streams, cap_ms: int) -> pl.DataFrame:
    """Re-deliveries of clean-text records: same row (so same text), later arrival."""
    n = len(frame)
    k = round(n * DUPLICATE_RATE)
    u = rng.uniform("dup", n)
    malformed = frame["fault"].is_in([_CODE[m] for m in MALFORMED_KINDS])
    u = pl.select(pl.when(pl.lit(malformed)).then(2.0).otherwise(pl.lit(u))).to_series()
    src = pl.DataFrame({"u": u}).with_row_index("i").bottom_k(k, by=["u", "i"])["i"].sort()
    dups = frame.gather(src)
    soon = _lognormal_ms(rng.normal("dup_soon", k), 3 * MINUTE_MS, 1.2)
    next_day = DAY_MS + (rng.uniform("dup_next_day", k) * (2 * HOUR_MS)).cast(pl.Int64)
    delay = pl.select(pl.when(pl.lit(rng.uniform("dup_when", k)) < 0.6)
                      .then(pl.lit(soon)).otherwise(pl.lit(next_day))).to_series()
    return dups.with_columns(
        arrival_ts=(pl.col("arrival_ts") + delay).clip(upper_bound=cap_ms),
        fault=pl.lit(_CODE["duplicate"], dtype=pl.UInt8),
    )


def _event_frame(spec: DemoSpec, start_ms: int | None, end_ms: int | None, id_prefix: str) -> pl.DataFrame:
    """All delivered records as typed columns (no JSON yet), in delivery order."""
    start, end = _resolve_window(spec, start_ms, end_ms)
    # The window and prefix are part of the seed, so chunks of a stream are not copies of each other.
    rng = _Streams(spec.seed, start, end, id_prefix)
    # Nothing is delivered after the last event day + 3 days.
    cap_ms = ((end - 1) // DAY_MS + 4) * DAY_MS - 1
    core = _event_core(spec, rng, start, end)
    frame = pl.concat([core, _fault_plan(len(core), rng)], how="horizontal")
    frame = frame.with_columns(arrival_ts=_arrivals(frame, rng, cap_ms))
    frame = pl.concat([frame, _duplicates(frame, rng, cap_ms)])
    return (frame.with_row_index("_seq")
            .sort(["arrival_ts", "_seq"])
            .drop("_seq")
            .with_columns(arrival_date=(pl.col("arrival_ts") // DAY_MS).cast(pl.Int32).cast(pl.Date)))


# ---- JSON rendering ---------------------------------------------------------------------------

def _field(name: str, text: pl.Expr) -> pl.Expr:
    return pl.concat_str([pl.lit(f'"{name}":'), text])


def _render_columns(seed: int, id_prefix: str) -> list[pl.Expr]:
    """Expressions for value / key / event_ts / is_fault; text depends only on the row."""
    fault, variant = pl.col("fault"), pl.col("variant")
    missing = (fault == _CODE["missing_field"])
    mistyped = (fault == _CODE["mistyped_field"])
    broken = (fault == _CODE["malformed_json"])
    miss_v, mistype_v = variant % 4, variant % 3

    def drop_if(expr: pl.Expr, which: int) -> pl.Expr:
        return pl.when(missing & (miss_v == which)).then(pl.lit(None, pl.String)).otherwise(expr)

    def mistype_if(expr: pl.Expr, which: int, name: str, bad: str) -> pl.Expr:
        return pl.when(mistyped & (mistype_v == which)).then(pl.lit(f'"{name}":"{bad}"')).otherwise(expr)

    fields = [
        drop_if(pl.concat_str([pl.lit(f'"event_id":"{id_prefix}{seed}-'), pl.col("n").cast(pl.String), pl.lit('"')]), 2),
        drop_if(mistype_if(_field("user_id", pl.col("user_id").cast(pl.String)), 0, "user_id", "abc"), 0),
        pl.concat_str([pl.lit('"action":"'), pl.col("action").cast(pl.String), pl.lit('"')]),
        drop_if(_field("item_id", pl.col("item_id").cast(pl.String)), 3),
        drop_if(mistype_if(_field("ts", pl.col("ts").cast(pl.String)), 1, "ts", "yesterday"), 1),
        pl.concat_str([pl.lit('"surface":"'), pl.col("surface").cast(pl.String), pl.lit('"')]),
        pl.concat_str([pl.lit('"device":"'), pl.col("device").cast(pl.String), pl.lit('"')]),
        pl.concat_str([pl.lit('"country":"'), pl.col("country").cast(pl.String), pl.lit('"')]),
        _field("dwell_ms", pl.col("dwell_ms").cast(pl.String).fill_null("null")),
        mistype_if(_field("is_bot", pl.when(pl.col("is_bot")).then(pl.lit("true")).otherwise(pl.lit("false"))),
                   2, "is_bot", "maybe"),
    ]
    body = pl.concat_str([pl.lit("{"), pl.concat_str(fields, separator=",", ignore_nulls=True), pl.lit("}")])
    # A strict prefix of a JSON object never parses (its closing brace is gone).
    cut_len = (pl.col("cut") * (body.str.len_bytes() - 1).cast(pl.Float64)).floor().cast(pl.UInt32) + 1
    value = pl.when(broken).then(body.str.head(cut_len)).otherwise(body)
    unkeyed = broken | (missing & (miss_v == 0)) | (mistyped & (mistype_v == 0))
    labels = pl.Series(list(_FAULT_CODES), dtype=pl.String)
    return [
        value.alias("value"),
        pl.when(unkeyed).then(pl.lit(None, pl.String)).otherwise(pl.col("user_id").cast(pl.String)).alias("key"),
        pl.when(broken).then(pl.lit(None, pl.Int64)).otherwise(pl.col("ts")).alias("event_ts"),
        pl.col("arrival_date"),
        pl.lit(labels).gather(pl.col("fault")).alias("is_fault"),
    ]


# ---- public API -------------------------------------------------------------------------------

def generate_event_lines(spec: DemoSpec, *, start_ms: int | None = None, end_ms: int | None = None,
                         id_prefix: str = "e") -> pl.DataFrame:
    """Returns columns: value (pl.String, one JSON document per row, or malformed text), key
    (pl.String: the user id as decimal text, or null when the row does not yield one: unparseable,
    or user_id missing / mistyped), event_ts (Int64 epoch ms of the intended event time, null for
    rows that are garbage), arrival_date (pl.Date: the UTC day the record was delivered, >= event
    day), is_fault (pl.String: null for a clean record, else one of 'duplicate','malformed_json',
    'missing_field','mistyped_field','late','out_of_order' describing what was injected). Rows are
    in delivery order (sorted by arrival time, which is NOT event-time order).

    ``spec.events`` distinct events fall in [start_ms, end_ms) (default: the spec's days);
    duplicates add ~2% rows on top.
    """
    frame = _event_frame(spec, start_ms, end_ms, id_prefix)
    return frame.select(_render_columns(spec.seed, id_prefix))


def _embedding_snapshots(spec: DemoSpec, items: pl.Series, days: list[date]) -> dict[date, pl.DataFrame]:
    dim = spec.embedding_dim
    present = items.filter(_keyed_uniform(items, spec.seed, "embedding_present") < EMBEDDING_PRESENT_P)
    flat = pl.int_range(len(present) * dim, eager=True, dtype=pl.Int64)
    # One key per (item, component): a component's value depends on (seed, item_id, d) only.
    key = (present.gather(flat // dim) * dim + flat % dim).alias("key")
    scale = 1.0 / math.sqrt(dim)
    vec = _box_muller(_keyed_uniform(key, spec.seed, "emb_a"), _keyed_uniform(key, spec.seed, "emb_b")) * scale
    out = {}
    for i, day in enumerate(days):
        if i > 0:  # random walk: each day moves a little from the day before
            step = (_keyed_uniform(key, spec.seed, "emb_drift", day.toordinal()) - 0.5) * math.sqrt(12.0)
            vec = vec + step * (EMBEDDING_DAILY_DRIFT * scale)
        out[day] = pl.DataFrame({
            "item_id": present,
            "item_embedding": vec.cast(pl.Float32).reshape((len(present), dim)),
        })
    return out


def _category_snapshot(spec: DemoSpec, items: pl.Series) -> pl.DataFrame:
    present = items.filter(_keyed_uniform(items, spec.seed, "category_present") < CATEGORY_PRESENT_P)
    # u**1.6 skews towards the low-numbered categories, like real interest taxonomies.
    cat = (_keyed_uniform(present, spec.seed, "category").pow(1.6) * N_CATEGORIES).floor().cast(pl.Int64)
    return pl.DataFrame({"item_id": present}).with_columns(
        item_category=pl.format("cat_{}", pl.lit(cat).cast(pl.String).str.zfill(2)))


def _popularity_snapshot(spec: DemoSpec, items: pl.Series, day: date) -> pl.DataFrame:
    cdf = _zipf_cdf(spec.n_items, 1.0, ITEM_ZIPF_OFFSET)
    share = cdf - cdf.shift(1).fill_null(0.0)
    wobble = (_box_muller(_keyed_uniform(items, spec.seed, "pop_a", day.toordinal()),
                          _keyed_uniform(items, spec.seed, "pop_b", day.toordinal())) * 0.15).exp()
    return pl.DataFrame({"item_id": items, "item_popularity": share * 1e6 * wobble})


def generate_enrichment_snapshots(spec: DemoSpec) -> dict[str, dict[date, pl.DataFrame]]:
    """{'item_embedding': {day: DataFrame[item_id Int64, item_embedding Array(Float32, 32)]},
        'item_category':  {day: DataFrame[item_id Int64, item_category String]},
        'item_popularity':{day: DataFrame[item_id Int64, item_popularity Float64]}} for each of the spec's days."""
    items = pl.int_range(1, spec.n_items + 1, eager=True, dtype=pl.Int64).alias("item_id")
    days = spec.event_days
    category = _category_snapshot(spec, items)
    return {
        "item_embedding": _embedding_snapshots(spec, items, days),
        "item_category": {day: category for day in days},
        "item_popularity": {day: _popularity_snapshot(spec, items, day) for day in days},
    }


def _clear_partitions(folder: Path, prefix: str) -> None:
    """Remove earlier demo partitions (only ``prefix*`` folders) so stale days do not linger."""
    if folder.is_dir():
        for child in sorted(folder.iterdir()):
            if child.is_dir() and child.name.startswith(prefix):
                shutil.rmtree(child)


def _date_runs(dates: pl.Series) -> list[tuple[date, int, int]]:
    """(day, offset, length) of each run of a sorted date column: zero-copy slices per day."""
    runs = dates.rle().struct.unnest()
    out, offset = [], 0
    for length, value in zip(runs["len"].to_list(), runs["value"].to_list()):
        out.append((value, offset, length))
        offset += length
    return out


def write_demo_data(spec: DemoSpec, landing_dir: str | Path,
                    progress: Callable[[str], None] | None = None) -> dict:
    """Writes the landing area and returns a summary dict (counts per fault kind, rows, days, files).

    ``<landing>/user_engagements/arrival_date=YYYY-MM-DD/part-00000.jsonl`` and
    ``<landing>/enrichments/<name>/date=YYYY-MM-DD/snapshot.parquet``; earlier demo partitions
    there are removed first, so the same spec always leaves byte-identical files.
    """
    say = progress or (lambda _msg: None)
    landing = Path(landing_dir)
    source_dir = landing / SOURCE_DIR
    _clear_partitions(source_dir, "arrival_date=")
    for name in ENRICHMENT_NAMES:
        _clear_partitions(landing / "enrichments" / name, "date=")

    say(f"generating {spec.events:,} events for {spec.users:,} users over {spec.days} days")
    frame = _event_frame(spec, None, None, "e")
    render = _render_columns(spec.seed, "e")
    files: list[str] = []
    fault_counts = {k: 0 for k in FAULT_KINDS}
    arrival_dates = []
    for day, offset, length in _date_runs(frame["arrival_date"]):
        # Render one arrival day at a time: peak memory is the typed frame plus one day of text.
        lines = frame.slice(offset, length).select(render)
        path = source_dir / f"arrival_date={day.isoformat()}" / "part-00000.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines.select("value").write_csv(path, include_header=False, quote_style="never")
        for kind, count in lines["is_fault"].drop_nulls().value_counts().iter_rows():
            fault_counts[kind] += count
        files.append(str(path))
        arrival_dates.append(day.isoformat())
        say(f"wrote {length:,} records to {path}")
    rows = len(frame)
    del frame

    say("generating enrichment snapshots")
    for name, by_day in generate_enrichment_snapshots(spec).items():
        for day, snap in by_day.items():
            path = landing / "enrichments" / name / f"date={day.isoformat()}" / "snapshot.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            snap.write_parquet(path, compression="zstd", statistics=True)
            files.append(str(path))
            say(f"wrote {snap.height:,} rows to {path}")

    return {
        "landing_dir": str(landing),
        "rows": rows,
        "events": spec.events,
        "clean": rows - sum(fault_counts.values()),
        "faults": fault_counts,
        "users": spec.users,
        "items": spec.n_items,
        "days": [d.isoformat() for d in spec.event_days],
        "arrival_dates": arrival_dates,
        "files": files,
    }
