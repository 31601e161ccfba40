"""The library below the Airflow edge imports nothing from Airflow: every module imports with Airflow blocked."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import governed_marketing

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
