"""Settings: every ``SEQ_*`` environment variable is read here and nowhere else.

The edges of the platform (``seqctl``, the Dagster code location, the server's start, the public
training and SQL reads) call these functions and pass the values down; ``core``, ``storage`` and
``kafka`` take them as arguments. Each has a default that works on a fresh checkout.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from seq_assets.core import executors  # noqa: F401  (registers the built-in executors' names)
from seq_assets.core.compiled import Compiled, compile_definitions
from seq_assets.storage.landing import Landing
from seq_assets.storage.lake import Lake
from signal_defs import loader
from signal_defs.compile import read_compiled
from signal_defs.model import Registry

DEFAULT_SENSOR_INTERVAL_S = 5  # Dagster's sensor loop does not tick faster than this
DEFAULT_STREAM_MAX_BATCH = 200_000  # records per micro-batch run (bigger runs amortize the Delta commits)
DEFAULT_STREAM_PARTITION_GROUPS = 1  # micro-batch runs side by side per topic (1: one run covers every partition)
DEFAULT_VACUUM_RETENTION_HOURS = 168  # 7 days, Delta's own default


def lake_uri() -> str:
    """Root of every Delta table: ``SEQ_LAKE_URI`` (any URI deltalake accepts), default ``.data/lake``."""
    return os.environ.get("SEQ_LAKE_URI") or os.path.abspath(".data/lake")


def storage_options() -> dict[str, str] | None:
    """``SEQ_STORAGE_OPTIONS``: a JSON object handed to deltalake and polars (endpoint, keys, ...)."""
    text = os.environ.get("SEQ_STORAGE_OPTIONS", "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"SEQ_STORAGE_OPTIONS is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise ValueError("SEQ_STORAGE_OPTIONS must be a JSON object of option names to values")
    return {str(k): str(v) for k, v in value.items()}


def landing_dir() -> str:
    """Where batch sources and enrichment snapshots land as files: ``SEQ_LANDING_DIR``."""
    return os.environ.get("SEQ_LANDING_DIR") or os.path.abspath(".data/landing")


def defs_dir() -> str | None:
    """A compiled definitions folder (``seqctl defs compile --out``); unset: compile the definitions
    of :func:`registry`."""
    return os.environ.get("SEQ_DEFS_DIR") or None


def defs_module() -> str | None:
    """``SEQ_DEFS_MODULE``: the importable module (the current directory searched first) whose
    ``REGISTRY`` is every definition; unset: the demo definitions shipped in ``signal_defs``."""
    return os.environ.get("SEQ_DEFS_MODULE") or None


def _import_defs_module(module: str):
    try:
        return loader.import_definitions(module, os.getcwd())
    except loader.DefinitionsModuleError as e:
        raise loader.DefinitionsModuleError(f"{e} (SEQ_DEFS_MODULE={module})") from None


def registry() -> Registry:
    """The definitions to validate, compile and run: ``SEQ_DEFS_MODULE``'s ``REGISTRY``, else the demo's."""
    module = defs_module()
    if module:
        return _import_defs_module(module).REGISTRY
    import signal_defs

    return signal_defs.REGISTRY


def defs_lock() -> Path:
    """The production version lock of :func:`registry`: ``versions.lock.json`` beside the
    ``SEQ_DEFS_MODULE`` file, else the demo's ``signal_defs/versions.lock.json``."""
    module = defs_module()
    return loader.lock_path(_import_defs_module(module)) if module else loader.DEMO_LOCK


def partition_start() -> str:
    """First daily partition, ``SEQ_PARTITION_START`` (YYYY-MM-DD)."""
    return os.environ.get("SEQ_PARTITION_START", "2026-01-01")


