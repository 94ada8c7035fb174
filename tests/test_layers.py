"""The package's layers, read from its import graph (AST, no import runs): no module imports a layer above its own,
and the library packages import gantune modules at the top of their files (the few exceptions listed).

Layers, lowest first (a module may import its own layer and those below):
errors, progress, process, checks < core < io, weights, runtime, sampling < align, metrics < methods < editing
< evaluation, bench, train < cli, api, demo, demo_model."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "gantune"
LAYER = {"errors": 0, "progress": 0, "process": 0, "checks": 0, "core": 1, "io": 2, "weights": 2, "runtime": 2, "sampling": 2, "accel": 2,
         "align": 3, "metrics": 3, "methods": 4, "editing": 5, "evaluation": 6, "bench": 6, "train": 6,
         "cli": 7, "api": 7, "demo": 7, "demo_model": 7, "__main__": 8, "__init__": 8}
# Packages whose function-local imports of gantune modules are allowed: the CLI's lazy command modules (the command
# line starts without torch), the bench (sections set up their process first), and the top-level entry points.
LAZY_OK = {"cli", "bench", "api", "demo", "demo_model", "__init__", "__main__"}
# The function-local imports of gantune modules allowed in the library packages, each with its reason.
ALLOWED_LOCAL = {
    # the weights registry is optional for alignment and LPIPS: a guarded import that falls back without it
    ("align/landmarks.py", "weights"),
    ("metrics/lpips.py", "weights"),
}


def _imports(path: Path):
    """(line, imported top-level gantune package or module, inside a function) for each gantune import in path."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    tree = ast.parse(path.read_text())
    inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                full = parts[: len(parts) - node.level] + (node.module.split(".") if node.module else [])
                names = [full[0]] if full else [a.name for a in node.names]
            elif (node.module or "").startswith("gantune."):
                names = [node.module.split(".")[1]]
            elif node.module == "gantune":
                names = [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("gantune.")]
            names += ["__init__" for a in node.names if a.name == "gantune"]  # the package's API (gantune.invert ...)
        for name in names:
            yield node.lineno, name, id(node) in inner


def _package(path: Path) -> str:
    first = path.relative_to(ROOT).parts[0]
    return first[:-3] if first.endswith(".py") else first


def test_every_module_has_a_layer():
    assert {_package(p) for p in ROOT.rglob("*.py")} <= set(LAYER)


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{p.relative_to(ROOT.parent)}:{line} ({_package(p)} imports {name})"
              for p in sorted(ROOT.rglob("*.py")) for line, name, _ in _imports(p)
              if name in LAYER and LAYER[name] > LAYER[_package(p)]]
    assert not upward, "\n".join(upward)


def test_no_function_local_imports_of_gantune_modules_in_the_library():
    local = [f"{p.relative_to(ROOT.parent)}:{line} ({name})" for p in sorted(ROOT.rglob("*.py"))
             if _package(p) not in LAZY_OK for line, name, inside in _imports(p)
             if inside and (str(p.relative_to(ROOT)), name) not in ALLOWED_LOCAL]
    assert not local, "function-local imports of gantune modules (move them to the top):\n" + "\n".join(local)


def test_no_test_module_imports_another():
    """Shared helpers live in tests/support.py and tests/conftest.py, not in test modules."""
    tests = Path(__file__).resolve().parent
    found = []
    for p in sorted(tests.glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{p.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0].startswith("test_")]
    assert not found, "\n".join(found)
