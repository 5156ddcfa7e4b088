"""The batch graph spread over two dagster-celery workers: Redis as broker and result backend, the
Dagster instance on Postgres, the lake on S3 (moto), all on loopback and started by the test.

A backfill of the demo's three days as one run with 4 user buckets: every bucket step and commit
step runs on a worker (never in this process), the workers share no disk for the lake or the steps'
outputs, and every partition of events/ and sequences/ equals the single-process, unbucketed build
(the demo lake of ``tests/support/demo_lake.py``).
"""

from __future__ import annotations

import time

from tests.orchestration.test_buckets import assert_same_lakes
from tests.support.cluster import scale_out_stack
from tests.support.demo_lake import DAYS
from tests.support.envutil import scoped_env


def test_a_backfill_on_two_celery_workers_equals_the_single_process_build(demo_lake, compiled, s3_server, tmp_path):
    import dagster as dg

    from seq_assets.orchestration.executors import backfill
    from seq_assets.storage.lake import Lake

    extra = {"SEQ_LANDING_DIR": str(demo_lake.landing), "SEQ_USER_BUCKETS": "4"}
    with scale_out_stack(tmp_path, s3_server, workers=2, extra_env=extra) as stack, \
            scoped_env(**stack.env, SEQ_DEFS_DIR=None, SEQ_DEFS_MODULE=None):
        instance = stack.instance()
        assert "postgres" in type(instance.run_storage).__module__
        t0 = time.monotonic()
        result = backfill(instance, DAYS[0].isoformat(), DAYS[-1].isoformat(), buckets=4, executor="celery")
        print(f"backfill on celery: {time.monotonic() - t0:.1f} s")
        run = instance.get_run_by_id(result.run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS, [
            e.message for e in instance.all_logs(result.run_id) if e.is_error]

        # Every step ran on a Celery worker, and both workers took some.
        records = instance.all_logs(result.run_id)
        on_worker = {}
        for r in records:
            e = r.dagster_event
            if e is not None and e.event_type_value == "ENGINE_EVENT" and "celery worker" in (r.message or ""):
                on_worker[r.step_key] = e.engine_event_data.metadata["Celery worker"].value
        steps = {r.step_key for r in records if r.dagster_event and r.dagster_event.is_step_success}
        assert {s for s in steps if "__bucket_" in s} and steps <= set(on_worker)
        assert set(on_worker.values()) == set(stack.workers.names)

        lake = Lake(stack.env["SEQ_LAKE_URI"], dict(s3_server.storage_options()))
        assert_same_lakes(compiled, Lake(str(demo_lake.lake)), lake, DAYS)
        # One commit per table for the run's 3 days and 4 buckets; the steps' outputs are gone.
        assert lake.table("sequences", "engagements_v1").version() == 0
        assert not [k for k in stack.bucket.keys("lake/_step_outputs/") if not k.endswith("/")]
        instance.dispose()
