"""Helpers for the quality, shadow and webserver tests: a demo lake built once by the real batch path,
copies of it to break on purpose, and a switch of the platform to another compiled registry.

Nothing here touches ``conftest.py``: a good lake is built once per test process (the first module
that asks for it pays) and every module works on its own copy, so breaking data in one test can never
leak into another.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
from deltalake import write_deltalake

from tests.support.demo_lake import DAYS as TEMPLATE_DAYS
from tests.support.demo_lake import demo_lake_template
from tests.support.envutil import scoped_env

DAYS = (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3))
EVENT_TYPES = ("pin_click", "pin_save", "pin_closeup")
FEATURES = ("engagements_v1", "saves_v1")
EVENT_CHECKS = {"schema_matches_definition", "event_id_unique", "complete_vs_raw", "enrichment_coverage"}
SEQUENCE_CHECKS = {"schema_matches_definition", "sequence_invariants"}


def clear_compiled_cache() -> None:
    from seq_assets.settings import _compiled

    _compiled.cache_clear()


@contextmanager
def platform_env(lake: Path | str, landing: Path | str, defs_dir: Path | str | None = None):
    """Point the platform at ``lake``/``landing`` (and a compiled registry), restoring os.environ after."""
    with scoped_env(SEQ_LAKE_URI=str(lake), SEQ_LANDING_DIR=str(landing),
                    SEQ_DEFS_DIR=None if defs_dir is None else str(defs_dir)):
        clear_compiled_cache()
        try:
            yield
        finally:
            clear_compiled_cache()


def materialize(partition_key: str | None = None, selection=None, raise_on_error: bool = True,
                extra: tuple = (), partition_range: tuple[str, str] | None = None):
    """One real Dagster run of the platform's assets (as compiled from the current environment)."""
    from seq_assets.orchestration.assets import build_assets
    from seq_assets.orchestration.resources import LakeResource
    from seq_assets.settings import load_compiled

    tags = None
    if partition_range is not None:
        # What a single-run backfill does: one run over a partition range, the days walked oldest first.
        tags = {"dagster/asset_partition_range_start": partition_range[0],
                "dagster/asset_partition_range_end": partition_range[1]}
    return dg.materialize([*build_assets(load_compiled()), *extra], partition_key=partition_key, selection=selection,
                          resources={"lake": LakeResource()}, raise_on_error=raise_on_error, tags=tags)


@dataclass
class BuiltLake:
    root: Path
    landing: Path
    lake: Path
    results: dict  # day -> ExecuteInProcessResult of the run that built it


_BUILT: dict[str, BuiltLake] = {}


def good_lake(tmp_path_factory) -> BuiltLake:
    """The demo data of 2026-03-01..03 materialized day by day with the shipped definitions, once."""
    if "good" not in _BUILT:
        t = demo_lake_template(tmp_path_factory)
        assert tuple(DAYS) == TEMPLATE_DAYS
        _BUILT["good"] = BuiltLake(t.root, t.landing, t.lake, t.results)
    return _BUILT["good"]


def copy_lake(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def arrow(df: pl.DataFrame):
    """What delta-rs can write (no string views)."""
    return df.to_arrow(compat_level=pl.CompatLevel.oldest())


def rewrite_table(uri: str, df: pl.DataFrame) -> None:
    """Replace a whole Delta table, schema included (how someone would break a table by hand)."""
    write_deltalake(uri, arrow(df), mode="overwrite", schema_mode="overwrite", partition_by=["date"])


def append_rows(uri: str, df: pl.DataFrame) -> None:
    write_deltalake(uri, arrow(df), mode="append", partition_by=["date"])


def evaluations(result) -> dict[tuple[str, str], object]:
    """{(asset key 'events/pin_click', check name): AssetCheckEvaluation} of one run."""
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def materializations(result) -> dict[str, object]:
    """{asset key: AssetMaterialization} of one run (the last one when a key repeats)."""
    return {e.asset_key.to_user_string(): e.event_specific_data.materialization
            for e in result.get_asset_materialization_events()}


def meta_value(metadata: dict, key: str):
    v = metadata[key]
    return getattr(v, "value", v)


def write_registry(registry, out_dir: Path) -> Path:
    """Compile a registry to a folder the platform reads through SEQ_DEFS_DIR."""
    from signal_defs.compile import compile_registry, write_compiled

    return write_compiled(compile_registry(registry), out_dir)
