"""The house's shape: no import cycles among our modules, and ``engine/`` holds only what runs in
the worker's process (torch, or what the worker itself uses)."""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("leuktui", "runner", "engine", "db")


def import_cycles(graph) -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), counting imports inside functions too."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(module: str) -> None:
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*PACKAGES, include_external_packages=False)


def test_no_module_of_ours_imports_itself_through_others(graph):
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_planted_cycle(graph):
    graph.add_import(importer="db.vocabulary", imported="leuktui.app")
    try:
        assert any({"db.vocabulary", "leuktui.app"} <= set(group) for group in import_cycles(graph))
    finally:
        graph.remove_import(importer="db.vocabulary", imported="leuktui.app")


def imports_torch(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        if any(name.split(".")[0] in ("torch", "torchvision") for name in names):
            return True
    return False


def test_every_engine_module_touches_torch_or_serves_the_worker(graph):
    """An engine module uses torch (itself, or through the engine module it builds on), or the
    worker's process imports it; the rest belong in ``runner``, ``db`` or the app."""
    worker_uses = graph.find_upstream_modules("engine.worker") | graph.find_upstream_modules("engine.train")
    torch_users = {f"engine.{path.stem}" for path in (ROOT / "engine").glob("*.py") if imports_torch(path)}
    light = [path.stem for path in sorted((ROOT / "engine").glob("*.py"))
             if path.stem != "__init__" and f"engine.{path.stem}" not in torch_users
             and not graph.find_modules_directly_imported_by(f"engine.{path.stem}") & torch_users]
    # The command line's own tools on data (the lab's CSV layout, a synthetic set, a key's score)
    # are the dataset's code: they sit with the loader they share.
    dataset_tools = {"synth", "scoring"}
    strays = [name for name in light if f"engine.{name}" not in worker_uses and name not in dataset_tools]
    assert strays == []
