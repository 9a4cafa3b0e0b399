"""The packages import one another one way: spec + model -> IR -> passes -> planner ->
backend -> artifact, the CLI on top (docs/design.md, "Data flow").

Every import in edgec/, passes/, targets/ and edgec_runtime/ is read with `ast`, those
inside functions included (a lazy import is still a dependency); imports under
``if TYPE_CHECKING:`` are not, since they never run. Each module belongs to a unit (a
package of edgec, or one of its top-level modules); an import between two units must
be one of ALLOWED's edges, or one of KNOWN_VIOLATIONS, each of which names what is
wrong and stays listed only while it exists. The units' graph must have no cycle. And
no module takes another module's private (``_name``) names: what is shared is public.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
# Source folder -> the package it is installed as (passes/ and targets/ are mapped into
# edgec by edgec/__init__.py).
ROOTS = {"edgec": "edgec", "passes": "edgec.passes", "targets": "edgec.targets",
         "edgec_runtime": "edgec_runtime"}

# The IR and its ONNX form are one layer: edgec.frontend is the IR's serialization (as
# onnx-ir's serde is part of onnx-ir), and the IR's shape inference and cost model need
# it. Within the layer, only edgec.ir.shape_inference uses the codec (checked below).
GROUPED = {"edgec.frontend": "edgec.ir"}

_BASE = {"edgec._version", "edgec.diagnostics", "edgec.safeio", "edgec.progress",
         "edgec.plugins", "edgec.machine"}
_BELOW_PLANNER = _BASE | {
    "edgec.ir", "edgec.rewrite", "edgec.passmgr", "edgec.quantization", "edgec.backends",
    "edgec.data", "edgec.metrics", "edgec.dsl", "edgec.publish", "edgec.artifact_format",
    "edgec.artifact", "edgec.report", "edgec.targets", "edgec_runtime"}

# unit -> the units it may import. Read bottom up.
ALLOWED: dict[str, set[str]] = {
    "edgec._version": set(),
    "edgec.diagnostics": set(),
    "edgec.safeio": set(),
    "edgec.progress": set(),
    # Entry-point loading that the plugin registries share.
    "edgec.plugins": set(),
    # Facts about this machine (CPU flags, what its onnxruntime's int8 does).
    "edgec.machine": set(),
    "edgec.targets": set(),
    # The device-side runtime is its own distribution: nothing of the compiler.
    "edgec_runtime": set(),
    # The artifact folder's format (names, manifest reader), verified as the device
    # runtime verifies it.
    "edgec.artifact_format": {"edgec_runtime"},
    # Atomic files and folders: below everything that writes. The cache and the swap
    # check what a folder holds by its manifest.
    "edgec.publish": {"edgec.diagnostics", "edgec.safeio", "edgec.artifact_format"},
    # The IR and its ONNX codec (save_model writes atomically).
    "edgec.ir": {"edgec.diagnostics", "edgec.safeio", "edgec.publish"},
    "edgec.metrics": {"edgec.diagnostics"},
    "edgec.data": {"edgec.diagnostics", "edgec.safeio", "edgec_runtime"},
    "edgec.rewrite": {"edgec.ir", "edgec.diagnostics"},
    # The pass manager runs passes over the IR; it writes dumps and reproducers.
    "edgec.passmgr": {"edgec.ir", "edgec.diagnostics", "edgec.publish", "edgec.safeio",
                      "edgec.progress", "edgec.plugins"},
    # Quantization is a library of the passes (calibration reads the pass context).
    "edgec.quantization": {"edgec.ir", "edgec.rewrite", "edgec.passmgr", "edgec.data",
                           "edgec.metrics", "edgec.diagnostics", "edgec.progress",
                           "edgec.machine"},
    "edgec.passes": {"edgec.ir", "edgec.rewrite", "edgec.passmgr", "edgec.quantization",
                     "edgec.metrics", "edgec.diagnostics", "edgec.progress"},
    # Backends compile the IR's ONNX form and run artifacts through edgec_runtime.
    "edgec.backends": {"edgec.ir", "edgec.diagnostics", "edgec.safeio", "edgec.publish",
                       "edgec.data", "edgec.progress", "edgec.plugins", "edgec_runtime"},
    # The spec language checks pipelines and backend names against the registries.
    "edgec.dsl": {"edgec.diagnostics", "edgec.safeio", "edgec.passmgr", "edgec.backends",
                  "edgec.targets", "edgec.plugins", "edgec.machine"},
    # An artifact is loaded and run through its backend.
    "edgec.artifact": {"edgec.diagnostics", "edgec.safeio", "edgec.publish",
                       "edgec.artifact_format", "edgec.backends", "edgec.data",
                       "edgec.metrics", "edgec._version", "edgec_runtime"},
    "edgec.report": {"edgec.metrics", "edgec.diagnostics", "edgec.artifact"},
    "edgec.planner": _BELOW_PLANNER - {"edgec.report"},
    # The manifest records the plan beside the artifact.
    "edgec.manifest": _BELOW_PLANNER | {"edgec.planner"},
    "edgec.compiler": _BELOW_PLANNER | {"edgec.planner", "edgec.manifest"},
    "edgec.cli": _BELOW_PLANNER | {"edgec.planner", "edgec.manifest", "edgec.compiler"},
    "edgec.__main__": {"edgec.cli"},
    # The package's own API (edgec.compile, edgec.load, the exported types).
    "edgec": _BELOW_PLANNER | {"edgec.planner", "edgec.manifest", "edgec.compiler"},
    # Test support sits on top of everything.
    "edgec.testing": _BELOW_PLANNER | {"edgec", "edgec.planner", "edgec.manifest",
                                       "edgec.compiler", "edgec.cli", "edgec.passes"},
}

# Edges that exist and should not; each is someone's to remove, then to delete here.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    modules = {}
    for folder, package in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def _unit(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "edgec_runtime":
        return "edgec_runtime"
    unit = ".".join(parts[:2])
    return GROUPED.get(unit, unit)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool):
    """(imported module, line) for every import that can run, lazy ones included."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[:len(module.split(".")) - node.level + is_package]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                # `from edgec import artifact` imports the module edgec.artifact.
                yield f"{target}.{alias.name}", node.lineno
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours that importing ``name`` runs, or None for a third party's."""
    if name.split(".")[0] not in ("edgec", "edgec_runtime"):
        return None
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_edges() -> dict[tuple[str, str], list[str]]:
    """(unit, imported unit) -> where: 'module:line -> imported module'."""
    modules = _modules()
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for name, line in _imports(tree, module, path.name == "__init__.py"):
            target = _resolve(name, modules)
            if target is None:
                continue
            a, b = _unit(module), _unit(target)
            if a != b:
                edges[(a, b)].append(f"{module}:{line} -> {target}")
    return edges


