"""SQL over the lake with DuckDB: every Delta table as a view named by its path.

    from seq_assets.sql import connect, query        # the public reads (default lake: SEQ_LAKE_URI)
    con = connect()
    query("SELECT date, count(*) FROM events.pin_click GROUP BY ALL", conn=con)

Each table ``<kind>/<name>`` becomes the view ``<kind>.<name>`` (``events.pin_click``,
``sequences.engagements_v1``, ``raw.user_engagements``, ``metrics.late_arrivals``, ...). A view
reads a pyarrow dataset built from the table's current Delta snapshot (DuckDB's own Delta extension
is downloaded at run time, which this platform does not allow). DuckDB pushes filters and the
columns it needs into the dataset scan, so ``WHERE date = '2026-03-02'`` opens only that day's
files (each file carries its ``date`` partition) and only the column chunks the query reads.

``IOStats`` counts what a query really read (files opened, bytes read) by wrapping the dataset's
filesystem; it shows the pruning and is used by ``seqctl sql --stats`` and the tests.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Iterable

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs

from seq_assets.core import snapshots
from seq_assets.storage.lake import KINDS, Lake, add_actions

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# ---- the three worked examples of the README (``{day}`` is an ISO date) -----------------------

EXAMPLES: dict[str, str] = {
    # Actions per surface over the last 7 days: unnest three list columns side by side.
    "actions_per_surface_7d": """
SELECT surface, event_type, count(*) AS actions
FROM (
    SELECT UNNEST(surface) AS surface, UNNEST(event_type) AS event_type, UNNEST(ts) AS ts
    FROM sequences.engagements_v1
    WHERE date = DATE '{day}'
)
WHERE ts >= epoch_ms(DATE '{day}' - INTERVAL 6 DAY)
GROUP BY surface, event_type
ORDER BY surface, event_type
""".strip(),
    # Sequence length distribution: len() of a list column, with the cumulative share of users.
    "sequence_length_distribution": """
SELECT len(ts) AS length, count(*) AS users,
       sum(count(*)) OVER (ORDER BY len(ts)) / sum(count(*)) OVER () AS cumulative_share
FROM sequences.engagements_v1
WHERE date = DATE '{day}'
GROUP BY length
ORDER BY length
""".strip(),
    # Time between consecutive engagements: ts is newest first, so ts[i] - ts[i+1] is the gap
    # before the i-th newest event (list slicing ts[2:] plus an indexed lambda).
    "time_between_engagements": """
WITH gaps AS (
    SELECT UNNEST(list_transform(ts[2:], lambda t, i: ts[i] - t)) / 1000.0 AS gap_s
    FROM sequences.engagements_v1
    WHERE date = DATE '{day}'
)
SELECT CASE WHEN gap_s < 10 THEN '1 <10s' WHEN gap_s < 60 THEN '2 10s-1m'
            WHEN gap_s < 600 THEN '3 1-10m' WHEN gap_s < 3600 THEN '4 10m-1h'
            WHEN gap_s < 86400 THEN '5 1h-1d' ELSE '6 >=1d' END AS gap,
       count(*) AS pairs,
       round(count(*) / sum(count(*)) OVER (), 4) AS share,
       median(gap_s) AS median_s
