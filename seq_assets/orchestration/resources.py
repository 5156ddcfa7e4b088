"""Resources configured from the environment, with defaults that work on a fresh checkout."""

from __future__ import annotations

import dagster as dg

from seq_assets import settings
from seq_assets.core.compiled import Compiled
from seq_assets.core.engine import Engine
from seq_assets.storage.lake import Lake
from seq_assets.storage.landing import Landing


class LakeResource(dg.ConfigurableResource):
    """The Delta lake, the landing area and the engine over them.

    Empty settings fall back to ``SEQ_LAKE_URI``, ``SEQ_STORAGE_OPTIONS`` and ``SEQ_LANDING_DIR``,
    read in each process that runs a step (a worker on another machine reads its own). Set in the
    run config (``resources: {lake: {config: {uri: s3://..., storage_options: {...}, landing_uri:
    s3://...}}}``) they travel with the run to every worker and step process, which then need no
    settings of their own; ``storage_options`` reach every table, reader and the landing area
    (``docs/object-storage.md``).
    """

    uri: str = ""
    storage_options: dict[str, str] = {}  # noqa: RUF012 - pydantic copies field defaults
    landing_uri: str = ""

    def lake(self) -> Lake:
        return Lake(self.uri or settings.lake_uri(), dict(self.storage_options) or settings.storage_options())

    def landing(self) -> Landing:
        return Landing(self.landing_uri or settings.landing_dir(), dict(self.storage_options) or settings.storage_options())

    def compiled(self) -> Compiled:
        return settings.load_compiled()

    def engine(self) -> Engine:
        return Engine(self.compiled(), self.lake(), self.landing())
