"""Environment helpers shared by the test helpers: the platform reads its settings from env vars."""

from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def scoped_env(**values: str | None):
    """Set (or, with None, unset) environment variables inside the block; restore them after."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = str(v)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