def kafka_bootstrap() -> str:
    return os.environ.get("SEQ_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


def sensor_interval() -> int:
    """Seconds between ticks of each Kafka sensor: ``SEQ_SENSOR_INTERVAL``."""
    return int(os.environ.get("SEQ_SENSOR_INTERVAL", DEFAULT_SENSOR_INTERVAL_S))


def stream_max_batch() -> int:
    """Most records one micro-batch run reads: ``SEQ_STREAM_MAX_BATCH``."""
    return int(os.environ.get("SEQ_STREAM_MAX_BATCH", DEFAULT_STREAM_MAX_BATCH))



def _whole_number(name: str, default: int, minimum: int, not_a_number: str, too_small: str) -> int:
    """An integer setting: unset or blank is ``default``; text that is not an integer, or a value
    below ``minimum``, is refused naming the variable (``f"{name} {not_a_number}, got 'x'"``)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} {not_a_number}, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"{name} {too_small}, got {value}")
    return value


def stream_partition_groups() -> int:
    """How many groups a topic's partitions are split into, each read by micro-batch runs of its own
    (partition p in group p % groups), side by side: ``SEQ_STREAM_PARTITION_GROUPS``, default 1. The
    topic's partition count or more gives one run per partition."""
    return _whole_number("SEQ_STREAM_PARTITION_GROUPS", DEFAULT_STREAM_PARTITION_GROUPS, 1,
                         "must be a whole number of groups", "must be 1 or more")


def vacuum_retention_hours() -> int:
    """How long a file removed from a table stays on storage before maintenance deletes it, in whole
    hours: ``SEQ_VACUUM_RETENTION_HOURS``, default 168 (7 days). No file younger than that is deleted,
    nor one a version inside the log retention reads (:func:`log_retention_hours`)."""
    return _whole_number("SEQ_VACUUM_RETENTION_HOURS", DEFAULT_VACUUM_RETENTION_HOURS, 0,
                         "must be a whole number of hours", "must not be negative")


def log_retention_hours() -> int:
    """How long a table's log keeps its commits, in whole hours: ``SEQ_LOG_RETENTION_HOURS``,
    default 2, at least 1. Every version inside it can be opened and read whole (time travel reaches
    that far back; vacuum keeps the files those versions read); the platform's own readers only
    follow versions minutes old. The log grows with the commits inside it."""
    from seq_assets.storage.maintenance import LOG_RETENTION_HOURS, MIN_LOG_RETENTION_HOURS

    return _whole_number("SEQ_LOG_RETENTION_HOURS", LOG_RETENTION_HOURS, MIN_LOG_RETENTION_HOURS,
                         "must be a whole number of hours", f"must be at least {MIN_LOG_RETENTION_HOURS}")


EXECUTORS = ("in_process", "celery")


def executor() -> str:
    """How an asset run executes its steps: ``SEQ_EXECUTOR``, ``in_process`` (default: every step in
    the run's own process) or ``celery`` (each step a task on the dagster-celery workers)."""
    name = os.environ.get("SEQ_EXECUTOR", "").strip() or "in_process"
    if name not in EXECUTORS:
        raise ValueError(f"SEQ_EXECUTOR must be one of {', '.join(EXECUTORS)}, got {name!r}")
    return name


def celery_broker() -> str:
    """The Celery broker of ``SEQ_EXECUTOR=celery``: ``SEQ_CELERY_BROKER``, default a local Redis."""
    return os.environ.get("SEQ_CELERY_BROKER", "").strip() or "redis://127.0.0.1:6379/0"


def celery_backend() -> str:
    """The Celery result backend: ``SEQ_CELERY_BACKEND``, default the broker's Redis."""
    return os.environ.get("SEQ_CELERY_BACKEND", "").strip() or celery_broker()


def user_buckets() -> int:
    """``SEQ_USER_BUCKETS``: how many steps build one day of ``events/`` and ``sequences/``, each the
    users of one stable hash bucket (``seq_assets.core.buckets``); default 1 (one step per asset).
    Every process of a deployment (the code location and every worker) must have the same value."""
    return _whole_number("SEQ_USER_BUCKETS", 1, 1, "must be a whole number >= 1", "must be a whole number >= 1")


def serve_shard_urls() -> list[str]:
    """``SEQ_SERVE_SHARDS``: the serving shard map, one URL per shard in shard order, comma separated
    (``http://10.0.0.1:8000,http://10.0.0.2:8000``); unset: none (a 421 names the owner shard only)."""
    return [u.strip() for u in os.environ.get("SEQ_SERVE_SHARDS", "").split(",") if u.strip()]


def tenants_file() -> str | None:
    """The serving API's tenants file, ``SEQ_TENANTS_FILE``; unset: local mode, no keys."""
    return os.environ.get("SEQ_TENANTS_FILE") or None


def lake(uri: str | None = None) -> Lake:
    """The lake at ``uri`` (default ``SEQ_LAKE_URI``), with ``SEQ_STORAGE_OPTIONS``."""
    return Lake(uri or lake_uri(), storage_options())


@functools.lru_cache(maxsize=4)
def _compiled(defs_dir: str | None, defs_module: str | None) -> Compiled:
    if defs_dir:
        return Compiled(read_compiled(defs_dir))
    return Compiled(compile_definitions(registry()))


def load_compiled() -> Compiled:
    """The compiled definitions, loaded once per process: the folder ``SEQ_DEFS_DIR`` when set, else
    :func:`registry` (``SEQ_DEFS_MODULE`` or the demo) compiled in memory."""
    return _compiled(defs_dir(), defs_module())


def landing(uri: str | None = None) -> Landing:
    """The landing area at ``uri`` (default ``SEQ_LANDING_DIR``), with ``SEQ_STORAGE_OPTIONS``."""
    return Landing(uri or landing_dir(), storage_options())
