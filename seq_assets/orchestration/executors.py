"""Where a run's steps execute, chosen by a setting, so the same definitions run in process on a
laptop and on dagster-celery workers in a cluster.

``SEQ_EXECUTOR=in_process`` (the default): every step in the run's own process (see
``definitions.py``: on a warm run worker this is the fastest on one machine). ``SEQ_EXECUTOR=celery``:
each step is a Celery task (``dagster_celery``) on the broker ``SEQ_CELERY_BROKER`` with results in
``SEQ_CELERY_BACKEND`` (Redis); any worker started with ``celery -A dagster_celery.app worker``
and the same ``SEQ_*`` settings takes it. The Dagster instance must then be one every worker
reaches (Postgres, ``scripts/stack.sh``), and the lake one they all reach (object storage).

Not dagster-dask: it delivers fan-in inputs empty and runs concurrent runs of one job as one (its
task key is the job name and step key), which loses work silently.
"""

from __future__ import annotations

import dagster as dg

from seq_assets import settings


def run_executor(name: str | None = None, broker: str | None = None, backend: str | None = None) -> dg.ExecutorDefinition:
    """The executor of ``name`` (default ``SEQ_EXECUTOR``)."""
    name = name or settings.executor()
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured({"broker": broker or settings.celery_broker(),
                                           "backend": backend or settings.celery_backend()})
    if name == "in_process":
        return dg.in_process_executor
    raise ValueError(f"unknown executor {name!r} (in_process or celery)")


def batch_job(buckets: int | None = None, executor: str | None = None, lake_uri: str = "") -> dg.JobDefinition:
    """The batch graph (raw/, dead_letter/, enrichments/, events/, sequences/) as one job, with
    ``buckets`` user buckets (default ``SEQ_USER_BUCKETS``) and ``executor`` (default
    ``SEQ_EXECUTOR``), on the lake at ``lake_uri`` (default ``SEQ_LAKE_URI``; the storage options
    stay the settings' in each process). A module-level function with plain arguments, so a worker on another
    machine rebuilds the same job from its name and arguments (``reconstructable_batch_job``)."""
    from seq_assets.orchestration.buckets import build_assets
    from seq_assets.orchestration.io import STAGED_IO, LakeIOManager
    from seq_assets.orchestration.resources import LakeResource

    compiled = settings.load_compiled()
    buckets = settings.user_buckets() if buckets is None else buckets
    job = dg.define_asset_job("batch_graph", selection=dg.AssetSelection.all(), executor_def=run_executor(executor))
    defs = dg.Definitions(assets=build_assets(compiled, buckets), jobs=[job],
                          resources={"lake": LakeResource(uri=lake_uri), STAGED_IO: LakeIOManager(uri=lake_uri)})
    return defs.resolve_job_def("batch_graph")


def reconstructable_batch_job(buckets: int | None = None, executor: str | None = None, lake_uri: str = ""):
    """:func:`batch_job` as a job Dagster can rebuild in another process (``dg.execute_job``)."""
    from dagster._core.definitions.reconstruct import build_reconstructable_job

    return build_reconstructable_job(__name__, "batch_job", reconstructable_kwargs={
        "buckets": settings.user_buckets() if buckets is None else buckets,
        "executor": executor or settings.executor(), "lake_uri": lake_uri})


def backfill(instance: dg.DagsterInstance, start: str, end: str, buckets: int | None = None,
             executor: str | None = None, lake_uri: str = "") -> dg.ExecutionResult:
    """Run the batch graph over the days [start, end] as one run (the single-run backfill the UI
    starts), in ``instance``, with the chosen executor; returns the run's result."""
    tags = {"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end}
    return dg.execute_job(reconstructable_batch_job(buckets, executor, lake_uri), instance=instance, tags=tags,
                          raise_on_error=False)
