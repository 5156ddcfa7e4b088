"""SQL over the lake for analysts and notebooks: :func:`connect` and :func:`query`.

    from seq_assets.sql import connect, query
    con = connect()                      # every table of SEQ_LAKE_URI as a view <kind>.<name>
    query("SELECT date, count(*) FROM events.pin_click GROUP BY ALL", conn=con)

The views themselves are built in ``seq_assets.storage.sql``; this module is the public entry
point, which fills in the lake from the settings when none is given.
"""

from __future__ import annotations

from seq_assets import settings
from seq_assets.storage import sql as _sql
from seq_assets.storage.sql import EXAMPLES, IOStats, example, views  # noqa: F401  (public names)


def connect(lake=None, io_stats: IOStats | None = None, tables=None, database: str = ":memory:"):
    """A DuckDB connection with one schema per table kind and one view per lake table."""
    return _sql.connect(settings.lake() if lake is None else lake, io_stats=io_stats, tables=tables, database=database)


def query(sql, lake=None, conn=None, params=None, io_stats: IOStats | None = None):
    """Run ``sql`` over the lake (default ``SEQ_LAKE_URI``) and return a polars frame; see
    :func:`seq_assets.storage.sql.query` for the argument forms."""
    if conn is None and lake is None and isinstance(sql, str):
        lake = settings.lake()
    return _sql.query(sql, lake=lake, conn=conn, params=params, io_stats=io_stats)
