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
  closeups always carry ``dwell_ms`` (log-logistic, median 2.5 s, ~13% below one second);
  other actions carry it 5% of the time, else JSON null.

Delivery (what a consumer of the landing area / Kafka topic sees)
-----------------------------------------------------------------
Every record arrives a little after its event time (log-logistic jitter, median 2 s, up to
minutes), so delivery order is not event-time order. On top of that, exact shares of the
events get one injected fault each, named in ``is_fault``:

* ``out_of_order`` (5%): held back 1-30 minutes, overtaken by later events of its user.
* ``late`` (3%): delivered 1-3 days after its event day (never after the last day + 3).
* ``duplicate`` (2% extra rows): a byte-identical copy of an earlier clean record, re-sent
  minutes later (60%) or about a day later (40%).
* malformed (0.3% of events, split in thirds): ``malformed_json`` (a truncated record that
  does not parse), ``missing_field`` (no user_id, ts, event_id or item_id) and
  ``mistyped_field`` (``"user_id":"abc"``, ``"ts":"yesterday"`` or ``"is_bot":"maybe"``).
  ``key`` (the Kafka key) is null when the record yields no user id (broken JSON, user_id
  missing or mistyped); ``event_ts`` is null only for broken JSON.

Enrichment snapshots (one per event day)
----------------------------------------
``item_embedding``: 32-d float32, N(0, 1/dim) per component (norm ~1) keyed on
(seed, item_id), random-walking ~5% a day; ~97% of items present. ``item_category``:
"cat_00".."cat_49" (skewed), ~95% of items present. ``item_popularity``: every item,
expected engagements per million events from its Zipf weight, times a daily wobble.

