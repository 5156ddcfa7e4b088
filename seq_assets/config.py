"""Settings read from the environment, each with a default that works on a fresh checkout."""

from __future__ import annotations

import os
from datetime import date


def lake_uri() -> str:
    """Root of every Delta table: ``SEQ_LAKE_URI`` (any URI deltalake accepts), default ``.data/lake``."""
    return os.environ.get("SEQ_LAKE_URI") or os.path.abspath(".data/lake")


def landing_dir() -> str:
    """Where batch sources and enrichment snapshots land as files: ``SEQ_LANDING_DIR``."""
    return os.environ.get("SEQ_LANDING_DIR") or os.path.abspath(".data/landing")


def defs_dir() -> str | None:
    """A compiled definitions folder (``seqctl defs compile --out``); unset: compile the in-repo ones."""
    return os.environ.get("SEQ_DEFS_DIR") or None


def partition_start() -> str:
    """First daily partition, ``SEQ_PARTITION_START`` (YYYY-MM-DD)."""
    return os.environ.get("SEQ_PARTITION_START", "2026-01-01")


def kafka_bootstrap() -> str:
    return os.environ.get("SEQ_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def today_utc() -> date:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).date()
