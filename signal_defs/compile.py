"""Compile definitions to portable JSON, diff two compilations, and lock production versions.

Every runtime (batch assets, stream sensors, serving) reads the compiled JSON, never the Python
objects: the JSON is the contract. Each definition gets a content hash; a feature also gets an
*output hash* over everything that changes what it produces (its own settings, its event types,
their enrichments and the source schema). A production feature whose output hash changes while its
version stays the same is refused: a served feature never changes silently.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from pathlib import Path
from typing import Any

from signal_defs.model import Col, Pred, Registry, Source, event_fields, resolved_dedup_key, resolved_ordering
from signal_defs.validate import DefinitionError, validate

FORMAT_VERSION = 1
INDEX_FILE = "index.json"
# Settings of a feature that describe it, keep it or watch it, but do not change its rows.
_FEATURE_METADATA = {"owner", "lifecycle", "description", "snapshot_retention_days", "freshness_hours",
                     "full_snapshot_every_days"}
# Settings of a source that change the rows of the features reading it (which field is the id, the
# user, the time, and how those and the records are read), with their defaults. A feature's output hash covers the
# ones set to something else, so the hashes of features over default sources stay what they were
# before a setting existed.
_SOURCE_OUTPUT_SETTINGS = {
    f.name: f.default for f in dataclasses.fields(Source)
    if f.name in ("event_id_field", "user_field", "time_field", "time_unit", "event_id_from", "batch_format")
}


def _plain(value: Any) -> Any:
    if isinstance(value, (Pred, Col)):
        return value.to_json()
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def content_hash(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode()).hexdigest()[:16]


def definition_id(d: dict) -> str:
    """The unique id of a compiled definition: ``feature.engagements_v1``, ``event_type.pin_save``."""
    name = f"{d['name']}_v{d['version']}" if d["kind"] == "feature" else d["name"]
    return f"{d['kind']}.{name}"


def compile_registry(registry: Registry) -> dict[str, dict]:
    """Validate then compile every definition; returns ``{definition id: compiled dict}``."""
    validate(registry)
    compiled: dict[str, dict] = {}
    sources = {d.name: d for d in registry.of_kind("source")}
    event_types = {d.name: d for d in registry.of_kind("event_type")}
    for d in registry.definitions:
        body = _plain(d)
        if d.kind == "event_type":
            body["fields"] = list(event_fields(d, sources[d.source]))
        elif d.kind == "feature":
            # Defaults from the source of the feature's events, written out: runtimes read the JSON.
            source = sources[event_types[d.event_types[0]].source]
            body["ordering"] = _plain(resolved_ordering(d, source))
            body["dedup_key"] = list(resolved_dedup_key(d, source))
        body["hash"] = content_hash(body)
        compiled[definition_id(body)] = body
    by_name = {(c["kind"], c["name"]): c for c in compiled.values() if c["kind"] != "feature"}
    for c in compiled.values():
        if c["kind"] == "feature":
            c["output_hash"] = _feature_output_hash(c, by_name)
    return compiled


def enrichment_columns(e: dict) -> list[str]:
    """The columns a compiled enrichment writes onto an event, in definition order."""
    if e["kind"] == "lookup":
        return list(e["columns"])
    if e["kind"] == "counter":
        return [e.get("column") or e["name"]]
    return list(e["fields"])


def _feature_output_hash(feature: dict, by_name: dict[tuple[str, str], dict]) -> str:
    """A hash of everything that changes the rows a feature produces, and nothing else.

    An enrichment counts only when the feature reads one of its columns: adding an enrichment to an
    event type (a new column for other readers) leaves the existing features' output, and so their
    version, alone.
    """
    enrichments = {k: v for k, v in by_name.items() if k[0] in ("lookup", "counter", "context")}
    fields = set(feature["fields"])
    read = {name: e for (kind, name), e in enrichments.items() if set(enrichment_columns(e)) & fields}
    inputs: dict[str, Any] = {k: v for k, v in feature.items() if k not in _FEATURE_METADATA | {"hash"}}
    parts = []
    for et_name in feature["event_types"]:
        et = by_name[("event_type", et_name)]
        source = by_name[("source", et["source"])]
        used = [read[n] for n in et["enrichments"] if n in read]
        et_inputs = {k: v for k, v in et.items()
                     if k not in ("description", "hash", "retention_days", "late_arrival_days", "enrichments")}
        et_inputs["enrichments"] = [n for n in et["enrichments"] if n in read]
        part = {
            "event_type": et_inputs,
            "source_schema": source["schema"],
            "enrichments": sorted(
                ({k: v for k, v in e.items() if k not in ("description", "hash", "min_coverage")} for e in used),
                key=lambda e: e["name"],
            ),
        }
        source_settings = {k: source[k] for k, default in _SOURCE_OUTPUT_SETTINGS.items()
                           if source.get(k, _plain(default)) != _plain(default)}
        if source_settings:
            part["source_settings"] = source_settings
        parts.append(part)
    serving = [e for e in read.values() if e.get("stage") == "serving"]
    inputs["serving_enrichments"] = sorted(
        ({k: v for k, v in e.items() if k not in ("description", "hash", "min_coverage")} for e in serving),
        key=lambda e: e["name"])
    inputs["inputs"] = parts
    return content_hash(inputs)


def build_index(compiled: dict[str, dict]) -> dict:
    entries = [
        {"id": cid, "kind": c["kind"], "name": c["name"], "file": f"{cid}.json", "hash": c["hash"]}
        for cid, c in compiled.items()
    ]
    return {"format": FORMAT_VERSION, "definitions": entries, "hash": content_hash([e["hash"] for e in entries])}


def write_compiled(compiled: dict[str, dict], out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.json"):
        stale.unlink()
    for cid, body in compiled.items():
        (out / f"{cid}.json").write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    (out / INDEX_FILE).write_text(json.dumps(build_index(compiled), indent=2, sort_keys=True) + "\n")
    return out


def read_compiled(path: str | Path) -> dict[str, dict]:
    """Read a compiled directory back, checking every file against the index's hashes."""
    root = Path(path)
    index_path = root / INDEX_FILE
    if not index_path.exists():
        raise DefinitionError(str(root), "index", f"no {INDEX_FILE} in {root}: not a compiled definitions folder")
    index = json.loads(index_path.read_text())
    if index.get("format") != FORMAT_VERSION:
        raise DefinitionError(str(root), "format", f"unsupported format {index.get('format')!r}")
    out: dict[str, dict] = {}
    for entry in index["definitions"]:
        body = json.loads((root / entry["file"]).read_text())
        check = {k: v for k, v in body.items() if k not in ("hash", "output_hash")}
        if content_hash(check) != entry["hash"] or body.get("hash") != entry["hash"]:
            raise DefinitionError(entry["id"], "hash", f"{entry['file']} does not match its hash in {INDEX_FILE}")
        out[entry["id"]] = body
    # A feature's output hash is not covered by its content hash: recompute it from the files read.
    by_name = {(c["kind"], c["name"]): c for c in out.values() if c["kind"] != "feature"}
    for cid, c in out.items():
        inputs = {k: v for k, v in c.items() if k != "output_hash"}
        if c["kind"] == "feature" and c.get("output_hash") != _feature_output_hash(inputs, by_name):
            raise DefinitionError(cid, "output_hash", f"{cid}.json does not match the output hash of its inputs")
    return out


