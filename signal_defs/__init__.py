"""Sequence definitions as code.

Add a definition by declaring it in a module here and listing it in :data:`REGISTRY`. Every runtime
reads the compiled JSON (``seqctl defs compile``), never these objects directly.
"""

from __future__ import annotations

from signal_defs.demo import DEFINITIONS as _DEMO
from signal_defs.model import (  # noqa: F401  (the public definition language)
    ContextEnrichment,
    CounterEnrichment,
    EventType,
    Lifecycle,
    LookupEnrichment,
    Ordering,
    Registry,
    SequenceFeature,
    Source,
    Stage,
    col,
    list_of,
)

REGISTRY = Registry().add(*_DEMO)
