"""Shared fixtures: a small demo lake materialized once per session, and an independent oracle.

The oracle reads the landing JSONL files with ``json.loads`` and recomputes, in plain Python,
what the batch path should have written. It deliberately shares no code with ``seq_assets`` so a
bug in the engine cannot hide behind the same bug in the check.
"""

from __future__ import annotations

import pytest

from tests.support.demo_lake import DAYS, demo_lake_template
from tests.support.oracle import DEMO_DAYS, DemoLake, Oracle

# The stream fixtures (a real broker, a lake, a Dagster instance) come from this plugin module.
pytest_plugins = ["tests.support.stream", "tests.support.s3"]


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory) -> DemoLake:
    """Demo landing data for 2026-03-01..03 and the lake after materializing those days in order."""
    t = demo_lake_template(tmp_path_factory)
    assert tuple(DEMO_DAYS) == DAYS
    root, landing, lake, summary, results = t.root, t.landing, t.lake, t.summary, t.results
    return DemoLake(root, landing, lake, summary, results)


@pytest.fixture
def demo_env(demo_lake, monkeypatch) -> DemoLake:
    """The demo lake with SEQ_LAKE_URI / SEQ_LANDING_DIR pointing at it for this test only."""
    for k, v in demo_lake.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SEQ_DEFS_DIR", raising=False)
    return demo_lake


@pytest.fixture(scope="session")
def oracle(demo_lake) -> Oracle:
    return Oracle.from_landing(demo_lake.landing)


@pytest.fixture(scope="session")
def lake(demo_lake):
    from seq_assets.storage.lake import Lake

    return Lake(str(demo_lake.lake))


@pytest.fixture(scope="session")
def compiled():
    from seq_assets.core.compiled import Compiled, compile_definitions
    from signal_defs import REGISTRY

    return Compiled(compile_definitions(REGISTRY))  # the shipped definitions, whatever SEQ_DEFS_DIR says
