"""Serving while maintenance compacts ``events/``: a compacted file holds rows the service has read
already or holds in its snapshot, so it reads the files the compaction replaced that it has not read
instead, and no answer changes (a feature without dedup would otherwise count an event twice)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import orjson
import polars as pl
import pytest

from seq_assets.core.compiled import Compiled, compile_definitions
from seq_assets.serving.service import SequenceService
from seq_assets.storage import maintenance
from seq_assets.storage.lake import Lake
from signal_defs import REGISTRY
from tests.support.demo_lake import DAYS, copy_template

CLOSED = DAYS[-1]
LATER = CLOSED + timedelta(days=1)
AS_OF = (LATER + timedelta(days=1)).isoformat()  # the end of the day after the snapshot's


def stream_batch(lake: Lake, base: pl.DataFrame, day, tag: str) -> pl.DataFrame:
    """Three events of ``base``'s users on ``day`` with new ids, inserted as a micro-batch: one file."""
    start = int(datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc).timestamp() * 1000)
    rows = base.head(3).with_columns(
        pl.format("{}-{}", pl.lit(tag), pl.int_range(3)).alias("event_id"),
        (pl.lit(start) + pl.int_range(3) * 1000).alias("ts"),
        pl.lit(datetime.now(timezone.utc)).dt.cast_time_unit("us").alias("ingested_at"),
        pl.lit(day).alias("date"))
    lake.insert_unseen("events", "pin_click", rows, key="event_id")
    return rows


def answers(svc: SequenceService, users: list[int]) -> dict[int, bytes]:
    return {u: orjson.dumps(svc.get("engagements_v1", u, as_of=AS_OF), option=orjson.OPT_SERIALIZE_NUMPY)
            for u in users}


def fresh_rows(svc: SequenceService) -> int:
    frame = svc.stores["engagements_v1"].fresh.frame
    return 0 if frame is None else frame.height


@pytest.mark.timeout(180)
def test_compacting_events_under_the_service_rereads_nothing_and_changes_no_answer(tmp_path_factory, tmp_path):
    lake = Lake(str(copy_template(tmp_path_factory, tmp_path / "copy").lake))
    svc = SequenceService(Compiled(compile_definitions(REGISTRY)), lake)
    assert svc.stores["engagements_v1"].snapshot.day == CLOSED
    base = lake.read("events", "pin_click", days=[CLOSED])
    users = base.head(3)["user_id"].unique().to_list()
    for i in range(3):  # late events of the snapshot's day, and events of the day after it
        stream_batch(lake, base, CLOSED, f"late{i}")
        stream_batch(lake, base, LATER, f"next{i}")
    svc.refresh()
    held = fresh_rows(svc)
    assert held == 18
    want = answers(svc, users)
    assert any(b"late" in want[u] for u in users)

    # The closed day compacted whole, as the daily run does: the snapshot day's batch file is rewritten too.
    done = maintenance.compact(lake, "events", "pin_click", {CLOSED: 2, LATER: 2}, now_ms=int(time.time() * 1000),
                               whole=[CLOSED])
    assert done.days == {CLOSED: (4, 1), LATER: (3, 1)}
    svc.refresh()
    assert fresh_rows(svc) == held  # neither the snapshot's rows nor copies of read ones came in
    assert answers(svc, users) == want

    # Rows inserted and compacted between two polls are read from the files the compaction replaced.
    added = stream_batch(lake, base, LATER, "between")
    stream_batch(lake, base, LATER, "between2")
    maintenance.compact(lake, "events", "pin_click", {LATER: 2}, now_ms=int(time.time() * 1000))
    svc.refresh()
    assert fresh_rows(svc) == held + 6
    got = svc.get("engagements_v1", users[0], as_of=AS_OF)["events"]
    assert {e["event_id"] for e in got} >= {r for r, u in zip(added["event_id"], added["user_id"]) if u == users[0]}
