"""The library below the Airflow edge imports nothing from Airflow: every module imports with Airflow blocked."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import governed_marketing
import pytest

_IMPORT_ALL_WITHOUT_AIRFLOW = """
import importlib, pkgutil, sys
sys.modules["airflow"] = None  # any `import airflow...` now raises ImportError
import governed_marketing
failed = []
for module in pkgutil.walk_packages(governed_marketing.__path__, "governed_marketing."):
    if module.name.startswith("governed_marketing.orchestration"):
        continue  # the edge: the one package that imports Airflow
    try:
        importlib.import_module(module.name)
    except ImportError as exc:
        failed.append(f"{module.name}: {exc}")
print("\\n".join(failed))
print(sum(1 for _ in pkgutil.walk_packages(governed_marketing.__path__, "governed_marketing.")), "modules")
"""


def test_every_library_module_imports_without_airflow() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL_WITHOUT_AIRFLOW], capture_output=True, text=True, check=True, timeout=300
    )
    *failed, count = done.stdout.strip().splitlines()
    assert failed == [], "\n".join(failed)
    assert int(count.split()[0]) > 50  # the walk found the library, not an empty path


def test_the_blocker_catches_an_airflow_import() -> None:
    """The same check on the edge fails: it would notice a library module that imported Airflow."""
    probe = 'import sys; sys.modules["airflow"] = None\nimport governed_marketing.orchestration.assets'
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "airflow" in done.stderr
    assert governed_marketing.__path__  # the package under test is importable in this interpreter


def test_no_library_module_imports_the_edge() -> None:
    """The edge calls the library, never the reverse (the CLI, an entry point like the DAG files, may)."""
    package = Path(governed_marketing.__file__).parent
    upward = []
    for source in package.rglob("*.py"):
        relative = source.relative_to(package)
        if relative.parts[0] == "orchestration" or relative.name == "cli.py" and len(relative.parts) == 1:
            continue
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [module or ""]
            upward += [f"{relative}: {n}" for n in names if n.startswith("governed_marketing.orchestration")]
    assert upward == []


def _imports(package: Path) -> dict[str, set[str]]:
    """Each library module's imports of other library modules, in functions too (not under TYPE_CHECKING).

    Deferred imports count: two modules that need each other are one module in two files, whether
    the circle closes at load time or on the first call.
    """
    modules = {
        ".".join(("governed_marketing", *source.relative_to(package).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): source
        for source in package.rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, source in modules.items():
        is_package = source.name == "__init__.py"
        base = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()
        tree = ast.parse(source.read_text(encoding="utf-8"))
        type_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:
                    parent = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                    target = f"{parent}.{target}".rstrip(".")
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    edges.add(submodule if submodule in modules else target)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def test_no_import_cycle_among_library_modules() -> None:
    """A module never needs a module that needs it back: each can be read and changed on its own."""
    graph = _imports(Path(governed_marketing.__file__).parent)
    assert "governed_marketing.warehouse.schema" in graph["governed_marketing.warehouse"]  # edges are found
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    """The same reading on two modules that import each other (one in a function, relatively)."""
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "ledger.py").write_text("from governed_marketing.audit import record\n")
    (tmp_path / "audit.py").write_text("def record():\n    from . import ledger\n")
    graph = _imports(tmp_path)
    assert graph["governed_marketing.audit"] == {"governed_marketing.ledger"}
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(graph).static_order())
