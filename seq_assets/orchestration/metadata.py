"""Helpers that turn frames and table stats into metadata a person wants to see in the UI."""

from __future__ import annotations

import dagster as dg
import polars as pl


def preview_md(df: pl.DataFrame, rows: int = 5, max_chars: int = 60) -> dg.MetadataValue:
    """A small markdown table; long values (embeddings, sequences) are cut to stay readable."""
    head = df.head(rows)
    cols = head.columns

    def cell(v) -> str:
        s = str(v).replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= max_chars else s[: max_chars - 1] + "…"

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in head.iter_rows():
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def table_metadata(stats: dict, **extra) -> dict:
    return {
        "delta_version": dg.MetadataValue.int(stats["version"] if stats["version"] is not None else -1),
        "table_bytes": dg.MetadataValue.int(stats["bytes"]),
        "table_files": dg.MetadataValue.int(stats["files"]),
        **extra,
    }
