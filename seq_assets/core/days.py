"""UTC days and epoch milliseconds: the one copy of the day arithmetic every runtime uses."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

DAY_MS = 86_400_000
EPOCH = date(1970, 1, 1)


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