Randomness: event-level draws use ``pyarrow.compute.random`` seeded per named stream from
(seed, window, id_prefix), so stream chunks differ; entity-level draws (user traits, item
snapshots) use a counter-based splitmix64 hash of (seed, id), so they do not depend on how
many events or items are generated. Output is byte-stable for a given polars / pyarrow
version (numpy is not needed).
"""

from __future__ import annotations

import json
import math
import shutil
import zlib
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from seq_assets.core.days import DAY_MS

__all__ = [
    "DemoSpec",
    "FAULT_KINDS",
    "ENRICHMENT_NAMES",
    "generate_event_lines",
    "generate_enrichment_snapshots",
    "write_demo_data",
]

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

    def add(self, frame: pl.DataFrame, *names: str) -> pl.DataFrame:
        """Attach one uniform column per name, called ``u_<name>``."""
        return frame.with_columns([self.uniform(name, frame.height).alias(f"u_{name}") for name in names])


def _u(name: str) -> pl.Expr:
    return pl.col(f"u_{name}")


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


def _logistic(u: pl.Expr) -> pl.Expr:
    """A unit-variance logistic draw: a normal look-alike for one uniform and one log."""
    u = u.clip(1e-12, 1.0 - 1e-12)
    return (u / (1.0 - u)).log() * (math.sqrt(3.0) / math.pi)


def _log_logistic_ms(u: pl.Expr, median_ms: float, sigma: float) -> pl.Expr:
    return ((_logistic(u) * sigma).exp() * median_ms).round().cast(pl.Int64)


def _zipf_rank(u: pl.Expr, n: int, offset: float) -> pl.Expr:
    """Analytic inverse CDF of P(r) = log((r+q)/(r-1+q)) / log((n+q)/q), r in 1..n.

    That is Zipf-Mandelbrot with exponent 1 (P(r) ~ 1/(r+q-1/2)) in closed form, so 10M draws
    cost one exp each instead of a binary search; monotone in u, so sorted u -> sorted ranks.
    """
    span = math.log((n + offset) / offset)
    x = (u * span).exp() * offset - offset
    return x.floor().cast(pl.Int64).clip(0, n - 1) + 1


def _zipf_share(n: int, offset: float) -> pl.Series:
    """The exact probability of each rank 1..n under ``_zipf_rank``."""
    r = pl.int_range(1, n + 1, eager=True).cast(pl.Float64)
    return ((r + offset).log() - (r - 1.0 + offset).log()) / math.log((n + offset) / offset)


def _cdf(table: tuple[tuple[str, float], ...]) -> list[float]:
    total, acc, out = sum(p for _, p in table), 0.0, []
    for _, p in table:
        acc += p / total
        out.append(acc)
    return out


def _categorical(u: pl.Expr, table: tuple[tuple[str, float], ...]) -> pl.Expr:
    """Draw a label with the table's probabilities, as an Enum (1 byte a row, not a string).

    Counting passed thresholds beats a binary search for a dozen labels.
    """
    names = [name for name, _ in table]
    idx = pl.sum_horizontal([(u >= c).cast(pl.UInt8) for c in _cdf(table)[:-1]])
    return pl.lit(pl.Series(names, dtype=pl.Enum(names))).gather(idx)


def _smallest_k(u: pl.Series, k: int) -> pl.Series:
    """Row indices of the k smallest values of u, smallest first (ties by index).

    Prefilters with a generous threshold so only ~k rows get sorted, not all of them.
    """
    n = len(u)
    rows = pl.DataFrame({"u": u}).with_row_index("i")
    if k <= 0 or n == 0:
        return rows["i"].clear()
    candidates = rows.filter(pl.col("u") < min(1.0, 1.25 * k / n + 32.0 / n))
    if candidates.height < k:  # the threshold was unlucky: fall back to every row
        candidates = rows
    return candidates.sort(["u", "i"]).head(k)["i"]


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

def _user_zipf_offset(spec: DemoSpec) -> float:
    # Offset ~ users/100 caps the head at ~20x the mean user, whatever the scale.
    return max(2.0, spec.users / 100.0)


def _user_traits(spec: DemoSpec) -> pl.DataFrame:
    """Per-user traits keyed on (seed, user_id); row i is user i + 1."""
    uid = pl.int_range(1, spec.users + 1, eager=True, dtype=pl.Int64).alias("user_id")
    bots = _smallest_k(_keyed_uniform(uid, spec.seed, "bot"), round(spec.users * BOT_USER_RATE))
    return pl.DataFrame({
        "user_id": uid,
        "k_device": _keyed_uniform(uid, spec.seed, "device"),
        "k_country": _keyed_uniform(uid, spec.seed, "country"),
    }).select(
        "user_id",
        is_bot=pl.col("user_id").is_in((bots.cast(pl.Int64) + 1).implode()),
        device=_categorical(pl.col("k_device"), DEVICES),
        country=_categorical(pl.col("k_country"), COUNTRIES),
    )


# ---- events -----------------------------------------------------------------------------------

def _sessions(frame: pl.DataFrame, rng: _Streams) -> pl.DataFrame:
    """Split each user's (contiguous) events into sessions and lay out in-session offsets."""
    frame = rng.add(frame, "session_break", "gap_kind", "gap")
    kind = _u("gap_kind")
    # Gap mixture: mostly seconds, some tens of seconds, a few minutes; 5% zero -> ts ties.
    scale = (pl.when(kind < 0.05).then(0.0).when(kind < 0.60).then(8_000.0)
             .when(kind < 0.90).then(40_000.0).otherwise(180_000.0))
    starts = pl.col("starts")
    return (
        frame.with_columns(
            starts=(pl.col("user_id") != pl.col("user_id").shift(1)).fill_null(True)
            | (_u("session_break") < SESSION_BREAK_P))
        .with_columns(
            gap=pl.when(starts).then(0)
            .otherwise((-(1.0 - _u("gap")).log() * scale).round().cast(pl.Int64)))
        .with_columns(cum=pl.col("gap").cum_sum())
        .with_columns(
            session=starts.cast(pl.Int64).cum_sum() - 1,
            # Running total minus its value at the session's first event: no group-by needed.
            offset=pl.col("cum") - pl.when(starts).then(pl.col("cum")).forward_fill(),
            is_last=starts.shift(-1).fill_null(True),
        )
        .drop("u_session_break", "u_gap_kind", "u_gap", "gap", "cum")
    )


def _session_table(duration: pl.Series, start_ms: int, end_ms: int, rng: _Streams) -> pl.DataFrame:
    """Per session: start time (diurnal-weighted, shifted so the session fits) and surface."""
    lo, width, cdf = _diurnal_bins(start_ms, end_ms)
    n = len(duration)
    bin_ = cdf.search_sorted(rng.uniform("session_hour", n), side="right").clip(upper_bound=len(cdf) - 1)
    frame = rng.add(pl.DataFrame({"duration": duration, "lo": lo.gather(bin_), "width": width.gather(bin_)}),
                    "session_time", "session_surface")
    t0 = pl.col("lo") + (_u("session_time") * pl.col("width")).floor().cast(pl.Int64)
    return frame.select(
        t0=pl.min_horizontal(t0, (end_ms - 1) - pl.col("duration")).clip(lower_bound=start_ms),
        surface=_categorical(_u("session_surface"), SURFACES),
    )


