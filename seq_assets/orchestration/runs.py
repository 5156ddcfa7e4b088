"""Running the batch graph from outside Dagster's UI (``seqctl materialize``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date

import dagster as dg


def materialize_days(defs: dg.Definitions, days: list[date], groups: list[str] | None = None, record: bool = False,
                     progress: Callable[[str], None] = print) -> bool:
    """Materialize the asset graph one run per day, oldest first; ``record`` keeps the runs in
    ``DAGSTER_HOME`` so the UI shows them. False (after saying which) when a day fails."""
    selection = dg.AssetSelection.groups(*groups) if groups else None
    instance = dg.DagsterInstance.get() if record else dg.DagsterInstance.ephemeral()
    t0 = time.time()
    for i, day in enumerate(days, 1):
        t = time.time()
        result = dg.materialize(list(defs.assets), selection=selection, partition_key=day.isoformat(),
                                instance=instance, resources=defs.resources, raise_on_error=False)
        if not result.success:
            progress(f"day {day} failed")
            return False
        progress(f"[{i}/{len(days)}] {day} materialized in {time.time() - t:.1f}s")
    progress(f"{len(days)} day(s) in {time.time() - t0:.1f}s")
    return True
