"""Definitions in the team's own repository: ``SEQ_DEFS_MODULE``, ``seqctl init`` and ``seqctl defs new``."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import signal_defs
from seq_assets import cli
from signal_defs import templates
from signal_defs.model import EventType, Registry, SequenceFeature, Source
from signal_defs.validate import validate
from tests.support.envutil import scoped_env

REPO = Path(__file__).resolve().parents[2]
SEQCTL = REPO / ".venv" / "bin" / "seqctl"
DEMO_LOCK = REPO / "signal_defs" / "versions.lock.json"

PLAYS = '''
from signal_defs import EventType, Lifecycle, Ordering, Registry, SequenceFeature, Source, col

plays = Source(
    name="plays", topic="plays", batch_location="plays",
    schema={"play_id": "string", "listener": "int64", "track": "int64", "played_at": "int64", "seconds": "int64"},
    required=("play_id", "listener", "track", "played_at"),
    event_id_field="play_id", user_field="listener", time_field="played_at", time_unit="s",
)
full_play = EventType(
    name="full_play", source="plays", filter=col("seconds") >= 30,
    fields=("play_id", "listener", "played_at", "track", "seconds"),
)
listening = SequenceFeature(
    name="listening", version=1, event_types=("full_play",), fields=("play_id", "played_at", "track"),
    max_length=MAX_LENGTH, window_days=30, owner="audio", lifecycle=Lifecycle.PRODUCTION,
    dedup_key=("play_id",), ordering=Ordering(by="played_at", tie_break="play_id"),
)
REGISTRY = Registry().add(plays, full_play, listening)
'''


def write_module(folder: Path, name: str = "my_defs", max_length: int = 100) -> Path:
    path = folder / f"{name}.py"
    path.write_text(PLAYS.replace("MAX_LENGTH", str(max_length)))
    return path


def seqctl(*args: str, cwd: Path, module: str | None = "my_defs") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SEQ_DEFS_MODULE", "SEQ_DEFS_DIR")}
    if module:
        env["SEQ_DEFS_MODULE"] = module
    return subprocess.run([str(SEQCTL), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


# ---- SEQ_DEFS_MODULE -----------------------------------------------------------------------------


def test_a_module_in_the_current_directory_validates_and_compiles_without_the_demo(tmp_path):
    write_module(tmp_path)
    demo_lock = DEMO_LOCK.read_bytes()
    proc = seqctl("defs", "validate", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "definitions are valid: 1 source, 1 event_type, 1 feature"

    proc = seqctl("defs", "compile", "--out", "compiled", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    index = json.loads((tmp_path / "compiled" / "index.json").read_text())
    assert {e["id"] for e in index["definitions"]} == {"source.plays", "event_type.full_play", "feature.listening_v1"}
    assert json.loads((tmp_path / "compiled" / "source.plays.json").read_text())["time_unit"] == "s"
    # The production feature is locked beside the module; the demo's lock is left alone.
    assert set(json.loads((tmp_path / "versions.lock.json").read_text())) == {"listening_v1"}
    assert DEMO_LOCK.read_bytes() == demo_lock

    proc = seqctl("defs", "diff", "compiled", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "no changes", proc.stderr


def test_the_modules_lock_refuses_a_changed_production_feature(tmp_path):
    write_module(tmp_path)
    assert seqctl("defs", "compile", "--out", "v0", cwd=tmp_path).returncode == 0
    write_module(tmp_path, max_length=50)
    proc = seqctl("defs", "compile", "--out", "v1", cwd=tmp_path)
    assert proc.returncode == 2 and "listening" in proc.stderr and "version=2" in proc.stderr
    assert not (tmp_path / "v1").exists()
    diff = seqctl("defs", "diff", "v0", cwd=tmp_path)
    assert "~ feature.listening_v1" in diff.stdout and "max_length: 100 -> 50" in diff.stdout


@pytest.mark.parametrize("body, expected", [
    (None, "No module named 'my_defs'"),
    ("X = 1\n", "has no REGISTRY"),
    ("REGISTRY = [1, 2]\n", "REGISTRY is a list, not a signal_defs.Registry"),
    ("import not_a_module_anywhere\n", "No module named 'not_a_module_anywhere'"),
    ("raise RuntimeError('half-written')\n", "RuntimeError: half-written"),
])
def test_a_bad_module_is_refused_in_one_line_naming_it(tmp_path, body, expected):
    if body is not None:
        (tmp_path / "my_defs.py").write_text(body)
    for args in (("defs", "validate"), ("defs", "compile", "--out", "out")):
        proc = seqctl(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "'my_defs'" in lines[0] and expected in lines[0], proc.stderr
        assert "SEQ_DEFS_MODULE=my_defs" in lines[0]
    assert not (tmp_path / "out").exists()


def test_invalid_definitions_in_the_module_are_refused_by_name(tmp_path):
    write_module(tmp_path, max_length=0)
    proc = seqctl("defs", "validate", cwd=tmp_path)
    assert proc.returncode == 2 and "listening" in proc.stderr and "max_length" in proc.stderr


def test_unset_uses_the_demo(tmp_path):
    write_module(tmp_path)  # present but not named: ignored
    proc = seqctl("defs", "validate", cwd=tmp_path, module=None)
    assert proc.returncode == 0 and "2 feature" in proc.stdout and "3 event_type" in proc.stdout


def test_settings_load_the_module_in_process(tmp_path, monkeypatch):
    from seq_assets import settings
    from signal_defs.compile import compile_registry, write_compiled

    name = "defs_module_in_process"
    write_module(tmp_path, name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    settings._compiled.cache_clear()
    try:
        with scoped_env(SEQ_DEFS_MODULE=name, SEQ_DEFS_DIR=None):
            assert [d.name for d in settings.registry().definitions] == ["plays", "full_play", "listening"]
            assert settings.defs_lock() == (tmp_path / "versions.lock.json").resolve()
            compiled = settings.load_compiled()
            assert set(compiled.features) == {"listening_v1"} and set(compiled.sources) == {"plays"}
            # A compiled folder comes first.
            folder = write_compiled(compile_registry(signal_defs.REGISTRY), tmp_path / "demo_compiled")
            settings._compiled.cache_clear()
            with scoped_env(SEQ_DEFS_DIR=str(folder)):
                assert set(settings.load_compiled().features) == {"engagements_v1", "saves_v1"}
        settings._compiled.cache_clear()
        with scoped_env(SEQ_DEFS_MODULE=None, SEQ_DEFS_DIR=None):
            assert settings.registry() is signal_defs.REGISTRY
            assert settings.defs_lock() == DEMO_LOCK
            assert set(settings.load_compiled().features) == {"engagements_v1", "saves_v1"}
    finally:
        sys.modules.pop(name, None)
        settings._compiled.cache_clear()


# ---- seqctl init ---------------------------------------------------------------------------------


def test_init_writes_a_project_that_validates_and_compiles(tmp_path):
    proc = seqctl("init", "team", cwd=tmp_path, module=None)
    assert proc.returncode == 0, proc.stderr
    project = tmp_path / "team"
    assert {p.name for p in project.iterdir()} == {"seq_defs.py", "versions.lock.json", "README.md", "landing"}
    assert (project / "landing" / templates.EXAMPLE_SOURCE).is_dir()
    assert json.loads((project / "versions.lock.json").read_text()) == {}
    readme = (project / "README.md").read_text()
    for needed in ("SEQ_DEFS_MODULE=seq_defs", "seqctl defs validate", "arrival_date=YYYY-MM-DD",
                   "dagster dev -m seq_assets.definitions", "seqctl serve", "SEQ_LANDING_DIR"):
        assert needed in readme, needed

    proc = seqctl("defs", "validate", cwd=project, module="seq_defs")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "definitions are valid: 1 source, 1 event_type, 1 feature"
    proc = seqctl("defs", "compile", "--out", "compiled", cwd=project, module="seq_defs")
    assert proc.returncode == 0, proc.stderr
    index = json.loads((project / "compiled" / "index.json").read_text())
    assert {e["name"] for e in index["definitions"]} == {"ratings", "title_rated", "recent_ratings"}
    # None of the demo's field names: the team's own, declared explicitly.
    source = json.loads((project / "compiled" / "source.ratings.json").read_text())
    assert (source["event_id_field"], source["user_field"], source["time_field"]) == ("rating_id", "member_id", "rated_at")
    assert not set(source["schema"]) & {"event_id", "user_id", "ts"}


def test_init_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "notes.txt").write_text("ours\n")
    proc = seqctl("init", "team", cwd=tmp_path, module=None)
    assert proc.returncode == 2 and "not empty" in proc.stderr and "team" in proc.stderr
    assert [p.name for p in (tmp_path / "team").iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert seqctl("init", "empty", "--module", "ranking_defs", cwd=tmp_path, module=None).returncode == 0
    assert (tmp_path / "empty" / "ranking_defs.py").exists()
    assert seqctl("defs", "validate", cwd=tmp_path / "empty", module="ranking_defs").returncode == 0


# ---- seqctl defs new -----------------------------------------------------------------------------


def _template(kind: str, name: str, capsys) -> str:
    capsys.readouterr()
    assert cli.main(["defs", "new", kind, name]) == 0
    return capsys.readouterr().out


def _defined(text: str, name: str):
    namespace = {k: getattr(signal_defs, k) for k in dir(signal_defs) if not k.startswith("_")}
    exec(compile(text, "<template>", "exec"), namespace)
    return namespace[name]


@pytest.mark.parametrize("kind, cls", [("source", Source), ("event-type", EventType), ("feature", SequenceFeature)])
def test_defs_new_mentions_every_parameter_with_a_comment(kind, cls, capsys):
    text = _template(kind, "things", capsys)
    for f in dataclasses.fields(cls):
        if f.init:
            assert re.search(rf"^    {f.name}=.*#", text, re.M), f"{kind} template: no commented {f.name}="


def test_defs_new_templates_validate_with_what_they_reference(capsys):
    src = _defined(_template("source", "plays", capsys), "plays")
    et = _defined(_template("event-type", "full_play", capsys).replace(f'"{templates.EXAMPLE_SOURCE}"', '"plays"'),
                  "full_play")
    feature = _defined(_template("feature", "listening", capsys).replace(f'"{templates.EXAMPLE_EVENT_TYPE}"', '"full_play"'),
                       "listening_v1")
    assert validate(Registry().add(src)) is None
    assert validate(Registry().add(src, et)) is None
    assert validate(Registry().add(src, et, feature)) is None
    # As printed, each fits the project `seqctl init` writes.
    example = _defined(templates.project_module("seq_defs"), "REGISTRY")
    added = [_defined(_template("event-type", "title_skipped", capsys), "title_skipped"),
             _defined(_template("feature", "skips", capsys), "skips_v1")]
    assert validate(Registry().add(*example.definitions, *added)) is None


def test_defs_new_refuses_an_unknown_kind(capsys):
    with pytest.raises(SystemExit):
        cli.main(["defs", "new", "enrichment", "x"])