# ---------------------------------------------------------------------------------------------
# Version lock: production features may not change output under the same version.
# ---------------------------------------------------------------------------------------------


def check_version_lock(compiled: dict[str, dict], lock: dict[str, str]) -> list[str]:
    """Return one message per production feature whose output changed without a new version."""
    problems = []
    for cid, c in compiled.items():
        if c["kind"] != "feature" or c["lifecycle"] != "production":
            continue
        key = f"{c['name']}_v{c['version']}"
        locked = lock.get(key)
        if locked is not None and locked != c["output_hash"]:
            problems.append(
                f"feature {c['name']!r} version {c['version']} is in production and its output changed "
                f"(output hash {locked} -> {c['output_hash']}); give it a new version (version={c['version'] + 1})"
            )
    return problems


def updated_lock(compiled: dict[str, dict], lock: dict[str, str]) -> dict[str, str]:
    new = dict(lock)
    for c in compiled.values():
        if c["kind"] == "feature" and c["lifecycle"] == "production":
            new.setdefault(f"{c['name']}_v{c['version']}", c["output_hash"])
    return dict(sorted(new.items()))


# ---------------------------------------------------------------------------------------------
# Diff
# ---------------------------------------------------------------------------------------------


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict) and obj and "op" not in obj:
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: obj}


def diff_compiled(old: dict[str, dict], new: dict[str, dict]) -> list[str]:
    """A readable diff: ``+`` added, ``-`` removed, ``~`` changed with ``field: old -> new`` lines."""
    lines: list[str] = []
    for cid in sorted(set(old) | set(new)):
        if cid not in old:
            lines.append(f"+ {cid}")
        elif cid not in new:
            lines.append(f"- {cid}")
        elif old[cid]["hash"] != new[cid]["hash"] or old[cid].get("output_hash") != new[cid].get("output_hash"):
            lines.append(f"~ {cid}")
            a, b = _flatten(old[cid]), _flatten(new[cid])
            for key in sorted(set(a) | set(b)):
                if key in ("hash", "output_hash") or a.get(key) == b.get(key):
                    continue
                lines.append(f"    {key}: {canonical(a.get(key))} -> {canonical(b.get(key))}")
            if old[cid].get("output_hash") != new[cid].get("output_hash") and "output_hash" in new[cid]:
                lines.append("    (output changes: rows produced by this feature differ)")
    return lines
