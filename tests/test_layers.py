"""The ftkit package's layers point down only: every import (module level or inside a function) of one ftkit package
or top-level module goes to a lower layer, so no two packages import each other and a change low down is read
without the pipeline above it. Release tooling (tools/ftkit_release) may use ftkit; ftkit never uses it."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "tools" / "ftkit"

# Bottom to top. A unit is a subpackage of ftkit (engines, recipes, ...) or one of its top-level modules.
LAYERS: list[set[str]] = [
    {"errors", "__init__"},
    {"yaml_load", "envinfo", "library_output", "stage_progress", "cluster"},
    {"schema_errors", "dotted_keys", "run_record", "image_refs", "models", "data"},
    {"yaml_edit", "pii", "evaluate"},
    {"engines"},
    {"recipes"},  # the data model of a recipe: schema, load, resolve
    {"estimate", "export"},
    {"pipeline", "fork", "recipe_table", "plan"},  # what runs, forks and tabulates recipes
    {"cloud", "doctor"},
    {"cli"},
    {"__main__"},
]


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(path: Path) -> bool:
    return path.is_dir() or path.with_suffix(".py").is_file()


def _imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """Absolute names of the ftkit modules a file imports, anywhere in it (relative imports resolved)."""
    module = _module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            if name == "ftkit":  # from ftkit import images: a module; from ftkit import __version__: not one
                found |= {f"ftkit.{a.name}" for a in node.names if _is_module(root / a.name)}
    return {n for n in found if n == "ftkit" or n.startswith("ftkit.") or n.startswith("ftkit_release")}


def unit_edges(root: Path = PACKAGE) -> dict[str, dict[str, list[str]]]:
    """{unit: {imported unit: [files that import it]}} over every .py file under root."""
    edges: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.rglob("*.py")):
        src = _unit(_module_name(path, root))
        for name in _imports(path, root):
            dst = "ftkit_release" if name.startswith("ftkit_release") else _unit(name)
            if dst != src and name != "ftkit":
                edges[src][dst].append(str(path.relative_to(root.parent)))
    return edges


def _layer_of() -> dict[str, int]:
    return {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def test_every_ftkit_package_and_top_level_module_has_a_layer():
    units = {_unit(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    missing = sorted(units - set(_layer_of()))
    assert not missing, f"place these in LAYERS (tests/test_layers.py), below everything that imports them: {missing}"


def test_imports_between_ftkit_packages_only_point_down():
    layer = _layer_of()
    upward = [
        f"{src} (layer {layer.get(src)}) imports {dst} (layer {layer.get(dst)}) in {', '.join(files)}"
        for src, targets in unit_edges().items()
        for dst, files in targets.items()
        if dst == "ftkit_release" or layer.get(dst, 99) >= layer.get(src, -1)
    ]
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)


def test_no_import_cycle_between_ftkit_packages():
    edges = {src: set(targets) for src, targets in unit_edges().items()}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif len(path) < len(edges) + 1:
                visit(nxt, [*path, nxt])

    for start in sorted(edges):
        visit(start, [start])
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_the_import_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "ftkit"
    for folder in ("engines", "pipeline"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "engines" / "x.py").write_text("def f():\n    from ftkit.pipeline.run import run_recipe\n")
    (pkg / "pipeline" / "run.py").write_text("from ..engines import x\n")
    edges = unit_edges(pkg)
    assert edges["engines"] == {"pipeline": ["ftkit/engines/x.py"]}  # inside a function: still an arrow
    assert edges["pipeline"] == {"engines": ["ftkit/pipeline/run.py"]}  # the relative import, resolved
