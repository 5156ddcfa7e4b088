"""The small demo lake most test modules start from, built once per test process.

Demo data for 2026-03-01..03 (150 users, 6000 events, seed 7) and the lake after one real Dagster
run of the whole batch graph per day, oldest first. Modules that write copy it first.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from tests.support.envutil import scoped_env

DAYS = (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3))
SPEC = {"users": 150, "days": 3, "events": 6000, "seed": 7}


@dataclass(frozen=True)
class Template:
    root: Path
    landing: Path
    lake: Path
    summary: dict  # what write_demo_data returned
    results: dict  # day -> the ExecuteInProcessResult of that day's run


_BUILT: dict[str, Template] = {}


def demo_lake_template(tmp_path_factory) -> Template:
    """Build the lake on first use in this process; later calls return the same (read-only) one."""
    if "t" not in _BUILT:
        import dagster as dg

        from seq_assets.devtools.demo_data import DemoSpec, write_demo_data
        from seq_assets.orchestration.assets import build_assets
        from seq_assets.orchestration.resources import LakeResource
        from seq_assets.settings import load_compiled

        root = tmp_path_factory.getbasetemp() / "demo_lake_template"
        shutil.rmtree(root, ignore_errors=True)
        landing, lake = root / "landing", root / "lake"
        summary = write_demo_data(DemoSpec(end_date=DAYS[-1], **SPEC), landing)
        results = {}
        with scoped_env(SEQ_LAKE_URI=str(lake), SEQ_LANDING_DIR=str(landing), SEQ_DEFS_DIR=None):
            for d in DAYS:
                result = dg.materialize(build_assets(load_compiled()), partition_key=d.isoformat(),
                                        resources={"lake": LakeResource()})
                assert result.success, f"materialize {d} failed"
                results[d] = result
        _BUILT["t"] = Template(root, landing, lake, summary, results)
    return _BUILT["t"]


def copy_template(tmp_path_factory, dst: Path) -> Template:
    """A private copy (landing and lake) at ``dst``, for a module that changes what it reads."""
    t = demo_lake_template(tmp_path_factory)
    shutil.copytree(t.root, dst)
    return Template(dst, dst / "landing", dst / "lake", t.summary, t.results)
