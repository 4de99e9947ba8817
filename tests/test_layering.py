"""The layers, read from the source by AST (every import statement, also inside functions;
``if TYPE_CHECKING:`` blocks are left out since they never run):

- ``vilmo`` is a library: it never imports the gateway or a web framework;
- serving code (every module ``proxy`` imports, transitively) never imports training, dataset
  readers, evaluation or the CLI.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vilmo", "proxy", "localllm")
WEB = ("proxy", "fastapi", "starlette", "uvicorn")
NOT_SERVING = ("vilmo.train", "vilmo.data", "vilmo.evaluate", "vilmo.classifier_eval",
               "vilmo.cli")


def module_files() -> dict[str, Path]:
    """Every module of the project's packages by dotted name."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = module_files()


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(name: str) -> set[str]:
    """The dotted names a module imports (``from a import b`` gives ``a.b`` when that is one
    of our modules, else ``a``)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return found


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_scan_sees_the_code() -> None:
    assert "proxy.pipeline" in MODULES and "vilmo.policy" in MODULES
    assert "vilmo.verdict" in imports_of("proxy.pipeline")
    assert "vilmo.train.classifier" in MODULES


def test_vilmo_never_imports_the_gateway_or_a_web_framework() -> None:
    bad = {(name, imported) for name in MODULES if within(name, ("vilmo",))
           for imported in imports_of(name) if within(imported, WEB)}
    assert bad == set()


def serving_chains() -> dict[str, list[str]]:
    """Every module reachable from ``proxy``, with the import chain that reaches it."""
    chains = {name: [name] for name in MODULES if within(name, ("proxy",))}
    todo = list(chains)
    while todo:
        name = todo.pop()
        for imported in sorted(imports_of(name)):
            if imported in MODULES and imported not in chains:
                chains[imported] = [*chains[name], imported]
                todo.append(imported)
    return chains


def test_serving_never_imports_training_datasets_evaluation_or_the_cli() -> None:
    bad = {name: " -> ".join(chain) for name, chain in serving_chains().items()
           if within(name, NOT_SERVING)}
    assert bad == {}


def test_import_vilmo_loads_no_proxy_or_web_framework() -> None:
    code = ("import sys, vilmo, vilmo.cli; "
            "bad = [m for m in ('proxy', 'fastapi', 'starlette', 'litellm', 'torch') "
            "if m in sys.modules]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == ""
