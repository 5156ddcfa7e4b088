"""User buckets: one day of ``events/`` and ``sequences/`` built as B steps and one commit.

With ``SEQ_USER_BUCKETS`` = B > 1 each ``events/`` multi-asset and each ``sequences/`` asset is a
graph: B bucket steps, each building only the users with ``user_bucket(user, B) == b``
(``seq_assets.core.buckets``, the one stable hash) for every day of the run and writing their
Parquet files into the table without committing (``Lake.stage_partitions``), then one commit step
that commits every bucket's files and the removal of the days' old files in ONE Delta transaction
per table (``Lake.commit_staged``), so a reader sees each day whole, before or after, and runs the
same checks as the unbucketed asset (``assets.events_results``, ``assets.sequence_result``). Any
executor can run the bucket steps side by side (``SEQ_EXECUTOR=celery``: on different workers).

The buckets partition the users, so the union of the buckets' rows is the unbucketed build (tested
row for row): the events of a user depend on the raw rows of that user and on history and
snapshots the bucket reads whole (a counter over other users' events still counts them); a
sequence depends on its user's events only. A custom executor that mixes users within a day's
events would break this; the built-in ones do not.

The bucket steps hand the commit step a small description of their files (paths, sizes,
statistics), through ``LakeIOManager``: on the lake's own storage, not a worker's disk.
"""

import inspect
from datetime import date

import dagster as dg

from seq_assets.core import snapshots
from seq_assets.core.compiled import Compiled
from seq_assets.orchestration import assets
from seq_assets.orchestration.assets import (
    EVENT_CHECKS,
    SINGLE_RUN,
    events_results,
    key,
    sequence_checks,
    sequence_result,
)
from seq_assets.orchestration.io import STAGED_IO, forget_outputs
from seq_assets.orchestration.partitions import DAILY, partition_days
from seq_assets.orchestration.resources import LakeResource


def _graph_fn(params: list[str], body):
    """A function with exactly ``params`` as its parameters (the graph's upstream assets) calling
    ``body(**kwargs)``: Dagster names a graph-backed asset's inputs from its function's signature."""
    def fn(**kwargs):
        return body(**kwargs)

    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in params])
    return fn


def _ins(deps: list[dg.AssetKey]) -> dict[str, dg.AssetIn]:
    return {f"after_{'__'.join(k.path)}": dg.AssetIn(key=k, dagster_type=dg.Nothing) for k in deps}


def _stage_ops(name: str, buckets: int, stage, description: str, after: list[str]) -> list[dg.OpDefinition]:
    """One op per bucket, each calling ``stage(context, lake, (b, buckets))`` and returning what it staged."""
    ops = []
    for b in range(buckets):
        def make(b: int):
            @dg.op(name=f"{name}__bucket_{b}", ins={a: dg.In(dg.Nothing) for a in after}, out=dg.Out(io_manager_key=STAGED_IO),
                   description=f"{description}: the users of bucket {b} of {buckets}, staged, not committed")
            def _stage(context: dg.OpExecutionContext, lake: LakeResource):
                return stage(context, lake, (b, buckets))
            return _stage
        ops.append(make(b))
    return ops


def _bucket_steps(context: dg.OpExecutionContext, stages: list) -> list[str]:
    """The step keys of the bucket steps beside a commit step (``<graph>.<op>``)."""
    graph = context.op_handle.parent
    return [f"{graph}.{s.name}" if graph else s.name for s in stages]


def _compose(ins: dict, stages: list, commit):
    def body(**upstream):
        return commit(staged=[s(**upstream) for s in stages])
    return _graph_fn(list(ins), body)


