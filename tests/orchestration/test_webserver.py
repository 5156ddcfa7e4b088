"""The code location as the UI sees it: start ``dagster-webserver`` on the repository's workspace.yaml
and ask its GraphQL API for the location's load status, its assets and their checks.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WEBSERVER = Path(sys.executable).parent / "dagster-webserver"
STARTUP_TIMEOUT_S = 150

EXPECTED_ASSETS = {
    "raw/user_engagements", "dead_letter/user_engagements",
    "enrichments/item_embedding", "enrichments/item_category", "enrichments/item_popularity",
    "events/pin_click", "events/pin_save", "events/pin_closeup",
    "sequences/engagements_v1", "sequences/saves_v1",
}
EVENT_CHECKS = {"schema_matches_definition", "event_id_unique", "complete_vs_raw", "enrichment_coverage", "freshness"}
SEQUENCE_CHECKS = {"schema_matches_definition", "sequence_invariants"}

LOCATION_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { name repositories { name } }
          ... on PythonError { message stack }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

ASSETS_QUERY = """
{
  assetNodes {
    assetKey { path }
    groupName
    isPartitioned
    assetChecksOrError {
      __typename
      ... on AssetChecks { checks { name blocking } }
    }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(base: str, query: str) -> dict:
    req = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())
    assert not body.get("errors"), body["errors"]
    return body["data"]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """Stop the webserver and the code server it started (their own process group, created below)."""
    pgid = proc.pid
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    while (proc.poll() is None or _group_alive(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)  # poll() reaps the webserver, so a finished group really is gone
    if _group_alive(pgid):  # a slow graceful shutdown: the instance is a throwaway
        os.killpg(pgid, signal.SIGKILL)
    proc.wait(timeout=10)


def _defined(root: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """Assets and checks of the same code location, loaded in this process."""
    from tests.support.quality_helpers import platform_env

    with platform_env(root / "lake", root / "landing"):
        from seq_assets.definitions import defs

        graph = defs().resolve_asset_graph()
        assets = {k.to_user_string() for k in graph.get_all_asset_keys()}
        checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    return assets, checks


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    root = tmp_path_factory.mktemp("webserver")
    (root / "dagster_home").mkdir()
    (root / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if k != "SEQ_DEFS_DIR"}
    env.update(DAGSTER_HOME=str(root / "dagster_home"), SEQ_LAKE_URI=str(root / "lake"),
               SEQ_LANDING_DIR=str(root / "landing"), PYTHONUNBUFFERED="1")
    port = _free_port()
    log = open(root / "webserver.log", "wb")
    proc = subprocess.Popen([str(WEBSERVER), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        # While the server boots in its own processes, load the same location here to compare with.
        defined = _defined(root)
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dagster-webserver exited with {proc.returncode}:\n{(root / 'webserver.log').read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster-webserver did not answer within {STARTUP_TIMEOUT_S}s:\n"
                            f"{(root / 'webserver.log').read_text()[-4000:]}")
            time.sleep(0.5)
        # The location may still be loading when the server first answers.
        while True:
            entries = _graphql(base, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the code location did not load within {STARTUP_TIMEOUT_S}s: {entries}")
            time.sleep(0.5)
        yield base, entries, defined
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def asset_nodes(webserver) -> dict[str, dict]:
    base = webserver[0]
    nodes = _graphql(base, ASSETS_QUERY)["assetNodes"]
    return {"/".join(n["assetKey"]["path"]): n for n in nodes}


def test_the_code_location_loads_without_error(webserver):
    entries = webserver[1]
    assert [e["name"] for e in entries] == ["seqplat"]
    (entry,) = entries
    loc = entry["locationOrLoadError"]
    assert loc["__typename"] == "RepositoryLocation", loc.get("message", loc)
    assert loc["repositories"], loc


@pytest.fixture(scope="module")
def defined(webserver):
    return webserver[2]


def test_every_asset_of_the_location_is_listed(asset_nodes, defined):
    assets, _ = defined
    assert EXPECTED_ASSETS <= assets
    assert set(asset_nodes) == assets  # every asset the location defines, and nothing else
    for key in EXPECTED_ASSETS:
        node = asset_nodes[key]
        assert node["isPartitioned"], key
        assert node["groupName"] == key.split("/")[0].replace("dead_letter", "raw"), key


def test_every_check_is_listed_with_its_blocking_flag(asset_nodes, defined):
    _, defined_checks = defined
    got = {}
    for key, node in asset_nodes.items():
        checks = node["assetChecksOrError"]
        assert checks["__typename"] == "AssetChecks", (key, checks)
        got[key] = {c["name"]: c["blocking"] for c in checks["checks"]}
    assert {(k, c) for k, cs in got.items() for c in cs} == defined_checks
    # Every table bounds its files per day (informational); a late sequences/ snapshot blocks.
    for et in ("pin_click", "pin_save", "pin_closeup"):
        assert got[f"events/{et}"] == {**{c: True for c in EVENT_CHECKS}, "freshness": False,
                                       "files_per_partition": False}, et
    for f in ("engagements_v1", "saves_v1"):
        assert got[f"sequences/{f}"] == {**{c: True for c in SEQUENCE_CHECKS}, "freshness": True,
                                         "files_per_partition": False}, f
    for key in EXPECTED_ASSETS:
        if key.split("/")[0] in ("raw", "dead_letter", "enrichments"):
            assert got[key] == {"files_per_partition": False}, key
