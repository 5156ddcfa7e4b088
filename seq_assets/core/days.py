"""UTC days and epoch milliseconds: the one copy of the day arithmetic every runtime uses, and the
one rule that turns a source's event time, as it arrives, into the lake's epoch milliseconds."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import polars as pl

DAY_MS = 86_400_000
EPOCH = date(1970, 1, 1)
# Milliseconds per unit of an integer event time, as (multiplier, divisor).
_PER_UNIT = {"ms": (1, 1), "s": (1000, 1), "us": (1, 1000)}
_INT64_MAX = 2**63 - 1
# ISO 8601 forms a "timestamp" field may take: date and time with "T" or a space, optional
# fraction, and a "Z" or numeric offset (aware) or nothing (naive, meaning UTC); or a date alone.
_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z")
_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M")


def day_start_ms(day: date) -> int:
    """Start of a UTC day in epoch milliseconds."""
    return (day - EPOCH).days * DAY_MS


def end_of_day_ms(day: date) -> int:
    """Exclusive end of a UTC day in epoch milliseconds."""
    return day_start_ms(day) + DAY_MS


def day_of_ms(ms: int) -> date:
    """The UTC day an epoch-millisecond time falls on."""
    return EPOCH + timedelta(days=ms // DAY_MS)


def days_between(start_ms: int, end_ms: int) -> list[date]:
    """Every UTC day touched by [start_ms, end_ms]."""
    first, last = day_of_ms(start_ms), day_of_ms(end_ms)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def today_utc() -> date:
    return datetime.now(timezone.utc).date()


def parse_timestamp(text: pl.Expr) -> pl.Expr:
    """ISO 8601 text as a UTC datetime (microseconds); null when it is not one.

    Accepted: ``2026-03-01T08:00:00Z``, ``...T08:00:00.123+02:00``, ``...+0200``, without seconds,
    with a space for the ``T``, and naive times (``2026-03-01T08:00:00``, taken as UTC) or a date
    alone (midnight UTC). Each form is parsed with an explicit format, so a batch mixing them parses
    every row (format inference would follow the first row only).
    """
    t = text.str.strip_chars().str.replace(r"^(\d{4}-\d{2}-\d{2})[ t]", "${1}T").str.replace(r"[zZ]$", "+00:00")
    aware = [t.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False) for f in _AWARE]
    naive = [t.str.to_datetime(f, time_unit="us", strict=False).dt.replace_time_zone("UTC") for f in _NAIVE]
    day = t.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return pl.coalesce(*aware, *naive, day)


def event_time_ms(source: dict, value: pl.Expr, dtype: pl.DataType = pl.String) -> pl.Expr:
    """The event time of a compiled ``source`` in epoch milliseconds (Int64), from its raw field.

    ``value`` is the source's ``time_field`` as it arrives, of type ``dtype``: text (a JSON value,
    the default), an integer, or a datetime (a typed batch file). The rule:

    - a field of type ``int64`` counts ``time_unit`` since the epoch: ``s`` x 1000, ``ms`` as is,
      ``us`` // 1000 (floor);
    - a field of type ``timestamp`` is ISO 8601 text (see :func:`parse_timestamp`; naive is UTC)
      or a datetime (naive is UTC); a typed file's integer column counts ``time_unit`` as above.

    Anything that does not read as a time (``"yesterday"``, ``1.5``, a count out of range) is null,
    which the decoder turns into a dead letter naming the field.
    """
    if dtype == pl.String and source["schema"][source["time_field"]] == "timestamp":
        return parse_timestamp(value).dt.epoch("ms")
    if isinstance(dtype, pl.Datetime):
        aware = value.dt.convert_time_zone("UTC") if dtype.time_zone else value.dt.replace_time_zone("UTC")
        return aware.dt.epoch("ms")
    mul, div = _PER_UNIT[source["time_unit"]]
    count = value.cast(pl.Int64, strict=False)
    if mul > 1:
        count = pl.when(count.abs() <= _INT64_MAX // mul).then(count * mul)
    return count // div if div > 1 else count
