"""Stream sensors: one per source (filled in by the streaming path)."""

from __future__ import annotations

import dagster as dg

from seq_assets.compiled import Compiled


def sensor_defs(compiled: Compiled) -> dg.Definitions:
    return dg.Definitions()
