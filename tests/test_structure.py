"""The structure rules hold themselves: the layers contract (pyproject's [tool.importlinter]), no
import cycle between citrus's parts or its modules (imports inside functions count: they run,
just later), and no module over its size."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from conftest import REPO

MAX_LINES = 300
# Modules over MAX_LINES, each at most its size here: the list may only shrink (a split module
# leaves it; one that grows fails). train/trainer.py's own goal is 250 lines: the loop, not its
# parts.
OVERSIZED = {
    "citrus/evaluate/extract.py": 782,
    "citrus/pipeline.py": 401,
    "citrus/tracking.py": 369,
    "citrus/report.py": 358,
    "citrus/evaluate/evaluator.py": 355,
    "citrus/train/trainer.py": 329,
    "citrus/data/layouts.py": 301,
}


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("citrus", exclude_type_checking_imports=True)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def part(module: str) -> str:
    """citrus.train.losses -> citrus.train: the room a module lives in."""
    return ".".join(module.split(".")[:2])


def test_the_layers_contract_holds():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "lint-imports is not installed (the dev extra's import-linter)"
    done = subprocess.run([lint], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 kept, 0 broken" in done.stdout


def test_no_import_cycle_between_parts_or_modules(graph):
    modules = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert cycles(modules) == []
    parts: dict[str, set[str]] = {}
    for module, imported in modules.items():
        parts.setdefault(part(module), set()).update(part(i) for i in imported)
    for name, imported in parts.items():
        imported.discard(name)
    assert cycles(parts) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_over_its_size():
    sizes = {
        str(p.relative_to(REPO)): len(p.read_text().splitlines())
        for p in sorted((REPO / "citrus").rglob("*.py"))
    }
    over = {p: n for p, n in sizes.items() if n > OVERSIZED.get(p, MAX_LINES)}
    assert not over, f"over {MAX_LINES} lines (or over their OVERSIZED bound): {over}"
    split = [p for p in OVERSIZED if sizes.get(p, 0) <= MAX_LINES]
    assert not split, f"{split}: within {MAX_LINES} lines now, so out of OVERSIZED"
