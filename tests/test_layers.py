"""The package's import graph: data flows one way (data -> model -> tracker -> evaluation -> engine -> entry points)."""

from __future__ import annotations

import ast
from pathlib import Path

import crossvis

PACKAGE = Path(crossvis.__file__).resolve().parent
# Layer of each module (by longest matching prefix); a module imports from its own layer or lower ones.
LAYERS = {
    # infrastructure: errors, atomic writes, RLE, timers, configs, CLI helpers, the training-state files, the LR rule
    "crossvis": 0,
    "crossvis.errors": 0,
    "crossvis.files": 0,
    "crossvis.rle": 0,
    "crossvis.timing": 0,
    "crossvis.conf": 0,
    "crossvis.cli": 0,
    "crossvis.checkpoint": 0,
    "crossvis.checkpoint.training_state": 0,
    "crossvis.checkpoint.released": 1,
    "crossvis.engine.schedule": 0,
    # the paper's pieces and their inputs / outputs
    "crossvis.data": 1,
    "crossvis.modeling": 1,
    "crossvis.tracking": 1,
    "crossvis.evaluation": 1,
    "crossvis.data.video_source": 1,
    "crossvis.visualize": 1,
    "crossvis.frame_outputs": 1,
    # the Lightning module, the online runner, training / evaluation orchestration
    "crossvis.engine": 2,
    # a module from a checkpoint (needs the Lightning module)
    "crossvis.checkpoint.loading": 3,
    # entry points (the cli package's own __init__ holds the user-error helpers above)
    **{
        f"crossvis.cli.{name}": 4
        for name in ("train", "evaluate", "demo", "quickstart", "benchmark", "export", "analyze", "tables", "convert")
    },
    "crossvis.baselines": 4,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The crossvis modules that ``path`` imports at run time (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in modules}
    return found


def _graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {module: _imports(path, set(paths)) - {module} for module, path in paths.items()}


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = [
        f"{module} (layer {_layer(module)}) imports {dep} (layer {_layer(dep)})"
        for module, deps in _graph().items()
        for dep in deps
        if _layer(dep) > _layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycles() -> None:
    graph, done, stack = _graph(), set(), []

    def visit(module: str) -> None:
        if module in stack:
            raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(module) :], module]))
        if module in done:
            return
        stack.append(module)
        for dep in sorted(graph[module]):
            visit(dep)
        stack.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
