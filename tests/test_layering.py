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
NOT_SERVING = ("vilmo.train", "vilmo.datasets", "vilmo.evaluation", "vilmo.cli")


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
    assert "vilmo.judge.value_model" in MODULES and "vilmo.instruct.generator" in MODULES
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


def test_every_vilmo_import_names_a_module_that_exists() -> None:
    """A module moved into a subpackage leaves no import of its old path behind (also in
    function-level imports, which only fail when they run)."""
    bad = {(name, imported) for name in MODULES for imported in imports_of(name)
           if within(imported, ("vilmo",)) and imported not in MODULES
           and imported.rpartition(".")[0] not in MODULES}
    assert bad == set()


def test_the_library_has_no_flat_modules_beyond_its_core() -> None:
    """``vilmo/`` keeps its subsystems in subpackages; the top holds the shared core only."""
    top = {path.stem for path in (ROOT / "vilmo").glob("*.py")}
    assert top == {"__init__", "errors", "numeric", "policy", "policy_store", "types",
                   "values", "verdict", "yamlfile"}
    assert not (ROOT / "vilmo" / "data.py").exists()  # vilmo/data/ is package data


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text(), str(MODULES[name]))


def test_one_sigmoid_in_the_library() -> None:
    defined = {(name, node.name) for name in MODULES if within(name, ("vilmo",))
               for node in ast.walk(_tree(name))
               if isinstance(node, ast.FunctionDef) and "sigmoid" in node.name}
    inline = {name for name in MODULES if within(name, ("vilmo",)) and name != "vilmo.numeric"
              and "np.exp(-" in MODULES[name].read_text()}
    assert defined == {("vilmo.numeric", "sigmoid")} and inline == set()


def test_every_library_exception_derives_from_vilmo_error() -> None:
    """Each exception class defined in ``vilmo`` reaches ``VilmoError`` through its bases."""
    import builtins

    bases: dict[str, list[str]] = {}
    for name in MODULES:
        if within(name, ("vilmo",)):
            for node in ast.walk(_tree(name)):
                if isinstance(node, ast.ClassDef):
                    bases[node.name] = [ast.unparse(b).rpartition(".")[2] for b in node.bases]

    def is_exception(cls: str) -> bool:
        builtin = getattr(builtins, cls, None)
        if isinstance(builtin, type):
            return issubclass(builtin, BaseException)
        return any(is_exception(b) for b in bases.get(cls, []))

    def reaches_base(cls: str) -> bool:
        return cls == "VilmoError" or any(reaches_base(b) for b in bases.get(cls, []))

    exceptions = {cls for cls in bases if is_exception(cls)}
    assert {"PolicyError", "UnknownPolicy", "FileError", "DataMissing", "ClassifierError",
            "TargetError"} <= exceptions
    assert {cls for cls in exceptions if not reaches_base(cls)} == set()
