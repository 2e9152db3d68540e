"""The package's shape, checked: imports point one way and nothing dodges a cycle at run time.

core <- runtime <- ros (mtl_perception, what a robot installs) and core/runtime <- training <- apps
(mtl_training). The contracts live in pyproject.toml ([tool.importlinter]); these tests make CI
fail on a wrong-way import, on a function-local import of the project's own modules (the usual
way a cycle is hidden), and on the node or the Predictor pulling in training code.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("mtl_perception", "mtl_training")
LAZY_MARK = "# lazy:"


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def _local_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, imported module, source line) of every import inside a function body."""
    text = path.read_text()
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Import):
                names = [a.name for a in inner.names]
            elif isinstance(inner, ast.ImportFrom):
                names = [("." * inner.level) + (inner.module or "")]
            else:
                continue
            for name in names:
                found.append((inner.lineno, name, lines[inner.lineno - 1]))
    return found


def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or \
        shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency (pip install -e .[test])"
    result = subprocess.run([exe, "--config", str(REPO / "pyproject.toml")], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_no_function_local_imports_of_the_project():
    offenders = [f"{p.relative_to(REPO)}:{line}: {name}"
                 for p in _sources() for line, name, _ in _local_imports(p)
                 if name.split(".")[0] in PACKAGES or name.startswith(".")]
    assert not offenders, "function-local imports of project modules:\n" + "\n".join(offenders)


def test_lazy_third_party_imports_say_why():
    unexplained = [f"{p.relative_to(REPO)}:{line}: {src.strip()}"
                   for p in _sources() for line, _, src in _local_imports(p)
                   if LAZY_MARK not in src]
    assert not unexplained, (f"a function-local import needs a '{LAZY_MARK} <reason>' comment "
                             "(or belongs at the top of the module):\n" + "\n".join(unexplained))


@pytest.mark.parametrize("module", ["mtl_perception.ros.node", "mtl_perception.runtime.predictor",
                                    "mtl_perception.ros.client"])
def test_robot_side_loads_no_training_module(module):
    code = (f"import sys, {module}\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'mtl_training')\n"
            "print('\\n'.join(bad)); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.returncode == 0, f"importing {module} loaded: {result.stdout}{result.stderr}"
