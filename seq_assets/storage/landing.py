"""The landing area: where batch sources and enrichment snapshots arrive as files.

Layout under the landing root (``SEQ_LANDING_DIR``): a source's records in
``<batch_location>/arrival_date=YYYY-MM-DD/*.<batch_format>`` (``jsonl``, ``csv`` or ``parquet``),
a lookup enrichment's snapshots in ``<snapshot_location>/date=YYYY-MM-DD/*.parquet``. A source of
``batch_format="delta"`` is instead an existing Delta table at its ``batch_location`` (a URI or an
absolute path, or a path under the root). This module lists and reads those files and tables; what
the records mean is the engine's business.
"""

from __future__ import annotations

import os
from datetime import date

import polars as pl
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from seq_assets.storage import objects

# The file formats a source's batch records may land in (``Source.batch_format``), by file suffix.
FILE_FORMATS = ("jsonl", "csv", "parquet")


class Landing:
    """The landing root: a local folder, ``file://`` or an S3-compatible ``s3://`` URI (with the
    storage options the lake takes). Listing goes through pyarrow's file systems
    (``storage.objects``), reading through polars with the same options."""

    def __init__(self, root: str, storage_options: dict | None = None):
        if not root:
            raise ValueError("a landing area needs a root (SEQ_LANDING_DIR)")
        self.root = str(root).rstrip("/")
        self.storage_options = storage_options or None

    def _uri(self, *parts: str) -> str:
        return "/".join([self.root, *(p.strip("/") for p in parts if p)])

    def _list(self, uri: str, files: bool) -> list[str]:
        """The files (or folders) directly in ``uri``, as URIs under the root, in name order;
        hidden names (a leading ``.``) are left out, as a shell glob leaves them."""
        try:
            fs, path = objects.filesystem(uri, self.storage_options)
        except ValueError:  # a store pyarrow's clients are not configured for here (gs://, az://)
            from deltalake.fs import DeltaStorageHandler

            fs, path = pafs.PyFileSystem(DeltaStorageHandler(uri, self.storage_options)), ""
        kind = pafs.FileType.File if files else pafs.FileType.Directory
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return sorted(f"{uri}/{i.base_name}" for i in infos
                      if i.type == kind and not i.base_name.startswith("."))

    def batch_files(self, location: str, arrival_day: date, fmt: str = "jsonl") -> list[str]:
        """The ``fmt`` files that arrived on ``arrival_day`` at a source's batch location, in name order."""
        if fmt not in FILE_FORMATS:
            raise ValueError(f"unknown batch file format {fmt!r} (one of: {', '.join(FILE_FORMATS)})")
        folder = self._uri(location, f"arrival_date={arrival_day.isoformat()}")
        return [f for f in self._list(folder, files=True) if f.endswith(f".{fmt}")]

    def read_batch_file(self, path: str, fmt: str) -> pl.DataFrame:
        """One batch file as it is: the lines of a ``jsonl`` file (column ``value``), the rows of a
        ``csv`` file (header row; every column as text, an empty cell null; cells past the header's
        columns are dropped, missing ones null; blank lines skipped; an empty file has no rows) or of
        a ``parquet`` file."""
        opts = self.storage_options if "://" in path and not path.startswith("file://") else None
        try:
            if fmt == "jsonl":
                return pl.read_lines(path, name="value", glob=False, storage_options=opts)
            if fmt == "csv":
                rows = pl.read_csv(path, infer_schema=False, truncate_ragged_lines=True, raise_if_empty=False,
                                   glob=False, storage_options=opts)
                return rows.filter(~pl.all_horizontal(pl.all().is_null())) if rows.width else rows
            if fmt == "parquet":
                return pl.read_parquet(path, glob=False, storage_options=opts)
        except (pl.exceptions.PolarsError, OSError) as e:
            raise ValueError(f"cannot read batch file {path} as {fmt}: {e}") from e
        raise ValueError(f"unknown batch file format {fmt!r} (one of: {', '.join(FILE_FORMATS)})")

    def read_batch_bytes(self, path: str) -> bytes | None:
        """A batch file's bytes as stored, from a local folder or an S3-compatible store; None
        where this module has no client for the store (``read_batch_file`` reads it there)."""
        try:
            if "://" not in path or path.startswith("file://"):
                with open(path.removeprefix("file://"), "rb") as f:
                    return f.read()
            return objects.get_bytes(path, self.storage_options)
        except ValueError:  # a store pyarrow's clients are not configured for here (gs://, az://)
            return None
        except OSError as e:
            raise ValueError(f"cannot read batch file {path}: {e}") from e

    def delta_uri(self, location: str) -> str:
        """The table of a Delta source: its ``batch_location`` when that is a URI or an absolute
        path, else that path under the landing root."""
        if "://" in location or os.path.isabs(location):
            return location.rstrip("/")
        return f"{self.root}/{location.strip('/')}"

    def scan_delta(self, location: str) -> tuple[pl.LazyFrame, str]:
        """A lazy scan of a Delta source's current snapshot, and ``<uri>@v<version>`` naming it."""
        uri = self.delta_uri(location)
        try:
            table = DeltaTable(uri, storage_options=self.storage_options)
        except TableNotFoundError as e:
            raise ValueError(f"no Delta table at {uri} (a delta source's batch_location names an existing table)") from e
        return pl.scan_delta(table), f"{uri}@v{table.version()}"

    def snapshot_days(self, location: str) -> list[date]:
        """The days an enrichment has a snapshot (a ``date=`` folder holding Parquet files) for, in order."""
        return sorted(date.fromisoformat(folder.rsplit("/", 1)[1].split("=", 1)[1])
                      for folder in self._list(self._uri(location), files=False)
                      if folder.rsplit("/", 1)[1].startswith("date=") and self._snapshot_files(folder))

    def _snapshot_files(self, folder: str) -> list[str]:
        return [f for f in self._list(folder, files=True) if f.endswith(".parquet")]

    def read_snapshot(self, location: str, day: date) -> pl.DataFrame:
        files = self._snapshot_files(self._uri(location, f"date={day.isoformat()}"))
        if not files:
            raise ValueError(f"no snapshot files for {location} on {day} under {self.root}")
        remote = "://" in self.root and not self.root.startswith("file://")
        return pl.read_parquet(files, storage_options=self.storage_options if remote else None)
