"""Find the definitions a project runs on: a module of the user's whose ``REGISTRY`` holds them.

A team keeps its definitions in its own repository, in a module such as ``seq_defs.py`` that builds
``REGISTRY = Registry().add(...)``, with its version lock ``versions.lock.json`` beside it. The demo
definitions shipped here are used only when no such module is named.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from signal_defs.model import Registry

LOCK_FILE = "versions.lock.json"
DEMO_LOCK = Path(__file__).resolve().parent / LOCK_FILE


class DefinitionsModuleError(ValueError):
    """A definitions module that cannot be used: it does not import, or has no Registry."""


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


def import_definitions(module: str, search_dir: str | Path | None = None) -> ModuleType:
    """Import ``module`` (``search_dir``, e.g. the current directory, searched first) and check that
    its ``REGISTRY`` is a :class:`Registry`; raise :class:`DefinitionsModuleError` otherwise."""
    if search_dir is not None:
        where = str(Path(search_dir).resolve())
        if where not in sys.path:
            sys.path.insert(0, where)
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # any error while running the module's code
        raise DefinitionsModuleError(f"definitions module {module!r} failed to import: {_one_line(e)}") from None
    registry = getattr(mod, "REGISTRY", None)
    if registry is None:
        raise DefinitionsModuleError(
            f"definitions module {module!r} ({getattr(mod, '__file__', '?')}) has no REGISTRY; "
            "declare REGISTRY = Registry().add(...) with its definitions")
    if not isinstance(registry, Registry):
        raise DefinitionsModuleError(
            f"definitions module {module!r}: REGISTRY is a {type(registry).__name__}, not a signal_defs.Registry")
    return mod


def lock_path(mod: ModuleType) -> Path:
    """The version lock of a definitions module: ``versions.lock.json`` beside its file."""
    file = getattr(mod, "__file__", None)
    if not file:
        raise DefinitionsModuleError(f"definitions module {mod.__name__!r} has no file to keep its version lock beside")
    return Path(file).resolve().with_name(LOCK_FILE)
