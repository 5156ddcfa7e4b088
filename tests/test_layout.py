"""The layout's rules, checked by reading every module's imports (``ast``, nothing is imported).

Imports point one way: definitions <- core <- storage <- kafka <- serving / analysis <- orchestration
<- the code location <- cli. No circles. ``core`` and ``storage`` import no Dagster, ``core`` no
Kafka, HTTP or Delta client either; runtime code never imports ``devtools``; settings are read in
``seq_assets.settings`` only, and imported only at the edges. The README's Layout section says the
same in words.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("seq_assets", "signal_defs", "sensors")

# Rank of each part: a module may import parts of a lower rank, and its own package.
RANKS = {
    "signal_defs": 0,
    "seq_assets": 0,  # the package's __init__
    "seq_assets.core": 1,
    "seq_assets.executors": 1.5,  # the public plugin path, over core
    "seq_assets.storage": 2,
    "seq_assets.kafka": 3,
    "seq_assets.settings": 3.5,
    "seq_assets.training": 3.7,  # public reads for training code
    "seq_assets.sql": 3.7,  # public SQL reads
    "seq_assets.serving": 4,
    "seq_assets.analysis": 4,
    "seq_assets.orchestration": 5,
    "seq_assets.launcher": 5.5,  # the public launcher path, over orchestration
    "sensors": 5.5,
    "seq_assets.definitions": 6,
    "seq_assets.devtools": 6.5,
    "seq_assets.cli": 7,
}
DAGSTER_ALLOWED = ("seq_assets.orchestration", "seq_assets.definitions")
FORBIDDEN_THIRD_PARTY = {
    "seq_assets.core": ("dagster", "dagster_duckdb", "kafka", "starlette", "uvicorn", "deltalake", "duckdb"),
    "seq_assets.storage": ("dagster", "dagster_duckdb", "kafka", "starlette", "uvicorn"),
    "seq_assets.kafka": ("dagster", "starlette", "uvicorn"),
    "seq_assets.serving": ("dagster",),
    "seq_assets.analysis": ("dagster",),
    "signal_defs": ("dagster", "polars", "kafka", "deltalake"),
}
SETTINGS_USERS = ("seq_assets.cli", "seq_assets.orchestration", "seq_assets.definitions", "seq_assets.training",
                  "seq_assets.sql", "seq_assets.devtools")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_pkg: bool) -> list[tuple[str, int]]:
    """Every module imported at run time (top level and inside functions), with its line; imports
    under ``if TYPE_CHECKING:`` are annotations only and do not count."""
    out: list[tuple[str, int]] = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit_node(sub)
                continue
            visit_node(child)

    def visit_node(node):
        if isinstance(node, ast.Import):
            out.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, node.lineno))
            for a in node.names:  # "from seq_assets import settings" imports the submodule
                out.append((f"{target}.{a.name}", node.lineno))
        visit(node)

    visit(tree)
    return out


def _part(name: str) -> str | None:
    """The ranked part a module belongs to (the longest prefix in RANKS)."""
    best = None
    for p in RANKS:
        if (name == p or name.startswith(p + ".")) and (best is None or len(p) > len(best)):
            best = p
    return best


def _modules() -> dict[str, tuple[Path, ast.AST, bool]]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            mods[_module_name(path)] = (path, ast.parse(path.read_text(), str(path)), path.name == "__init__.py")
    return mods


MODULES = _modules()


def _graph() -> dict[str, list[tuple[str, int]]]:
    """``{module: [(imported project module, line)]}`` for the project's own modules."""
    graph = {}
    for name, (_, tree, is_pkg) in MODULES.items():
        deps = []
        for target, line in _imports(tree, name, is_pkg):
            # "from a.b import c" names a.b.c when c is a module, else a.b itself.
            if target in MODULES:
                deps.append((target, line))
        graph[name] = deps
    return graph


GRAPH = _graph()


def test_every_module_belongs_to_a_ranked_part():
    assert [m for m in MODULES if _part(m) is None] == []


def test_imports_point_one_way():
    bad = []
    for mod, deps in GRAPH.items():
        here = _part(mod)
        for dep, line in deps:
            there = _part(dep)
            if there == here or dep == "seq_assets":
                continue
            if RANKS[there] >= RANKS[here]:
                bad.append(f"{MODULES[mod][0].relative_to(ROOT)}:{line} ({here}) imports {dep} ({there})")
    assert bad == [], "imports against the layering:\n" + "\n".join(bad)


def test_no_import_circles():
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for dep, _ in GRAPH[m]:
            if dep == m:
                continue
            if state.get(dep) == 1:
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                walk(dep)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            walk(m)
    assert cycles == [], "import circles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("part", sorted(FORBIDDEN_THIRD_PARTY))
def test_parts_import_only_what_they_may(part):
    bad = []
    for name, (path, tree, is_pkg) in MODULES.items():
        if _part(name) != part:
            continue
        for target, line in _imports(tree, name, is_pkg):
            top = target.split(".")[0]
            if top in FORBIDDEN_THIRD_PARTY[part]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert bad == [], f"{part} must not import these:\n" + "\n".join(bad)


def test_only_orchestration_and_the_code_location_import_dagster():
    bad = []
    for name, (path, tree, is_pkg) in MODULES.items():
        if name.startswith(DAGSTER_ALLOWED):
            continue
        for target, line in _imports(tree, name, is_pkg):
            if target.split(".")[0] in ("dagster", "dagster_duckdb", "dagster_webserver"):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert bad == [], "\n".join(bad)


def test_runtime_code_never_imports_devtools():
    bad = [f"{mod} imports {dep}" for mod, deps in GRAPH.items() for dep, _ in deps
           if dep.startswith("seq_assets.devtools") and not mod.startswith(("seq_assets.devtools", "seq_assets.cli"))]
    assert bad == [], "\n".join(bad)


def test_settings_are_read_in_one_module_and_imported_at_the_edges():
    env_reads = []
    for name, (path, tree, _) in MODULES.items():
        if name == "seq_assets.settings":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                    isinstance(node.value, ast.Name) and node.value.id == "os":
                seg = ast.get_source_segment(path.read_text(), node)
                env_reads.append(f"{path.relative_to(ROOT)}:{node.lineno} {seg}")
    # devtools start child processes with a copy of the environment; that reads no setting.
    env_reads = [e for e in env_reads if not e.startswith("seq_assets/devtools/")]
    assert env_reads == [], "environment read outside seq_assets/settings.py:\n" + "\n".join(env_reads)
    users = sorted({mod for mod, deps in GRAPH.items() for dep, _ in deps if dep == "seq_assets.settings"})
    assert [u for u in users if not u.startswith(SETTINGS_USERS)] == []


def test_the_checker_sees_a_circle_and_a_wrong_way_import(tmp_path):
    """The rules above are only as good as the import reader: it must see what they forbid."""
    tree = ast.parse("from seq_assets.orchestration import assets\n"
                     "def f():\n    from seq_assets.serving import app\n"
                     "if TYPE_CHECKING:\n    from seq_assets.cli import main\n")
    got = [t for t, _ in _imports(tree, "seq_assets.core.kernel", False)]
    assert "seq_assets.orchestration.assets" in got and "seq_assets.serving.app" in got
    assert not any(t.startswith("seq_assets.cli") for t in got)
    rel = ast.parse("from .days import DAY_MS\nfrom . import kernel\n")
    got = [t for t, _ in _imports(rel, "seq_assets.core.engine", False)]
    assert "seq_assets.core.days" in got and "seq_assets.core.kernel" in got