def events_assets(compiled: Compiled, source: str, buckets: int) -> dg.AssetsDefinition:
    """``events/`` of every event type of ``source``, as ``buckets`` bucket steps and a commit."""
    event_types = compiled.event_types_of(source)
    names = [et["name"] for et in event_types]
    deps = [key("raw", source)] + sorted(
        {key("enrichments", e) for et in event_types for e in et["enrichments"] if compiled.enrichments[e]["kind"] == "lookup"},
        key=lambda k: k.path)
    checks = [dg.AssetCheckSpec(c, asset=key("events", n), blocking=True) for n in names for c in EVENT_CHECKS]
    outs = {n: dg.AssetOut(key=key("events", n), group_name="events", kinds={"delta", "polars"}, dagster_type=dg.Nothing,
                           description=f"{n}: {compiled.event_types[n].get('description', '')} Built in {buckets} user buckets.",
                           metadata={"definition_hash": compiled.event_types[n]["hash"],
                                     "late_arrival_days": compiled.event_types[n]["late_arrival_days"],
                                     "user_buckets": buckets})
            for n in names}

    def stage(context, lake: LakeResource, bucket):
        return lake.engine().stage_events_days(source, partition_days(context), names, bucket)

    ins = _ins(deps)
    stages = _stage_ops(f"events__{source}", buckets, stage, f"events of {source}", list(ins))
    commit_outs = {n: dg.Out(dg.Nothing) for n in names} | {c.get_python_identifier(): dg.Out(dg.Nothing) for c in checks}

    @dg.op(name=f"events__{source}__commit", out=commit_outs,
           description=f"Commit every bucket's events of {source} in one transaction per table, then check them")
    def _commit(context: dg.OpExecutionContext, lake: LakeResource, staged: list):
        engine = lake.engine()
        days = partition_days(context)
        engine.commit_events_days(source, staged, names)
        forget_outputs(engine.lake, context.run_id, _bucket_steps(context, stages))
        wanted = {(n, c) for n in names for c in EVENT_CHECKS}
        yield from events_results(compiled, engine, source, names, wanted, days, days)

    return dg.graph_multi_asset(
        name=f"events__{source}", outs=outs, ins=ins, check_specs=checks, partitions_def=DAILY,
        backfill_policy=SINGLE_RUN, can_subset=False,
    )(_compose(ins, stages, _commit))


def sequence_asset(compiled: Compiled, table: str, buckets: int) -> dg.AssetsDefinition:
    """``sequences/<table>`` as ``buckets`` bucket steps and a commit."""
    f = compiled.features[table]
    predecessor = f"{f['name']}_v{f['version'] - 1}"
    deps = [key("events", et) for et in f["event_types"]] + ([key("sequences", predecessor)]
                                                           if predecessor in compiled.features else [])
    checks = sequence_checks(compiled, table)
    out = dg.AssetOut(
        key=key("sequences", table), group_name="sequences", kinds={"delta", "polars"}, dagster_type=dg.Nothing,
        tags={"lifecycle": f["lifecycle"]},
        description=(f"{f['name']} v{f['version']} ({f['lifecycle']}, owner {f['owner']}): last {f['max_length']} "
                     f"events of {', '.join(f['event_types'])} within {f['window_days']} days, as of the end of each "
                     f"day. Built in {buckets} user buckets."),
        metadata={"output_hash": f["output_hash"], "max_length": f["max_length"], "window_days": f["window_days"],
                  "user_buckets": buckets})

    def stage(context, lake: LakeResource, bucket):
        engine = lake.engine()
        return [{"day": day.isoformat(), "staged": staged, "users": seqs.height}
                for day, seqs, staged in engine.sequences_days(table, partition_days(context), bucket=bucket, stage=True)]

    ins = _ins(deps)
    stages = _stage_ops(f"sequences__{table}", buckets, stage, f"sequences of {table}", list(ins))
    commit_outs = {"result": dg.Out(dg.Nothing)} | {c.get_python_identifier(): dg.Out(dg.Nothing) for c in checks}

    @dg.op(name=f"sequences__{table}__commit", out=commit_outs,
           description=f"Commit every bucket's sequences of {table} in one transaction, then check them")
    def _commit(context: dg.OpExecutionContext, lake: LakeResource, staged: list):
        engine = lake.engine()
        days = partition_days(context)
        # Every day a bucket staged: the run's days, and the days after them it re-derived.
        written = sorted({date.fromisoformat(d["day"]) for part in staged for d in part})
        engine.lake.commit_staged("sequences", table, [d["staged"] for part in staged for d in part], written)
        forget_outputs(engine.lake, context.run_id, _bucket_steps(context, stages))
        # A day's partition may hold only the users that changed: read what readers see for the day.
        built = ((day, snapshots.sequences_as_of(engine.lake, compiled, table, day)) for day in days)
        yield sequence_result(compiled, engine, table, days, built, context.log)

    return dg.graph_multi_asset(
        name=f"sequences__{table}", outs={"result": out}, ins=ins, check_specs=checks, partitions_def=DAILY,
        backfill_policy=SINGLE_RUN, can_subset=False,
    )(_compose(ins, stages, _commit))


def build_assets(compiled: Compiled, buckets: int = 1) -> list[dg.AssetsDefinition]:
    """Every asset of the definitions, ``events/`` and ``sequences/`` in ``buckets`` user buckets
    (1: the plain assets of ``assets.build_assets``)."""
    if buckets == 1:
        return assets.build_assets(compiled)
    return assets.build_assets(compiled, lambda c, source: events_assets(c, source, buckets),
                               lambda c, table: sequence_asset(c, table, buckets))
