"""One copy of a snapshot for all the worker processes of a server (``seqctl serve --workers K``).

The first worker to need a feature's snapshot of a day reads it (the serving snapshot read, as a
single process does), writes its flat columns as Arrow IPC files into the server's shared folder
(``/dev/shm`` when there is one), and every worker memory-maps those files: numeric columns, the
per-user offsets and the embedding matrices are zero-copy numpy views of the mapping, so the pages
are the page cache's and counted once however many workers map them (Pss). String columns are
stored as int32 codes into a small vocabulary that each worker decodes per request slice.

A lock file per snapshot makes one worker build it while the others wait and then map it; the
builder removes the folders of that feature's older days (a worker still mapping one keeps its
pages until it swaps).
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import json
import logging
import os
import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from pyarrow import ipc

from seq_assets.serving.columns import Events

log = logging.getLogger("seqplat.serve")


class NotShareable(Exception):
    """A column of a type the shared form does not hold."""


def default_dir() -> str:
    """RAM-backed when the machine has /dev/shm (no disk writes, still page cache)."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else "/tmp"


def _encode(arr: np.ndarray) -> tuple[pa.Array, str, pa.Array | None]:
    if arr.dtype == object:
        s = pl.Series(arr.tolist(), dtype=pl.String, strict=False)
        distinct = s.drop_nulls().unique().sort()
        codes = s.cast(pl.Enum(distinct)).to_physical().fill_null(len(distinct)).cast(pl.Int32).to_numpy()
        vocab = pa.array(distinct.to_list() + [None], type=pa.string())
        return pa.array(codes), "str", vocab
    if arr.dtype == np.bool_:
        return pa.array(arr.view(np.uint8)), "bool", None
    if arr.ndim == 2 and arr.dtype.kind == "f":
        flat = np.ascontiguousarray(arr).reshape(-1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat), arr.shape[1]), f"matrix:{arr.shape[1]}", None
    if arr.ndim == 1 and arr.dtype.kind in "iuf":
        return pa.array(arr), "num", None
    raise NotShareable(f"a column of numpy type {arr.dtype} and shape {arr.shape}")


def _decode(col: pa.ChunkedArray, kind: str) -> np.ndarray:
    chunk = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if kind.startswith("matrix:"):
        width = int(kind.split(":")[1])
        values = chunk.values.to_numpy(zero_copy_only=True)
        return values.reshape(len(chunk), width)
    arr = chunk.to_numpy(zero_copy_only=True)
    return arr.view(np.bool_) if kind == "bool" else arr


def _write_table(path: Path, arrays: dict[str, pa.Array], meta: dict | None = None) -> None:
    table = pa.table(arrays)
    if meta is not None:
        table = table.replace_schema_metadata({"seqplat": json.dumps(meta)})
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(1, table.num_rows))


def _map_table(path: Path) -> pa.Table:
    return ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def write_snapshot(snap, folder: Path) -> None:
    """``snap`` (a serving ``fetch.Snapshot``) as Arrow IPC files in ``folder``."""
    folder.mkdir(parents=True)
    cols, kinds, vocabs = {}, {}, {}
    for name, arr in snap.events.cols.items():
        cols[name], kinds[name], vocab = _encode(arr)
        if vocab is not None:
            vocabs[name] = vocab
    for name, arr in snap.events.valid.items():
        cols[f"valid:{name}"], kinds[f"valid:{name}"], _ = _encode(arr)
    users = snap.user_ids
    user_kind = "str" if users.dtype == object else "num"
    meta = {"day": snap.day.isoformat() if snap.day else None, "written_ms": snap.written_ms, "kinds": kinds,
            "user_kind": user_kind, "rows": len(snap.events)}
    _write_table(folder / "events.arrow", cols or {"_": pa.nulls(0)}, meta)
    user_arr = pa.array(users.tolist(), type=pa.string()) if user_kind == "str" else pa.array(users)
    _write_table(folder / "users.arrow", {"user_id": user_arr})
    _write_table(folder / "offsets.arrow", {"offset": pa.array(np.asarray(snap.offsets, dtype=np.int64))})
    _write_table(folder / "vocab.arrow", {c: pa.array([v], type=pa.list_(pa.string())) for c, v in vocabs.items()}
                 or {"_": pa.nulls(1)})


def map_snapshot(folder: Path, snapshot_type):
    """The snapshot ``write_snapshot`` wrote (a ``snapshot_type``, ``fetch.Snapshot``), its columns
    views of the memory-mapped files."""
    events = _map_table(folder / "events.arrow")
    meta = json.loads(events.schema.metadata[b"seqplat"])
    cols, valid = {}, {}
    for name, kind in meta["kinds"].items():
        arr = _decode(events.column(name), kind)
        if name.startswith("valid:"):
            valid[name[len("valid:"):]] = arr
        else:
            cols[name] = arr
    users = _map_table(folder / "users.arrow").column("user_id")
    if meta["user_kind"] == "str":  # a binary search needs Python strings: the one per-worker copy
        user_ids = np.array(users.to_pylist(), dtype=object)
    else:
        user_ids = _decode(users, "num")
    offsets = _decode(_map_table(folder / "offsets.arrow").column("offset"), "num")
    vocab_table = _map_table(folder / "vocab.arrow")
    vocabs = {c: np.array(vocab_table.column(c)[0].as_py(), dtype=object)
              for c in vocab_table.column_names if c in cols}
    day = date.fromisoformat(meta["day"]) if meta["day"] else None
    return snapshot_type(day, user_ids, offsets, Events(cols, valid), meta["written_ms"], vocabs)


def _give_back_freed_memory() -> None:
    """glibc keeps freed heap for reuse; a builder that has written its snapshot returns it (Linux)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class SharedSnapshots:
    """The shared folder of one server's workers; ``tag`` (the shard) keeps shards apart in it."""

    def __init__(self, root: str | Path, snapshot_type, tag: str = "all"):
        self.root, self.snapshot_type = Path(root), snapshot_type
        self.tag = tag.replace("/", "of")
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, table: str, day: date) -> Path:
        return self.root / f"{table}.{self.tag}.{day.isoformat()}"

    def snapshot(self, table: str, day: date, build: Callable[[], object]):
        """The mapped snapshot of ``table`` on ``day``, built with ``build()`` by the first worker."""
        folder = self.folder(table, day)
        with open(self.root / f"{table}.{self.tag}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / "done").exists():
                snap = build()
                tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                try:
                    write_snapshot(snap, tmp)
                except NotShareable as e:
                    shutil.rmtree(tmp, ignore_errors=True)
                    log.warning("snapshot of %s not shared between workers (%s): held in this worker", table, e)
                    return snap
                del snap  # the mapped copy replaces it in this worker too
                _give_back_freed_memory()
                (tmp / "done").touch()
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)
                for old in self.root.glob(f"{table}.{self.tag}.*"):
                    if old.is_dir() and old != folder:
                        shutil.rmtree(old, ignore_errors=True)
        return map_snapshot(folder, self.snapshot_type)
