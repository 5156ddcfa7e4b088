"""Step outputs on the lake's own storage, so steps on different machines can hand them on.

Only the user-bucket steps pass outputs (``orchestration.buckets``): a small JSON description of
the Parquet files each staged. Dagster's default IO manager pickles outputs to ``DAGSTER_HOME`` on
the local disk, which a worker on another machine cannot read; this one writes them as JSON under
``<lake root>/_step_outputs/<run id>/<step key>/<output>.json`` on the lake's storage (a folder or
``s3://``), with the lake's storage options. The commit step deletes its run's outputs once it
has committed.
"""

from __future__ import annotations

import json

import dagster as dg

from seq_assets import settings
from seq_assets.storage import objects

FOLDER = "_step_outputs"
STAGED_IO = "staged_io"  # the resource key of the bucket steps' outputs


class LakeIOManager(dg.ConfigurableIOManager):
    """JSON step outputs under the lake root. Empty settings fall back to ``SEQ_LAKE_URI`` and
    ``SEQ_STORAGE_OPTIONS``, read in each process that runs a step."""

    uri: str = ""
    storage_options: dict[str, str] = {}  # noqa: RUF012 - pydantic copies field defaults

    def _root(self) -> str:
        return (self.uri or settings.lake_uri()).rstrip("/")

    def _options(self) -> dict | None:
        return dict(self.storage_options) or settings.storage_options()

    def _path(self, run_id: str, step_key: str, name: str) -> str:
        return f"{outputs_folder(self._root(), run_id)}/{step_key}/{name}.json"

    def handle_output(self, context: dg.OutputContext, obj) -> None:
        objects.put_bytes(self._path(context.run_id, context.step_key, context.name),
                          json.dumps(obj).encode(), self._options())

    def load_input(self, context: dg.InputContext):
        up = context.upstream_output
        return json.loads(objects.get_bytes(self._path(up.run_id, up.step_key, up.name), self._options()))


def outputs_folder(root: str, run_id: str) -> str:
    return f"{root.rstrip('/')}/{FOLDER}/{run_id}"


def forget_outputs(lake, run_id: str, step_keys: list[str]) -> None:
    """Delete the outputs of these steps of a run from ``lake``'s storage (after the commit that
    consumed them)."""
    for step in step_keys:
        objects.delete_tree(f"{outputs_folder(lake.root, run_id)}/{step}", lake.storage_options)
