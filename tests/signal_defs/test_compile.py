"""Compiled JSON: one file per definition plus an index, stable bytes, tamper checks, diff, version lock."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

import signal_defs
from seq_assets import cli
from signal_defs import demo
from signal_defs.compile import (
    check_version_lock,
    compile_registry,
    content_hash,
    diff_compiled,
    read_compiled,
    updated_lock,
    write_compiled,
)
from signal_defs.model import Lifecycle, Registry, SequenceFeature, col
from signal_defs.validate import DefinitionError

REPO = Path(__file__).resolve().parents[2]
SEQCTL = REPO / ".venv" / "bin" / "seqctl"


def registry(*swaps, add=()) -> Registry:
    mapping = {id(old): new for old, new in swaps}
    return Registry().add(*[mapping.get(id(d), d) for d in demo.DEFINITIONS], *add)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def run_compile(monkeypatch, capsys, reg: Registry | None, out: Path, lock: Path) -> tuple[int, str, str]:
    """``seqctl defs compile`` in-process, on ``reg`` instead of the shipped registry."""
    if reg is not None:
        monkeypatch.setattr(signal_defs, "REGISTRY", reg)
    capsys.readouterr()
    rc = cli.main(["defs", "compile", "--out", str(out), "--lock", str(lock)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


EXPERIMENT = SequenceFeature(
    name="clicks", version=1, event_types=("pin_click",), fields=("event_id", "ts", "item_id"),
    max_length=50, window_days=7, owner="ranking", lifecycle=Lifecycle.EXPERIMENTAL,
)


# ---- compile -----------------------------------------------------------------------------------


def test_cli_compile_writes_one_file_per_definition_and_an_index(tmp_path):
    out, lock = tmp_path / "compiled", tmp_path / "versions.lock.json"
    proc = subprocess.run([str(SEQCTL), "defs", "compile", "--out", str(out), "--lock", str(lock)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    expected_ids = {
        "source.user_engagements", "lookup.item_embedding", "lookup.item_category", "counter.user_item_count_30d",
        "lookup.item_popularity", "event_type.pin_click", "event_type.pin_save", "event_type.pin_closeup",
        "feature.engagements_v1", "feature.saves_v1",
    }
    assert {p.name for p in out.iterdir()} == {f"{i}.json" for i in expected_ids} | {"index.json"}
    index = json.loads((out / "index.json").read_text())
    assert {e["id"] for e in index["definitions"]} == expected_ids
    for entry in index["definitions"]:
        body = json.loads((out / entry["file"]).read_text())
        assert len(body["hash"]) == 16 and body["hash"] == entry["hash"]
        assert content_hash({k: v for k, v in body.items() if k not in ("hash", "output_hash")}) == body["hash"]
        assert body["kind"] == entry["kind"] and body["name"] == entry["name"]
    feature = json.loads((out / "feature.engagements_v1.json").read_text())
    assert feature["max_length"] == 500 and feature["window_days"] == 90 and feature["output_hash"]
    assert json.loads((out / "event_type.pin_closeup.json").read_text())["filter"]["op"] == "and"
    # The first compile records the production features in the lock.
    assert set(json.loads(lock.read_text())) == {"engagements_v1", "saves_v1"}
    assert read_compiled(out) == json.loads(json.dumps(compile_registry(signal_defs.REGISTRY)))


def test_recompiling_gives_byte_identical_files(tmp_path, monkeypatch, capsys):
    lock = tmp_path / "lock.json"
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_compile(monkeypatch, capsys, None, a, lock)[0] == 0
    first = files_of(a)
    assert run_compile(monkeypatch, capsys, None, b, lock)[0] == 0
    assert run_compile(monkeypatch, capsys, None, a, lock)[0] == 0  # again, into the same folder
    assert files_of(a) == first == files_of(b)
    assert len(first) == 11


def test_a_changed_definition_changes_its_hash_only(tmp_path):
    a = compile_registry(registry())
    b = compile_registry(registry((demo.pin_save, replace(demo.pin_save, description="saves, renamed"))))
    changed = {cid for cid in a if a[cid]["hash"] != b[cid]["hash"]}
    assert changed == {"event_type.pin_save"}
    # A description is not output: no feature's output hash moves.
    assert all(a[c].get("output_hash") == b[c].get("output_hash") for c in a)


def test_write_compiled_removes_stale_files(tmp_path):
    out = tmp_path / "c"
    write_compiled(compile_registry(registry(add=(EXPERIMENT,))), out)
    assert (out / "feature.clicks_v1.json").exists()
    write_compiled(compile_registry(registry()), out)
    assert not (out / "feature.clicks_v1.json").exists()
    assert "feature.clicks_v1" not in read_compiled(out)


# ---- tamper detection --------------------------------------------------------------------------


def _tamper(path: Path, **changes) -> None:
    body = json.loads(path.read_text())
    body.update(changes)
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def test_read_compiled_detects_an_edited_field(tmp_path):
    out = write_compiled(compile_registry(registry()), tmp_path / "c")
    read_compiled(out)
    _tamper(out / "feature.engagements_v1.json", max_length=5000)
    with pytest.raises(DefinitionError) as info:
        read_compiled(out)
    assert "engagements_v1" in str(info.value) and "hash" in str(info.value)


def test_read_compiled_detects_an_edited_hash(tmp_path):
    out = write_compiled(compile_registry(registry()), tmp_path / "c")
    _tamper(out / "event_type.pin_click.json", hash="0" * 16)
    with pytest.raises(DefinitionError, match="pin_click"):
        read_compiled(out)


def test_read_compiled_detects_an_edited_filter(tmp_path):
    out = write_compiled(compile_registry(registry()), tmp_path / "c")
    path = out / "event_type.pin_closeup.json"
    path.write_text(path.read_text().replace("1000", "10"))
    with pytest.raises(DefinitionError, match="pin_closeup"):
        read_compiled(out)


def test_read_compiled_detects_an_edited_output_hash(tmp_path):
    out = write_compiled(compile_registry(registry()), tmp_path / "c")
    _tamper(out / "feature.saves_v1.json", output_hash="f" * 16)
    with pytest.raises(DefinitionError, match="saves_v1"):
        read_compiled(out)


def test_read_compiled_refuses_a_folder_without_index(tmp_path):
    with pytest.raises(DefinitionError, match="index"):
        read_compiled(tmp_path)


# ---- diff --------------------------------------------------------------------------------------


def test_cli_diff_shows_a_readable_field_change(tmp_path, capsys):
    old = write_compiled(compile_registry(registry()), tmp_path / "old")
    shorter = replace(demo.engagements_v1, max_length=400)
    new = write_compiled(compile_registry(registry((demo.engagements_v1, shorter))), tmp_path / "new")
    capsys.readouterr()
    assert cli.main(["defs", "diff", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "~ feature.engagements_v1" in out
    assert "max_length: 500 -> 400" in out
    assert "saves_v1" not in out and "pin_click" not in out
    assert "output changes" in out


def test_cli_diff_says_no_changes_for_identical_folders(tmp_path, capsys):
    a = write_compiled(compile_registry(registry()), tmp_path / "a")
    b = write_compiled(compile_registry(registry()), tmp_path / "b")
    capsys.readouterr()
    assert cli.main(["defs", "diff", str(a), str(b)]) == 0
    assert capsys.readouterr().out.strip() == "no changes"


def test_diff_lists_added_and_removed_definitions_and_filter_changes():
    old = compile_registry(registry())
    stricter = replace(demo.pin_closeup, filter=(col("action") == "closeup") & (col("dwell_ms") >= 2000))
    new = compile_registry(registry((demo.pin_closeup, stricter), add=(EXPERIMENT,)))
    lines = diff_compiled(old, new)
    assert "+ feature.clicks_v1" in lines
    assert "~ event_type.pin_closeup" in lines
    assert any("1000" in line and "2000" in line for line in lines)
    # The filter feeds engagements_v1 (not saves_v1): only its output hash moves.
    assert "~ feature.engagements_v1" in lines and "~ feature.saves_v1" not in lines
    assert "- feature.clicks_v1" in diff_compiled(new, old)
    assert diff_compiled(old, old) == []


# ---- version lock ------------------------------------------------------------------------------


def test_changing_a_production_feature_without_a_new_version_is_refused(tmp_path, monkeypatch, capsys):
    lock = tmp_path / "lock.json"
    rc, out, _ = run_compile(monkeypatch, capsys, registry(), tmp_path / "v0", lock)
    assert rc == 0 and "recorded new production versions" in out
    locked = lock.read_text()

    shorter = replace(demo.engagements_v1, max_length=400)
    rc, _, err = run_compile(monkeypatch, capsys, registry((demo.engagements_v1, shorter)), tmp_path / "v1", lock)
    assert rc != 0
    assert "engagements" in err and "new version" in err and "version=2" in err
    assert "saves" not in err
    assert not (tmp_path / "v1").exists()  # nothing was written
    assert lock.read_text() == locked

    bumped = replace(demo.engagements_v1, max_length=400, version=2)
    rc, _, err = run_compile(monkeypatch, capsys, registry((demo.engagements_v1, bumped)), tmp_path / "v2", lock)
    assert rc == 0, err
    assert json.loads((tmp_path / "v2" / "feature.engagements_v2.json").read_text())["max_length"] == 400
    new_lock = json.loads(lock.read_text())
    assert set(new_lock) == {"engagements_v1", "saves_v1", "engagements_v2"}
    assert new_lock["engagements_v1"] == json.loads(locked)["engagements_v1"]  # v1 keeps its old output


def test_changing_an_event_type_filter_used_by_a_production_feature_is_refused(tmp_path, monkeypatch, capsys):
    lock = tmp_path / "lock.json"
    assert run_compile(monkeypatch, capsys, registry(), tmp_path / "v0", lock)[0] == 0
    looser = replace(demo.pin_closeup, filter=(col("action") == "closeup") & (col("dwell_ms") >= 500))
    rc, _, err = run_compile(monkeypatch, capsys, registry((demo.pin_closeup, looser)), tmp_path / "v1", lock)
    assert rc != 0
    assert "engagements" in err and "new version" in err
    assert "'saves'" not in err  # saves_v1 does not read pin_closeup
    # The lock also holds when checked through the library.
    problems = check_version_lock(compile_registry(registry((demo.pin_closeup, looser))), json.loads(lock.read_text()))
    assert len(problems) == 1 and "engagements" in problems[0]


def test_changing_an_enrichment_used_by_production_features_is_refused(tmp_path):
    lock = updated_lock(compile_registry(registry()), {})
    wider = replace(demo.user_item_count_30d, window_days=60)
    problems = check_version_lock(compile_registry(registry((demo.user_item_count_30d, wider))), lock)
    assert len(problems) == 2
    assert any("'engagements'" in p for p in problems) and any("'saves'" in p for p in problems)


def test_metadata_changes_of_a_production_feature_are_accepted(tmp_path, monkeypatch, capsys):
    lock = tmp_path / "lock.json"
    assert run_compile(monkeypatch, capsys, registry(), tmp_path / "v0", lock)[0] == 0
    described = replace(demo.saves_v1, description="now with a longer description", owner="another-team")
    rc, _, err = run_compile(monkeypatch, capsys, registry((demo.saves_v1, described)), tmp_path / "v1", lock)
    assert rc == 0, err


def test_changing_an_experimental_feature_is_accepted(tmp_path, monkeypatch, capsys):
    lock = tmp_path / "lock.json"
    assert run_compile(monkeypatch, capsys, registry(add=(EXPERIMENT,)), tmp_path / "v0", lock)[0] == 0
    assert "clicks_v1" not in json.loads(lock.read_text())
    changed = replace(EXPERIMENT, max_length=10, window_days=1)
    rc, _, err = run_compile(monkeypatch, capsys, registry(add=(changed,)), tmp_path / "v1", lock)
    assert rc == 0, err
    assert json.loads((tmp_path / "v1" / "feature.clicks_v1.json").read_text())["max_length"] == 10
    # Promoting it to production locks it from then on.
    promoted = replace(changed, lifecycle=Lifecycle.PRODUCTION)
    assert run_compile(monkeypatch, capsys, registry(add=(promoted,)), tmp_path / "v2", lock)[0] == 0
    assert "clicks_v1" in json.loads(lock.read_text())
    rc, _, err = run_compile(monkeypatch, capsys, registry(add=(replace(promoted, max_length=20),)), tmp_path / "v3", lock)
    assert rc != 0 and "clicks" in err


def test_cli_compile_refuses_invalid_definitions(tmp_path, monkeypatch, capsys):
    bad = registry((demo.saves_v1, replace(demo.saves_v1, window_days=0)))
    rc, _, err = run_compile(monkeypatch, capsys, bad, tmp_path / "out", tmp_path / "lock.json")
    assert rc == 2 and "saves" in err and "window_days" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "lock.json").exists()


def test_adding_an_enrichment_no_feature_reads_keeps_the_production_versions(tmp_path, monkeypatch, capsys):
    """A new column for other readers is schema evolution, not a change of v1's output."""
    from signal_defs.model import ContextEnrichment

    lock = tmp_path / "lock.json"
    assert run_compile(monkeypatch, capsys, registry(), tmp_path / "v0", lock)[0] == 0
    device_ctx = ContextEnrichment(name="device_ctx", fields={"device_ctx": "device"})
    richer = replace(demo.pin_click, enrichments=(*demo.pin_click.enrichments, "device_ctx"))
    rc, _, err = run_compile(monkeypatch, capsys, registry((demo.pin_click, richer), add=(device_ctx,)),
                             tmp_path / "v1", lock)
    assert rc == 0, err
    assert json.loads(lock.read_text()) == updated_lock(compile_registry(registry()), {})
    # Changing what the new enrichment computes does not touch v1 either: v1 does not read it.
    other = ContextEnrichment(name="device_ctx", fields={"device_ctx": "country"})
    problems = check_version_lock(compile_registry(registry((demo.pin_click, richer), add=(other,))),
                                  json.loads(lock.read_text()))
    assert problems == []


def test_the_shipped_lock_holds_for_the_shipped_definitions():
    """New source settings at their defaults leave every locked output hash as it was."""
    lock = json.loads((REPO / "signal_defs" / "versions.lock.json").read_text())
    compiled = compile_registry(signal_defs.REGISTRY)
    assert check_version_lock(compiled, lock) == []
    assert updated_lock(compiled, {}) == lock
    source = compiled["source.user_engagements"]
    assert (source["time_unit"], source["event_id_from"], source["retention_days"]) == ("ms", [], 400)


def test_source_settings_that_change_rows_change_the_output_hash():
    lock = updated_lock(compile_registry(registry()), {})
    for change in ({"time_unit": "s"}, {"user_field": "action"}):
        changed = replace(demo.user_engagements, **change)
        problems = check_version_lock(compile_registry(registry((demo.user_engagements, changed))), lock)
        assert len(problems) == 2, change
    # How long raw/ keeps a day does not change any sequence.
    kept = replace(demo.user_engagements, retention_days=30)
    assert check_version_lock(compile_registry(registry((demo.user_engagements, kept))), lock) == []
