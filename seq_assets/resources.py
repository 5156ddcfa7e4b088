"""Resources configured from the environment, with defaults that work on a fresh checkout."""

from __future__ import annotations

import dagster as dg

from seq_assets import config
from seq_assets.compiled import Compiled, load_compiled
from seq_assets.engine import Engine
from seq_assets.lake import Lake


class LakeResource(dg.ConfigurableResource):
    """The Delta lake and the engine over it. Empty settings fall back to SEQ_LAKE_URI and friends."""

    uri: str = ""

    def lake(self) -> Lake:
        return Lake(self.uri or config.lake_uri())

    def compiled(self) -> Compiled:
        return load_compiled()

    def engine(self) -> Engine:
        return Engine(self.compiled(), self.lake())
