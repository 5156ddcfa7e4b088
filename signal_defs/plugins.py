"""Names the definition language accepts from the runtime's plugins, without importing the runtime.

The runtime registers each executor it has (``seq_assets.core.executors.register_executor``) here
by name, so validation can refuse an event type that names an executor nobody registered, while
``signal_defs`` stays free of any import of the runtime.
"""

from __future__ import annotations

# Executors the runtime has registered; the built-in "standard" one is always there.
EXECUTOR_NAMES: set[str] = {"standard"}
# Enrichment kinds the serving API can join at request time.
SERVING_ENRICHER_KINDS = frozenset({"lookup"})


def register_executor_name(name: str) -> None:
    EXECUTOR_NAMES.add(name)