def _event_core(spec: DemoSpec, rng: _Streams, start_ms: int, end_ms: int) -> pl.DataFrame:
    """The distinct events, grouped by user (generation order), without faults or arrivals."""
    n = spec.events
    # Sorted uniforms give sorted users: events come grouped by user without sorting 10M rows.
    frame = pl.DataFrame({"u": rng.uniform("user", n).sort()}).select(
        user_id=_zipf_rank(pl.col("u"), spec.users, _user_zipf_offset(spec)))
    frame = _sessions(frame, rng)
    sessions = _session_table(frame.filter("is_last")["offset"], start_ms, end_ms, rng)
    traits = _user_traits(spec)
    in_session = pl.col("session")
    in_user = pl.col("user_id") - 1
    frame = frame.with_columns(
        ts=(pl.lit(sessions["t0"]).gather(in_session) + pl.col("offset")).clip(start_ms, end_ms - 1),
        session_surface=pl.lit(sessions["surface"]).gather(in_session),
        primary_device=pl.lit(traits["device"]).gather(in_user),
        country=pl.lit(traits["country"]).gather(in_user),
        is_bot=pl.lit(traits["is_bot"]).gather(in_user),
    ).drop("session", "offset", "is_last")
    frame = rng.add(frame, "item", "item_reuse", "action", "surface_keep", "surface", "device_keep",
                    "device", "dwell", "dwell_other")
    frame = frame.with_columns(
        n=pl.int_range(pl.len(), dtype=pl.Int64),
        action=_categorical(_u("action"), ACTIONS),
        # Forward fill never crosses a session: a session's first event is never a reuse.
        item_id=pl.when(~pl.col("starts") & (_u("item_reuse") < ITEM_REUSE_P)).then(None)
        .otherwise(_zipf_rank(_u("item"), spec.n_items, ITEM_ZIPF_OFFSET)).forward_fill(),
        surface=pl.when(_u("surface_keep") < SAME_SURFACE_P).then(pl.col("session_surface"))
        .otherwise(_categorical(_u("surface"), SURFACES)),
        device=pl.when(_u("device_keep") < PRIMARY_DEVICE_P).then(pl.col("primary_device"))
        .otherwise(_categorical(_u("device"), DEVICES)),
    )
    dwell = (pl.when(pl.col("action") == "closeup")
             .then(_log_logistic_ms(_u("dwell"), 2_500.0, 0.9).clip(lower_bound=50))
             .when(_u("dwell_other") < 0.05)
             .then(_log_logistic_ms(_u("dwell"), 600.0, 1.0).clip(lower_bound=20)))
    return frame.select("n", "user_id", "action", "item_id", "ts", "surface", "device", "country",
                        dwell.alias("dwell_ms"), "is_bot")


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
    picked = _smallest_k(rng.uniform("fault", n), sum(c for _, c in counts))
    labels = pl.concat([pl.repeat(_CODE[kind], c, dtype=pl.UInt8, eager=True) for kind, c in counts])
    code = pl.zeros(n, dtype=pl.UInt8, eager=True).scatter(picked, labels)
    # The variant picks which field is missing / mistyped; cut is where a broken record ends.
    return rng.add(pl.DataFrame({"fault": code}), "variant", "cut").select(
        "fault",
        variant=(_u("variant") * 12).floor().cast(pl.UInt8),
        cut=_u("cut").cast(pl.Float32),
    )