FROM gaps
GROUP BY gap
ORDER BY gap
""".strip(),
}


def example(name: str, day) -> str:
    """One of the README queries for ``day`` (a date or ISO string)."""
    return EXAMPLES[name].format(day=str(day)[:10])


# ---- bytes read ----------------------------------------------------------------------------------


@dataclass
class IOStats:
    """What the scans of a connection really read: files opened and bytes read from them.

    ``bytes_read`` counts every read (a range read twice counts twice; parquet readers fetch the
    footer speculatively, up to 64 KiB, then the column chunks); ``unique_bytes`` counts each byte
    of each file once, so it never exceeds the size of the files opened.
    """

    bytes_read: int = 0
    reads: int = 0
    files: set[str] = field(default_factory=set)
    ranges: dict[str, list[tuple[int, int]]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reset(self) -> None:
        with self._lock:
            self.bytes_read, self.reads, self.files, self.ranges = 0, 0, set(), {}

    @property
    def unique_bytes(self) -> int:
        total = 0
        with self._lock:
            for spans in self.ranges.values():
                end = -1
                for a, b in sorted(spans):
                    if b > end:
                        total += b - max(a, end)
                        end = b
        return total

    def _read(self, path: str, offset: int, n: int) -> None:
        with self._lock:
            self.bytes_read += n
            self.reads += 1
            if n:
                self.ranges.setdefault(path, []).append((offset, offset + n))

    def _open(self, path: str) -> None:
        with self._lock:
            self.files.add(path)


class _CountingFile:
    """A file-like wrapper that counts the bytes read through it."""

    def __init__(self, f, stats: IOStats, path: str):
        self._f, self._stats, self._path, self.closed = f, stats, path, False

    def read(self, n: int = -1) -> bytes:
        pos = self._f.tell()
        b = self._f.read() if n is None or n < 0 else self._f.read(n)
        self._stats._read(self._path, pos, len(b))
        return b

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def size(self) -> int:
        return self._f.size()

    def close(self) -> None:
        self.closed = True
        self._f.close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False


class _CountingHandler(pafs.FileSystemHandler):
    """Read-only pyarrow filesystem over another one, counting opened files and bytes read."""

    def __init__(self, inner: pafs.FileSystem, stats: IOStats, prefix: str):
        self.inner, self.stats, self.prefix = inner, stats, prefix

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def get_type_name(self) -> str:
        return "seq-counting"

    def normalize_path(self, path):
        return self.inner.normalize_path(path)

    def get_file_info(self, paths):
        return self.inner.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.inner.get_file_info(selector)

    def open_input_file(self, path):
        key = f"{self.prefix}/{path}"
        self.stats._open(key)
        return pa.PythonFile(_CountingFile(self.inner.open_input_file(path), self.stats, key), mode="r")

    def open_input_stream(self, path):
        return self.open_input_file(path)

    def _read_only(self, *_a, **_k):
        raise NotImplementedError("the lake views are read-only")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _read_only
    move = copy_file = open_output_stream = open_append_stream = _read_only


# ---- views ---------------------------------------------------------------------------------------


def list_tables(lake: Lake) -> list[tuple[str, str]]:
    """Every Delta table of the lake as (kind, name), kinds in ``KINDS`` order."""
    return [(kind, n) for kind in KINDS for n in lake.table_names(kind) if _IDENT.match(n)]


def table_dataset(lake: Lake, kind: str, name: str, io_stats: IOStats | None = None):
    """The table's current snapshot as a pyarrow dataset (None if there is no such table).

    The files are read through pyarrow's own file system over the table's folder (local, or
    pyarrow's S3 client for ``s3://``: it releases the GIL while DuckDB reads); stores pyarrow has
    no client for here (``gs://``, ``az://``) read through deltalake's.
    """
    t = lake.table(kind, name)
    if t is None:
        return None
    inner, path = lake.filesystem(kind, name)
    fs = pafs.SubTreeFileSystem(path, inner) if path else inner
    if io_stats is not None:
        fs = pafs.PyFileSystem(_CountingHandler(fs, io_stats, f"{kind}/{name}"))
    return t.to_pyarrow_dataset(filesystem=fs)


def register_views(conn, lake: Lake | str, tables: Iterable[str] | None = None,
                   io_stats: IOStats | None = None) -> list[str]:
    """Register the lake's tables on ``conn`` as views ``<kind>.<name>``; returns the view names.

    ``tables`` limits it to some views (``"events.pin_click"``) or whole kinds (``"events"``).
    Re-registering refreshes the views to the tables' current versions.
    """
    lake = _lake(lake)
    wanted = set(tables) if tables is not None else None
    conn.execute("SET TimeZone = 'UTC'")
    names = []
    for kind, name in list_tables(lake):
        view = f"{kind}.{name}"
        if wanted is not None and view not in wanted and kind not in wanted:
            continue
        ds = table_dataset(lake, kind, name, io_stats)
        if ds is None:
            continue
        hidden = f"__lake__{kind}__{name}"
        conn.register(hidden, ds)
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {kind}")
        body = sequences_view_sql(lake, name, hidden, ds.schema.names) if kind == "sequences" else None
        conn.execute(f'CREATE OR REPLACE VIEW {kind}."{name}" AS {body or f"SELECT * FROM {_qi(hidden)}"}')
        names.append(view)
    return names


def _qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sequences_view_sql(lake: Lake, name: str, hidden: str, columns: list[str]) -> str | None:
    """The view ``sequences.<name>``: one row per user as of each built day, whatever the table's
    layout (:mod:`seq_assets.core.snapshots`). Per day, a full day's rows; a day of changes, per user
    the newest row since the day's full snapshot (no empty ones), and the snapshot's other users.
    Each day is one branch with constant date bounds, so ``WHERE date = ...`` keeps one branch and its
    scans read only the partitions that make that day. None: the table as it is (no row kinds)."""
    if snapshots.ROW_KIND not in columns:
        return None
    lf = lake.scan("sequences", name)
    kinds = {} if lf is None else snapshots.partition_kinds(lf)
    out_cols = [c for c in columns if c != snapshots.ROW_KIND]
    user = _user_column(lf, out_cols)
    src, u = _qi(hidden), _qi(user)

    def select(day, alias: str = "") -> str:
        return ", ".join(f"DATE '{day}' AS date" if c == "date" else f"{alias}{_qi(c)}" for c in out_cols)

    branches = []
    for d in sorted(kinds):
        base = snapshots.base_day(kinds, d)
        if base is None:  # only changes and no snapshot under them: the day cannot be read
            continue
        if base == d:
            branches.append(f"SELECT {select(d)} FROM {src} WHERE date = DATE '{d}' AND {u} IS NOT NULL")
            continue
        since = f"date > DATE '{base}' AND date <= DATE '{d}' AND {u} IS NOT NULL"
        branches.append(
            f"SELECT {select(d)} FROM (SELECT * FROM {src} WHERE {since} "
            f"QUALIFY row_number() OVER (PARTITION BY {u} ORDER BY date DESC) = 1) "
            f"WHERE {_qi(snapshots.ROW_KIND)} IS DISTINCT FROM '{snapshots.EMPTY}'")
        branches.append(
            f"SELECT {select(d, 'b.')} FROM (SELECT * FROM {src} WHERE date = DATE '{base}' AND {u} IS NOT NULL) b "
            f"ANTI JOIN (SELECT {u} FROM {src} WHERE {since}) c ON b.{u} = c.{u}")
    if not branches:
        return f"SELECT {', '.join(_qi(c) for c in out_cols)} FROM {src} WHERE false"
    return "\nUNION ALL\n".join(branches)


def _user_column(lf: pl.LazyFrame, columns: list[str]) -> str:
    """The user column of a sequences table: its one column besides ``date`` that is not a list."""
    schema = lf.collect_schema()
    scalars = [c for c in columns if c != "date" and not isinstance(schema[c], pl.List)]
    if len(scalars) != 1:
        raise ValueError(f"cannot tell the user column of a sequences table among {scalars}")
    return scalars[0]


def connect(lake: Lake | str, io_stats: IOStats | None = None,
            tables: Iterable[str] | None = None, database: str = ":memory:"):
    """A DuckDB connection with one schema per table kind and one view per lake table."""
    import duckdb

    conn = duckdb.connect(database)
    try:
        register_views(conn, lake, tables=tables, io_stats=io_stats)
    except Exception:
        conn.close()
        raise
    return conn


def views(conn) -> list[str]:
    """The lake views registered on ``conn`` (``kind.name``), sorted."""
    rows = conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        f"WHERE table_schema IN ({', '.join(repr(k) for k in KINDS)}) ORDER BY 1, 2").fetchall()
    return [f"{s}.{t}" for s, t in rows]


def has_view(conn, view: str) -> bool:
    return view in views(conn)


def query(sql, lake=None, conn=None, params=None, io_stats: IOStats | None = None) -> pl.DataFrame:
    """Run ``sql`` over the lake and return a polars frame.

    Pass an open ``conn`` (from ``connect``) to reuse its views, else a connection over ``lake``
    is opened and closed. ``query(conn, sql)`` and ``query(sql, conn)`` work too.
    """
    if not isinstance(sql, str) and isinstance(lake, str) and hasattr(sql, "execute"):
        sql, conn, lake = lake, sql, None  # query(conn, sql)
    elif lake is not None and not isinstance(lake, (str, Lake)) and hasattr(lake, "execute"):
        conn, lake = lake, None  # query(sql, conn)
    own = conn is None
    if own:
        conn = connect(lake, io_stats=io_stats)
    try:
        rel = conn.sql(sql, params=params) if params is not None else conn.sql(sql)
        if rel is None:  # a statement without a result
            return pl.DataFrame()
        return pl.from_arrow(_fetch_arrow(rel))
    finally:
        if own:
            conn.close()


def _fetch_arrow(rel) -> pa.Table:
    for name in ("to_arrow_table", "fetch_arrow_table", "arrow"):
        fn = getattr(rel, name, None)
        if fn is not None:
            out = fn()
            return out.read_all() if isinstance(out, pa.RecordBatchReader) else out
    raise AttributeError("cannot fetch an Arrow table from this DuckDB relation")


def _lake(lake: Lake | str) -> Lake:
    return lake if isinstance(lake, Lake) else Lake(str(lake))


def day_files(lake: Lake | str | None, kind: str, name: str, day=None) -> dict[str, int]:
    """``{"<kind>/<name>/<path>": size}`` of the table's files, of one day if given."""
    t = _lake(lake).table(kind, name)
    if t is None:
        return {}
    adds = add_actions(t)
    if day is not None:
        adds = adds.filter(pl.col("partition.date").cast(pl.String) == str(day)[:10])
    return {f"{kind}/{name}/{p}": int(s) for p, s in adds.select("path", "size_bytes").iter_rows()}


# ---- output --------------------------------------------------------------------------------------


def _cell(v, width: int) -> str:
    if v is None:
        s = "null"
    elif isinstance(v, float):
        s = f"{v:.6g}"
    elif isinstance(v, (list, dict)):
        s = json.dumps(v, default=str)
    else:
        s = str(v)
    s = s.replace("\n", " ")
    return s if len(s) <= width else s[: max(width - 1, 1)] + "…"


def format_table(df: pl.DataFrame, max_rows: int = 50, max_width: int = 40) -> str:
    """A plain-text table for the terminal: numbers right-aligned, long cells cut, row count."""
    if not df.columns:
        return "(no columns)"
    head = df.head(max_rows)
    numeric = [dt.is_numeric() for dt in df.dtypes]
    rows = [[_cell(v, max_width) for v in r] for r in head.iter_rows()]
    header = [_cell(c, max_width) for c in df.columns]
    widths = [max([len(header[i]), *(len(r[i]) for r in rows)]) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in rows)
    more = df.height - head.height
    out.append(f"({df.height} row{'s' if df.height != 1 else ''}" + (f", {more} not shown)" if more else ")"))
    return "\n".join(out)


def _jsonable(df: pl.DataFrame) -> pl.DataFrame:
    """Nested columns as JSON text (CSV has no lists)."""
    nested = [c for c, t in df.schema.items() if isinstance(t, (pl.List, pl.Array, pl.Struct))]
    if not nested:
        return df
    return df.with_columns(
        pl.Series(c, [None if v is None else json.dumps(v.to_list() if isinstance(v, pl.Series) else v, default=str)
                      for v in df.get_column(c).to_list()], dtype=pl.String)
        for c in nested
    )


def write_result(df: pl.DataFrame, fmt: str, out: str | None = None, max_rows: int = 50) -> str | None:
    """Write a result as ``table``, ``csv``, ``json`` (an array of objects) or ``parquet``.

    With ``out`` the result goes to that file and None is returned, else the text is returned.
    """
    if fmt == "parquet":
        if not out:
            raise ValueError("--format parquet needs --out FILE")
        df.write_parquet(out)
        return None
    if fmt == "table":
        text = format_table(df, max_rows=max_rows if not out else df.height) + "\n"
    elif fmt == "csv":
        text = _jsonable(df).write_csv()
    elif fmt == "json":
        text = json.dumps(df.to_dicts(), default=str, indent=1) + "\n"
    else:
        raise ValueError(f"unknown format {fmt!r} (table, csv, json, parquet)")
    if out:
        with open(out, "w") as f:
            f.write(text)
        return None
    return text