EDGES = import_edges()


def test_every_unit_has_a_place_in_the_layers():
    units = {_unit(m) for m in _modules()}
    assert sorted(units - set(ALLOWED)) == [], "add the new package to ALLOWED"


def test_every_import_between_units_is_an_allowed_edge():
    wrong = [f"{a} -> {b}: {', '.join(sorted(set(where))[:3])}"
             for (a, b), where in sorted(EDGES.items())
             if b not in ALLOWED.get(a, set()) and (a, b) not in KNOWN_VIOLATIONS]
    assert wrong == [], "imports against the layers:\n" + "\n".join(wrong)


def test_known_violations_still_exist():
    gone = [f"{a} -> {b}" for a, b in KNOWN_VIOLATIONS if (a, b) not in EDGES]
    assert gone == [], f"fixed: delete from KNOWN_VIOLATIONS: {gone}"


def test_the_allowed_layers_are_one_way():
    graph = nx.DiGraph((a, b) for a, targets in ALLOWED.items() for b in targets)
    assert nx.is_directed_acyclic_graph(graph), nx.find_cycle(graph)


def test_no_package_cycle_outside_the_known_violations():
    graph = nx.DiGraph(edge for edge in EDGES if edge not in KNOWN_VIOLATIONS)
    cycles = [c for c in nx.strongly_connected_components(graph) if len(c) > 1]
    described = []
    for component in cycles:
        cycle = nx.find_cycle(graph.subgraph(component))
        described.append(" -> ".join(a for a, _ in cycle) + f" -> {cycle[0][0]}: " + "; ".join(
            EDGES[edge][0] for edge in cycle))
    assert described == [], "package cycles:\n" + "\n".join(described)


def test_of_the_ir_only_shape_inference_uses_the_onnx_codec():
    # The IR's data structures know nothing of ONNX's protos beyond their types.
    modules = _modules()
    users = set()
    for module, path in modules.items():
        if not module.startswith("edgec.ir."):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for name, _ in _imports(tree, module, path.name == "__init__.py"):
            target = _resolve(name, modules)
            if target is not None and target.startswith("edgec.frontend"):
                users.add(module)
    assert sorted(users) == ["edgec.ir.shape_inference"]


# Private names that one module still takes from another; each is someone's to make
# public (or move), then to delete here.
KNOWN_PRIVATE_IMPORTS: dict[tuple[str, str], str] = {}


def private_imports() -> dict[tuple[str, str], str]:
    """(module, imported private name) -> 'path:line' for every ``from m import _x``
    where ``m`` is another module of ours (a module's own submodules' are its own)."""
    modules = _modules()
    found = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for name, line in _imports(tree, module, path.name == "__init__.py"):
            base, _, last = name.rpartition(".")
            if not last.startswith("_") or last.startswith("__") or name in modules:
                continue
            target = _resolve(base, modules)
            if target is not None and target != module:
                found[(module, name)] = f"{path.relative_to(REPO)}:{line}"
    return found


def test_no_module_imports_another_modules_private_names():
    found = private_imports()
    wrong = [f"{where}: {module} imports {name}" for (module, name), where in sorted(found.items())
             if (module, name) not in KNOWN_PRIVATE_IMPORTS]
    assert wrong == [], "make these public or keep them in their module:\n" + "\n".join(wrong)
    gone = [key for key in KNOWN_PRIVATE_IMPORTS if key not in found]
    assert gone == [], f"fixed: delete from KNOWN_PRIVATE_IMPORTS: {gone}"


@pytest.mark.parametrize("source, expected", [
    ("import edgec.ir.core", {"edgec.ir.core"}),
    ("from edgec import artifact", {"edgec.artifact"}),
    ("def f():\n    from edgec.passes.cse import x", {"edgec.passes.cse"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edgec.dsl.spec import Spec",
     set()),
    ("from .core import Graph", {"edgec.ir.core"}),
])
def test_the_walk_sees_lazy_and_relative_imports_and_skips_type_checking(source, expected):
    modules = _modules()
    found = {_resolve(name, modules) for name, _ in _imports(ast.parse(source), "edgec.ir.cost", False)}
    assert found - {None} == expected
