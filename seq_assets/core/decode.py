"""Decode raw JSON records in bulk into a typed frame; every bad record becomes a dead letter.

The whole batch is parsed in one vectorized call (polars' native NDJSON reader). Unparseable JSON
makes that call fail, so the batch is split in halves until the bad records are isolated: the cost
is O(bad x log n) bulk calls, never a Python loop per good record.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone

import polars as pl

from seq_assets.core.compiled import derives_event_id, polars_type, source_types
from seq_assets.core.days import event_time_ms, parse_timestamp

DEAD_LETTER_SCHEMA = {
    "value": pl.String,
    "reason": pl.String,
    "kafka_partition": pl.Int32,
    "kafka_offset": pl.Int64,
    "origin": pl.String,
    "record_id": pl.String,
    "arrival_date": pl.Date,
    "arrived_at": pl.Datetime("us", "UTC"),
    "ingested_at": pl.Datetime("us", "UTC"),
    "date": pl.Date,
}
# Provenance columns a caller may pass alongside the values; kept on raw rows and dead letters.
META_SCHEMA = {
    "kafka_partition": pl.Int32,
    "kafka_offset": pl.Int64,
    "origin": pl.String,  # "batch" (landing files) or "kafka"
    "record_id": pl.String,  # where the record came from: topic:partition:offset, or batch:file:line
    "arrival_date": pl.Date,  # UTC day the record was delivered; also dates dead letters without a time
    "arrived_at": pl.Datetime("us", "UTC"),  # delivery time when known (Kafka record timestamp)
}


@dataclass
class Decoded:
    valid: pl.DataFrame  # typed source columns + date + ingested_at + provenance
    dead: pl.DataFrame  # DEAD_LETTER_SCHEMA


# Records the native reader takes per call: bounds the text it is handed, and a record it refuses
# sends only its slice down the slower path.
NATIVE_CHUNK = 262_144


def _bulk_json(values: pl.Series, struct: pl.Struct) -> tuple[pl.DataFrame, pl.Series]:
    """Parse every value as a JSON object of strings; returns (fields, parsed_ok mask).

    A nearly free first pass marks what cannot be a JSON object (not ``{...}``: truncated records
    are the common case). The rest goes through polars' native NDJSON reader in one call (the same
    deserializer as ``str.json_decode``, but parallel and about twice as fast), one record a line.
    A record that reader would read differently from ``str.json_decode`` takes the slower path: a
    record spanning lines (a raw newline) and one with a field whose text starts like a nested
    value (``str.json_decode`` refuses a nested object or array for a text field, the reader
    keeps its JSON text). Should the reader refuse something, the slice of :data:`NATIVE_CHUNK`
    records holding it takes that path.
    """
    if len(values) > NATIVE_CHUNK:
        parts = [_bulk_json(values.slice(i, NATIVE_CHUNK), struct) for i in range(0, len(values), NATIVE_CHUNK)]
        return pl.concat([f for f, _ in parts]), pl.concat([ok for _, ok in parts])
    trimmed = values.str.strip_chars()
    is_object = (trimmed.str.starts_with("{") & trimmed.str.ends_with("}")).fill_null(False)
    one_line = is_object & ~values.str.contains(r"[\r\n]").fill_null(False)
    native = _native_ndjson(values.to_frame("v").select(
        pl.when(one_line).then(pl.col("v")).otherwise(pl.lit("{}"))).to_series(), struct)
    if native is None:
        cleaned = values.to_frame("v").select(pl.when(is_object).then(pl.col("v")).otherwise(pl.lit("{}"))).to_series()
        return _split_json(cleaned, is_object, struct)
    looks_nested = native.select(pl.any_horizontal(
        pl.col(c).str.starts_with("{") | pl.col(c).str.starts_with("[") for c in native.columns).fill_null(False)).to_series()
    redo = (is_object & ~one_line) | looks_nested if native.width else is_object & ~one_line
    if not redo.any():
        return native, is_object
    fields, ok = _split_json(values.filter(redo), pl.Series([True] * int(redo.sum())), struct)
    at = pl.int_range(pl.len(), dtype=pl.UInt32)
    merged = pl.concat([native.with_columns(_at=at).filter(~redo),
                        fields.with_columns(_at=redo.arg_true(), _ok=ok)], how="diagonal").sort("_at")
    return merged.drop("_at", "_ok"), is_object.scatter(redo.arg_true(), ok)


def _native_ndjson(lines: pl.Series, struct: pl.Struct | dict, ignore_errors: bool = False) -> pl.DataFrame | None:
    """``lines`` (one JSON object each, no raw newline) through polars' NDJSON reader, one row per
    line with the fields of ``struct`` (as text, or the types of a schema dict); None when the
    reader refuses any of them. ``ignore_errors`` makes a value of another type null."""
    schema = struct.to_schema() if isinstance(struct, pl.Struct) else struct
    if lines.is_empty():
        return pl.DataFrame(schema=schema)
    buffer = lines.str.join("\n").cast(pl.Binary).item()
    try:
        out = pl.read_ndjson(io.BytesIO(buffer), schema=schema, ignore_errors=ignore_errors)
    except Exception:  # noqa: BLE001 - polars raises ComputeError or its own panics for bad JSON
        return None
    return out if out.height == len(lines) else None


def _read_ndjson(data: bytes, schema: dict, rows: int) -> pl.DataFrame | None:
    """``data`` through polars' NDJSON reader (a value of another type reads as null); None when
    the reader refuses it or does not give ``rows`` rows (blank lines give none)."""
    try:
        out = pl.read_ndjson(data, schema=schema, ignore_errors=True)
    except Exception:  # noqa: BLE001 - polars raises ComputeError or its own panics for bad JSON
        return None
    return out if out.height == rows else None


@dataclass
class Lines:
    """The bytes a batch of values was read from, one value a line: where each value starts and
    how long it is, and ``blank``, values the fast parse must not read from the bytes (replaced
    before parsing, e.g. records over the size limit)."""

    data: bytes
    offsets: pl.Series
    lengths: pl.Series
    blank: pl.Series | bool = False

    def patched(self, blank: pl.Series) -> tuple[bytes, pl.Series]:
        """The bytes with each value marked in ``blank`` overwritten by ``{}`` and spaces (the
        same length, so the other values stay where they were and the reader gives one row for
        each), and which values were too short to hold ``{}``: those are overwritten by a space,
        a blank line the reader gives no row for."""
        at = blank.arg_true()
        lengths = self.lengths.gather(at)
        view, pieces, end = memoryview(self.data), [], 0
        for o, n in zip(self.offsets.gather(at).to_list(), lengths.to_list()):
            pieces += [view[end:o], b"{}" + b" " * (n - 2) if n >= 2 else b" " * n]
            end = o + n
        pieces.append(view[end:])
        return (b"".join(pieces) if len(at) else self.data), at.filter(lengths < 2)


def split_lines(data: bytes) -> tuple[pl.DataFrame, Lines | None]:
    """A JSON lines file's non-empty lines (``value``, ``_line`` its number from 0), as
    ``pl.read_lines`` splits it, and their place in ``data`` for :func:`decode_records` (None when
    the lines do not lie in the bytes one after another, as with CRLF endings, which the split drops)."""
    lines = pl.read_lines(io.BytesIO(data), name="value").with_row_index("_line")
    n = pl.col("value").str.len_bytes().cast(pl.Int64)
    lines = lines.with_columns(((n + 1).cum_sum() - n - 1).alias("_offset"), n.alias("_n"))
    total = int(lines.get_column("_offset").tail(1).sum() + lines.get_column("_n").tail(1).sum() + 1) if lines.height else 0
    lines = lines.filter(pl.col("_n") > 0)
    if total not in (len(data), len(data) + 1):  # a final line without a newline counts one less
        return lines.drop("_offset", "_n"), None
    return lines.drop("_offset", "_n"), Lines(data, lines.get_column("_offset"), lines.get_column("_n"))


# Definition types the fast path parses straight into their type (the reader takes a JSON integer
# for Int64 and true/false for Boolean, nothing else: a value of another type reads as null).
_PARSED_TYPES = {"int64": pl.Int64, "bool": pl.Boolean}
TYPED_PARSE = True  # False: every record through the text path (the tests compare the two)


def parsed_types(source: dict) -> dict[str, pl.DataType]:
    """The fields :func:`decode_records` parses straight into their type: the required ``int64``
    and ``bool`` fields. A null there is a dead letter anyway, so a record with one (missing, or
    a value of another type the text path might still accept, like ``"7"``) can take the text path
    at no cost to the others; an optional field stays text (null is common there)."""
    if not TYPED_PARSE:
        return {}
    return {f: _PARSED_TYPES[t] for f, t in source["schema"].items() if f in source["required"] and t in _PARSED_TYPES}


def _bulk_typed(values: pl.Series, struct: pl.Struct, types: dict[str, pl.DataType],
                lines: Lines | None = None) -> tuple[pl.DataFrame, pl.Series]:
    """The fast parse: every value through polars' NDJSON reader with ``types`` for those fields
    (text for the others), in slices of :data:`NATIVE_CHUNK`. Returns the fields, one row per
    value, and whether each record was taken that way.

    A record is taken when it is one JSON object on one line, every field of ``types`` reads as
    non-null, and no text field looks nested (see :func:`_bulk_json`). Those read exactly as the
    text path reads them: a JSON integer's text casts back to the same Int64, ``true``/``false``
    to the same Boolean. Every other record (the reader is handed ``{}`` in its place, so its
    output stays one row per value), and every record of a slice the reader refuses, goes to the
    text path (:func:`_bulk_json`), so each decodes exactly as it did there.

    ``lines``: the bytes ``values`` were read from (a landing file's lines, see :func:`split_lines`),
    which the reader is handed as they are, the other records' bytes overwritten in a copy,
    instead of the values joined again.
    """
    schema = {f: types.get(f, pl.String) for f in struct.to_schema()}
    text = [f for f, t in schema.items() if t == pl.String]
    fields, taken = [pl.DataFrame(schema=schema)], [pl.Series([], dtype=pl.Boolean)]
    # No copy of the text: a record with blanks around it or a raw newline goes to the text path.
    clean = (values.str.starts_with("{") & values.str.ends_with("}") & ~values.str.contains("\n", literal=True)
             & ~values.str.contains("\r", literal=True)).fill_null(False)
    whole = None
    if lines is not None and len(values):  # one call over the bytes as read, no slices
        data, short = lines.patched(~clean | lines.blank)
        whole = _read_ndjson(data, schema, len(values) - len(short))
        if whole is not None and len(short):  # a null row where a line too short for {} gave none
            shown = pl.Series(values=[True] * len(values)).scatter(short, False)
            at = (shown.cast(pl.UInt32).cum_sum() - 1).zip_with(shown, pl.Series([None], dtype=pl.UInt32))
            whole = whole.select(pl.all().gather(at))
    for start in range(0, len(values), NATIVE_CHUNK):
        part = values.slice(start, NATIVE_CHUNK)
        one_line = clean.slice(start, NATIVE_CHUNK)
        if whole is not None:
            native = whole.slice(start, NATIVE_CHUNK)
        else:
            joined = part.to_frame("v").select(pl.when(one_line).then(pl.col("v")).otherwise(pl.lit("{}"))).to_series()
            native = _native_ndjson(joined, schema, ignore_errors=True)
        if native is None:
            fields.append(pl.DataFrame(schema=schema).clear(len(part)))
            taken.append(pl.repeat(False, len(part), eager=True))
            continue
        checks = [pl.lit(one_line), *(pl.col(f).is_not_null() for f in types)]
        if text:
            checks.append(~pl.any_horizontal(
                pl.col(c).str.starts_with("{") | pl.col(c).str.starts_with("[") for c in text).fill_null(False))
        fields.append(native)
        taken.append(native.select(pl.all_horizontal(checks)).to_series())
    return pl.concat(fields), pl.concat(taken)


def _split_json(cleaned: pl.Series, good: pl.Series, struct: pl.Struct) -> tuple[pl.DataFrame, pl.Series]:
    """``str.json_decode`` over the whole batch; when it refuses, the batch is split in halves until
    the bad records are isolated: O(bad x log n) bulk calls, never a Python loop per good record."""

    def parse(s: pl.Series) -> pl.Series | None:
        try:
            return s.str.json_decode(struct)
        except Exception:  # noqa: BLE001 - polars raises ComputeError or its own panics for bad JSON
            return None

    parts: list[pl.Series] = []
    ok: list[pl.Series] = []
    stack = [(cleaned, good)]
    while stack:
        chunk, good = stack.pop()
        out = parse(chunk)
        if out is not None:
            parts.append(out)
            ok.append(good)
        elif len(chunk) == 1:
            parts.append(pl.Series([None], dtype=struct))
            ok.append(pl.Series([False]))
        else:
            mid = len(chunk) // 2
            stack.append((chunk.slice(mid), good.slice(mid)))  # popped second: order is kept
            stack.append((chunk.slice(0, mid), good.slice(0, mid)))
    fields = pl.concat(parts).struct.unnest() if parts else pl.DataFrame(schema=struct.to_schema())
    return fields, pl.concat(ok) if ok else pl.Series([], dtype=pl.Boolean)


def decode_records(source: dict, values: pl.Series, meta: pl.DataFrame | None = None,
                   ingested_at: datetime | None = None, lines: Lines | None = None) -> Decoded:
    """Decode ``values`` (JSON text, one record each) of a compiled ``source``; ``lines``, when
    given, the bytes they were read from (:func:`split_lines`), which the fast parse reads in place."""
    ingested_at = ingested_at or datetime.now(timezone.utc)
    n = len(values)
    values = values.cast(pl.String).rename("value")
    if meta is None:
        meta = pl.DataFrame({k: pl.Series([None] * n, dtype=t) for k, t in META_SCHEMA.items()})
    extra = [c for c in meta.columns if c not in META_SCHEMA]
    meta = meta.select(
        *[pl.col(k).cast(t) if k in meta.columns else pl.lit(None, t).alias(k) for k, t in META_SCHEMA.items()],
        *extra,
    )
    schema = source["schema"]
    # Oversized records are refused before parsing: they would bloat every downstream table.
    too_big = values.str.len_bytes() > source["max_record_bytes"]
    to_parse = pl.when(too_big).then(pl.lit("{}")).otherwise(values) if too_big.any() else None
    parse_values = values.to_frame().select(to_parse.alias("value")).to_series() if to_parse is not None else values
    struct = pl.Struct({f: pl.String for f in schema})
    types = parsed_types(source)
    if not types:
        fields, parsed = _bulk_json(parse_values, struct)
        typed = _typed(source, fields.with_columns(_big=too_big, _parsed=parsed))
    else:
        if lines is not None:
            lines = Lines(lines.data, lines.offsets, lines.lengths, too_big)
        fast, taken = _bulk_typed(parse_values, struct, types, lines)
        typed = _typed(source, fast.with_columns(_big=too_big, _parsed=pl.lit(True)))
        slow_at = (~taken).arg_true()
        if len(slow_at):  # the records the fast parse did not take, decoded by the text path, in place
            fields, parsed = _bulk_json(parse_values.gather(slow_at), struct)
            slow = _typed(source, fields.with_columns(_big=too_big.gather(slow_at), _parsed=parsed))
            typed = pl.DataFrame([typed.get_column(c).clone().scatter(slow_at, slow.get_column(c)) for c in typed.columns])
    frame = pl.concat([typed, values.to_frame(), meta], how="horizontal")
    frame = frame.with_columns(pl.from_epoch(pl.col(source["time_field"]), time_unit="ms").dt.date().alias("date"))
    now = pl.lit(ingested_at).cast(pl.Datetime("us", "UTC"))
    # A dead letter is dated by its event time when that parsed, else by the day it arrived.
    fallback = pl.coalesce(pl.col("arrival_date"), pl.lit(ingested_at.date()))
    dead = frame.filter(pl.col("reason").is_not_null()).select(
        "value", "reason", *META_SCHEMA, now.alias("ingested_at"),
        pl.coalesce(pl.col("date"), fallback).alias("date"),
    )
    valid = frame.filter(pl.col("reason").is_null())
    if derives_event_id(source):
        valid = valid.with_columns(derived_event_id(source))
    valid = valid.select(*source_types(source), *META_SCHEMA, now.alias("ingested_at"), "date")
    return Decoded(valid=valid, dead=dead.cast(DEAD_LETTER_SCHEMA))


def _typed(source: dict, fields: pl.DataFrame) -> pl.DataFrame:
    """The schema's fields typed, and ``reason`` (null for a good record), from parsed ``fields``
    (text, or already typed by the fast parse) with ``_big`` and ``_parsed`` per record."""
    reason = (
        pl.when(pl.col("_big")).then(pl.lit(f"record larger than {source['max_record_bytes']} bytes"))
        .when(~pl.col("_parsed")).then(pl.lit("unparseable JSON: not a JSON object"))
    )
    typed = []
    for f, t in source["schema"].items():
        dtype = polars_type(t)
        raw = pl.col(f)
        have = fields.schema[f]
        if f == source["time_field"]:
            conv = event_time_ms(source, raw, have)  # epoch ms, whatever the unit or form it arrives in
        elif have != pl.String:
            conv = raw  # parsed into its type
        elif t == "timestamp":
            conv = parse_timestamp(raw)
        elif dtype == pl.Boolean:
            conv = pl.when(raw == "true").then(True).when(raw == "false").then(False).otherwise(None)
        else:
            # strict=False turns "abc" (or "1.5" for an integer) into null, caught as mistyped below.
            conv = raw.cast(dtype, strict=False)
        typed.append(conv.alias(f))
        if f in source["required"]:
            reason = reason.when(raw.is_null()).then(pl.lit(f"missing field {f!r}"))
        text = raw if have == pl.String else raw.cast(pl.String)  # a JSON integer's text, as the text path has it
        reason = reason.when(raw.is_not_null() & conv.is_null()).then(
            pl.format(f"mistyped field {f!r}: {{}} is not {t}", text.str.slice(0, 80)))
    return fields.select(*typed, reason.otherwise(None).alias("reason"))


def derived_event_id(source: dict) -> pl.Expr:
    """The stable event id of a source without one (``event_id_from``), as the column
    ``event_id_field``, computed over typed, normalized rows (:func:`decode_records` output).

    The id is the first 32 hex digits of the SHA-256 of the UTF-8 text of the JSON array of the
    ``event_id_from`` values, in that order, written with no spaces (``separators=(",", ":")``) and
    non-ASCII characters as they are (``ensure_ascii=False``), as Python's ``json.dumps`` writes
    it: a string as a JSON string, an int64 in decimal, a bool as ``true``/``false``, a missing value
    as ``null``, and a time (the event time, or any ``timestamp`` field) as its integer epoch
    milliseconds. For ``event_id_from=("uid", "movie_id", "event_time")`` and a rating of
    ``"u1"`` for ``"m9"`` at 1700000000 s, that is ``sha256('["u1","m9",1700000000000]')``.

    The values are the normalized ones, so the same event gets the same id from any batch format or
    the stream, in any process and with any polars version (no polars hash is involved).
    """
    fields = list(source["event_id_from"])
    schema = source["schema"]
    values = [pl.col(f).dt.epoch("ms").alias(f) if schema[f] == "timestamp" and f != source["time_field"]
              else pl.col(f) for f in fields]
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def ids(rows: pl.Series) -> pl.Series:
        columns = [rows.struct.field(f).to_list() for f in fields]
        return pl.Series([hashlib.sha256(encode(list(row)).encode()).hexdigest()[:32] for row in zip(*columns)],
                         dtype=pl.String)

    return pl.struct(values).map_batches(ids, return_dtype=pl.String).alias(source["event_id_field"])
