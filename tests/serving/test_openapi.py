"""The API's OpenAPI document, and the API fuzzed from it.

* ``GET /openapi.json`` lists exactly the app's routes, with the X-API-Key only when tenants are
  configured.
* ``schemathesis run`` generates requests from the document (valid and invalid ones: its examples,
  coverage and fuzzing phases) against a real uvicorn on loopback, in local mode and with a tenants
  file, each run bounded in examples per operation and in time. Every answer must be one the document
  describes (status, content type, schema, headers), none a 5xx, and every 4xx an Error with a
  message (``tests/support/fuzz_hooks.py``, which also mixes in users with events, an as_of that
  finds them and the tenants' keys).

(schemathesis runs as its command, not its pytest plugin: the plugin's lazy schemas rename the
test's node through an attribute pytest 9.2 no longer has.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from seq_assets.serving.app import Tenants, create_app
from seq_assets.serving.service import SequenceService
from seq_assets.serving.tail import KafkaTail
from seq_assets.settings import load_compiled
from seq_assets.storage.lake import Lake
from tests.support.serving_helpers import (
    DAYS,
    ROOT,
    SOURCE,
    ThreadServer,
    as_of_param,
    event,
    now_ms,
    records_frame,
    shared_lake,
)

pytestmark = pytest.mark.timeout(180)

TENANTS_YAML = """
tenants:
  ranking: {key: "rk-0123456789", features: [engagements_v1], max_n: 500, max_concurrency: 16}
  savesonly: {key: "sv-0123456789", features: [saves], max_n: 50, max_concurrency: 2}
"""
KEYS = ["rk-0123456789", "sv-0123456789"]  # between them, every feature is a 200 for one and a 403 for the other
MAX_EXAMPLES = 30  # per operation and phase
MAX_SECONDS = 15  # per run of schemathesis: fuzzing repeats until it is spent
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "error_has_a_message"]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The service over the shared lake, with fresh events of a few users fed to a tail by hand."""
    service = SequenceService(load_compiled(), Lake(str(shared_lake(tmp_path_factory).lake)))
    service.tail = KafkaTail(service, "127.0.0.1:9")  # never started
    t = now_ms()
    service.tail.ingest(SOURCE, records_frame([
        event(f"fuzz-{u}-{i}", u, ("click", "save", "closeup")[i % 3], 100 + i, t - 1000 * (i + 1), dwell=i * 10 or None)
        for u in (1, 2, 3) for i in range(4)]))
    return service


@pytest.fixture(scope="module", params=["local", "tenants"])
def server(request, service, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"openapi_{request.param}")
    tenants = Tenants.load(None)
    if request.param == "tenants":
        (d / "tenants.yaml").write_text(TENANTS_YAML)
        tenants = Tenants.load(str(d / "tenants.yaml"))
    server = ThreadServer(create_app(service, tenants=tenants, refresh_seconds=3600)).start()
    try:
        yield SimpleNamespace(mode=request.param, url=server.url, dir=d)
    finally:
        server.stop()


def test_the_document_lists_every_route_and_the_key_only_with_tenants(service, server):
    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    routes = {(r.path, m.lower()) for r in create_app(service).routes for m in r.methods if m != "HEAD"}
    assert {(p, m) for p, ops in doc["paths"].items() for m in ops} == routes
    sequence = doc["paths"]["/v1/sequences/{feature}/{user_id}"]["get"]
    assert [(p["name"], p["in"]) for p in sequence["parameters"]] == [
        ("feature", "path"), ("user_id", "path"), ("n", "query"), ("since", "query"), ("fields", "query"),
        ("format", "query"), ("as_of", "query")]
    assert sequence["parameters"][0]["schema"]["enum"] == ["engagements", "engagements_v1", "saves", "saves_v1"]
    assert sequence["parameters"][5]["schema"] == {"enum": ["json", "arrays"], "type": "string"}
    batch = doc["components"]["schemas"]["BatchRequest"]
    assert batch["required"] == ["user_ids"] and batch["properties"]["user_ids"]["maxItems"] == 1000
    assert set(doc["components"]["schemas"]["SequenceArrays"]["required"]) == {"feature", "user_id", "n", "length", "mask"}
    assert doc["components"]["schemas"]["Error"]["required"] == ["error", "status"]
    assert set(doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    keyed = {p for p, ops in doc["paths"].items() for op in ops.values() if op.get("security")}
    if server.mode == "local":
        assert not keyed and "securitySchemes" not in doc["components"] and "401" not in sequence["responses"]
    else:
        assert keyed == {"/v1/sequences/{feature}/{user_id}", "/v1/sequences/{feature}/batch", "/v1/features"}
        assert doc["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"
        assert {"400", "401", "403", "404", "429"} == set(sequence["responses"]) - {"200"}


def test_fuzzed_requests_get_documented_answers_and_no_5xx(server):
    """schemathesis against the running server; its report is the failure message."""
    fuzz = {"users": [1, 2, 3, 4, 5, 6, 7, 8], "as_of": as_of_param(DAYS[-1]),
            "keys": KEYS if server.mode == "tenants" else []}
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.fuzz_hooks", "SEQ_FUZZ": json.dumps(fuzz),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{server.url}/openapi.json", "--no-color",
           "--phases", "examples,coverage,fuzzing", "--checks", ",".join(CHECKS),
           "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_SECONDS), "--request-timeout", "10",
           "--generation-database", "none", "--workers", "1",
           "--suppress-health-check", "all"]  # about generating data on a busy machine, not the API
    # Its own files (.hypothesis/, .schemathesis/) go to the test's folder, not the checkout.
    run = subprocess.run(cmd, cwd=server.dir, env=env, capture_output=True, text=True, timeout=MAX_SECONDS + 60,
                         stdin=subprocess.DEVNULL)
    print(run.stdout[-3000:])
    assert run.returncode == 0, f"schemathesis found problems ({server.mode}):\n{run.stdout[-12000:]}\n{run.stderr[-3000:]}"
    assert "passed" in run.stdout and "Fuzzing" in run.stdout