def _with_arrivals(frame: pl.DataFrame, rng: _Streams, cap_ms: int) -> pl.DataFrame:
    """Delivery time of each event: jitter for all, minutes for out_of_order, days for late."""
    frame = rng.add(frame, "jitter", "hold", "late_days", "late_time")
    jitter = _log_logistic_ms(_u("jitter"), 2_000.0, 1.2)
    hold = (_u("hold") * (29 * MINUTE_MS) + MINUTE_MS).cast(pl.Int64)
    lag_days = pl.when(_u("late_days") < 0.6).then(1).when(_u("late_days") < 0.9).then(2).otherwise(3)
    late = (pl.col("ts") // DAY_MS + lag_days) * DAY_MS + (_u("late_time") * DAY_MS).cast(pl.Int64)
    arrival = (pl.when(pl.col("fault") == _CODE["late"]).then(late)
               .when(pl.col("fault") == _CODE["out_of_order"]).then(pl.col("ts") + jitter + hold)
               .otherwise(pl.col("ts") + jitter))
    return frame.with_columns(arrival_ts=arrival.clip(upper_bound=cap_ms)).drop(
        "u_jitter", "u_hold", "u_late_days", "u_late_time")


def _duplicates(frame: pl.DataFrame, rng: _Streams, cap_ms: int) -> pl.DataFrame:
    """Re-deliveries of clean-text records: same row (so same text), later arrival."""
    n = frame.height
    malformed = frame["fault"].is_in([_CODE[m] for m in MALFORMED_KINDS])
    u = pl.select(pl.when(pl.lit(malformed)).then(2.0).otherwise(pl.lit(rng.uniform("dup", n)))).to_series()
    dups = rng.add(frame.gather(_smallest_k(u, round(n * DUPLICATE_RATE)).sort()),
                   "dup_when", "dup_soon", "dup_next_day")
    delay = (pl.when(_u("dup_when") < 0.6)
             .then(_log_logistic_ms(_u("dup_soon"), 3 * MINUTE_MS, 1.2))
             .otherwise(DAY_MS + (_u("dup_next_day") * (2 * HOUR_MS)).cast(pl.Int64)))
    return dups.with_columns(
        arrival_ts=(pl.col("arrival_ts") + delay).clip(upper_bound=cap_ms),
        fault=pl.lit(_CODE["duplicate"], dtype=pl.UInt8),
    ).drop("u_dup_when", "u_dup_soon", "u_dup_next_day")


def _event_frame(spec: DemoSpec, start_ms: int | None, end_ms: int | None, id_prefix: str) -> pl.DataFrame:
    """All delivered records as typed columns (no JSON yet), in delivery order."""
    start, end = _resolve_window(spec, start_ms, end_ms)
    # The window and prefix are part of the seed, so chunks of a stream are not copies of each other.
    rng = _Streams(spec.seed, start, end, id_prefix)
    # Nothing is delivered after the last event day + 3 days.
    cap_ms = ((end - 1) // DAY_MS + 4) * DAY_MS - 1
    core = _event_core(spec, rng, start, end)
    frame = _with_arrivals(pl.concat([core, _fault_plan(core.height, rng)], how="horizontal"), rng, cap_ms)
    frame = pl.concat([frame, _duplicates(frame, rng, cap_ms)])
    # A stable sort: equal arrival times keep generation order, so output stays deterministic.
    return frame.sort("arrival_ts", maintain_order=True).with_columns(
        arrival_date=(pl.col("arrival_ts") // DAY_MS).cast(pl.Int32).cast(pl.Date))


# ---- JSON rendering ---------------------------------------------------------------------------

def _quoted(name: str, col: str) -> list[pl.Expr]:
    return [pl.lit(f',"{name}":"'), pl.col(col).cast(pl.String), pl.lit('"')]


def _json_clean(seed: int, id_prefix: str) -> pl.Expr:
    """The record as the client meant it: one concat, no per-row branching on faults."""
    prefix = json.dumps(f"{id_prefix}{seed}-")[1:-1]
    return pl.concat_str([
        pl.lit(f'{{"event_id":"{prefix}'), pl.col("n").cast(pl.String),
        pl.lit('","user_id":'), pl.col("user_id").cast(pl.String),
        *_quoted("action", "action"),
        pl.lit(',"item_id":'), pl.col("item_id").cast(pl.String),
        pl.lit(',"ts":'), pl.col("ts").cast(pl.String),
        *_quoted("surface", "surface"),
        *_quoted("device", "device"),
        *_quoted("country", "country"),
        pl.lit(',"dwell_ms":'), pl.col("dwell_ms").cast(pl.String).fill_null("null"),
        pl.lit(',"is_bot":'), pl.when(pl.col("is_bot")).then(pl.lit("true")).otherwise(pl.lit("false")),
        pl.lit("}"),
    ])


def _json_broken(seed: int, id_prefix: str) -> pl.Expr:
    """The malformed variants; only ever evaluated on the few malformed rows."""
    fault, variant = pl.col("fault"), pl.col("variant")
    missing = fault == _CODE["missing_field"]
    mistyped = fault == _CODE["mistyped_field"]
    miss_v, mistype_v = variant % 4, variant % 3
    prefix = json.dumps(f"{id_prefix}{seed}-")[1:-1]

    def field(name: str, text: pl.Expr, missing_variant: int | None = None,
              mistyped_variant: int | None = None, bad: str = "") -> pl.Expr:
        expr = pl.concat_str([pl.lit(f'"{name}":'), text])
        if mistyped_variant is not None:
            expr = pl.when(mistyped & (mistype_v == mistyped_variant)).then(pl.lit(f'"{name}":"{bad}"')).otherwise(expr)
        if missing_variant is not None:
            expr = pl.when(missing & (miss_v == missing_variant)).then(pl.lit(None, pl.String)).otherwise(expr)
        return expr

    def quoted(col: str) -> pl.Expr:
        return pl.concat_str([pl.lit('"'), pl.col(col).cast(pl.String), pl.lit('"')])

    fields = [
        field("event_id", pl.concat_str([pl.lit(f'"{prefix}'), pl.col("n").cast(pl.String), pl.lit('"')]), 2),
        field("user_id", pl.col("user_id").cast(pl.String), 0, 0, "abc"),
        field("action", quoted("action")),
        field("item_id", pl.col("item_id").cast(pl.String), 3),
        field("ts", pl.col("ts").cast(pl.String), 1, 1, "yesterday"),
        field("surface", quoted("surface")),
        field("device", quoted("device")),
        field("country", quoted("country")),
        field("dwell_ms", pl.col("dwell_ms").cast(pl.String).fill_null("null")),
        field("is_bot", pl.when(pl.col("is_bot")).then(pl.lit("true")).otherwise(pl.lit("false")), None, 2, "maybe"),
    ]
    body = pl.concat_str([pl.lit("{"), pl.concat_str(fields, separator=",", ignore_nulls=True), pl.lit("}")])
    # A strict prefix of a JSON object never parses: its closing brace is gone.
    cut_len = (pl.col("cut").cast(pl.Float64) * (body.str.len_bytes() - 1).cast(pl.Float64)).floor().cast(pl.UInt32) + 1
    return pl.when(fault == _CODE["malformed_json"]).then(body.str.head(cut_len)).otherwise(body)


def _render(frame: pl.DataFrame, seed: int, id_prefix: str) -> pl.DataFrame:
    """value / key / event_ts / arrival_date / is_fault for rows of an event frame."""
    fault, variant = pl.col("fault"), pl.col("variant")
    broken = fault == _CODE["malformed_json"]
    unkeyed = (broken | ((fault == _CODE["missing_field"]) & (variant % 4 == 0))
               | ((fault == _CODE["mistyped_field"]) & (variant % 3 == 0)))
    labels = pl.Series(list(_FAULT_CODES), dtype=pl.String)
    # The streaming engine renders morsels on every core; the in-memory one uses one per expression.
    out = frame.lazy().select(
        _json_clean(seed, id_prefix).alias("value"),
        pl.when(unkeyed).then(pl.lit(None, pl.String)).otherwise(pl.col("user_id").cast(pl.String)).alias("key"),
        pl.when(broken).then(pl.lit(None, pl.Int64)).otherwise(pl.col("ts")).alias("event_ts"),
        pl.col("arrival_date"),
        pl.lit(labels).gather(fault).alias("is_fault"),
    ).collect(engine="streaming")
    bad = frame["fault"].is_in([_CODE[m] for m in MALFORMED_KINDS]).arg_true()
    if len(bad):
        fixed = frame.gather(bad).select(_json_broken(seed, id_prefix))
        out = out.with_columns(out["value"].scatter(bad, fixed.to_series()))
    return out


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
    return _render(_event_frame(spec, start_ms, end_ms, id_prefix), spec.seed, id_prefix)


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
    share = _zipf_share(spec.n_items, ITEM_ZIPF_OFFSET)
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
    # Pin "today" once, so events and snapshots agree even if the run crosses midnight.
    spec = replace(spec, end_date=spec.last_day)
    landing = Path(landing_dir)
    source_dir = landing / SOURCE_DIR
    _clear_partitions(source_dir, "arrival_date=")
    for name in ENRICHMENT_NAMES:
        _clear_partitions(landing / "enrichments" / name, "date=")

    say(f"generating {spec.events:,} events for {spec.users:,} users over {spec.days} days")
    frame = _event_frame(spec, None, None, "e")
    files: list[str] = []
    fault_counts = {k: 0 for k in FAULT_KINDS}
    arrival_dates = []
    for day, offset, length in _date_runs(frame["arrival_date"]):
        # Render one arrival day at a time: peak memory is the typed frame plus one day of text.
        lines = _render(frame.slice(offset, length), spec.seed, "e")
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
