"""The layers of ARCHITECTURE.md, as tests: the import-linter contracts in pyproject.toml, the heavy
libraries that only the loading core may import at module level, and what `import medchat` costs."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import medchat

ROOT = Path(medchat.__file__).parent
HEAVY = ("torch", "transformers", "textual", "trl", "peft", "unsloth", "datasets", "bitsandbytes", "accelerate")
MODEL_LIBRARIES = {"torch", "transformers", "trl", "peft", "unsloth", "datasets", "bitsandbytes", "accelerate", "torchao"}
LOADING_CORE = "models"  # medchat/models: the one package that may import model libraries at module level


def module_level_imports(path: Path) -> set[str]:
    """Top-level packages imported when the module is imported (not inside functions or TYPE_CHECKING)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    return names


def test_the_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    run = subprocess.run([lint, "--no-cache"], capture_output=True, text=True, cwd=ROOT.parent)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def test_only_the_loading_core_imports_model_libraries_at_module_level():
    offenders = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == LOADING_CORE:
            continue
        heavy = module_level_imports(path) & MODEL_LIBRARIES
        if heavy:
            offenders[str(rel)] = sorted(heavy)
    assert not offenders, f"import these inside the functions that need them: {offenders}"


def test_light_modules_import_nothing_heavy():
    mods = ["medchat", "medchat.cli.main", "medchat.config", "medchat.chatformat.think", "medchat.chatformat.prompt",
            "medchat.chatformat.messages", "medchat.engine.session", "medchat.engine.events",
            "medchat.store.adapters", "medchat.models.catalog", "medchat.paths"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in mods) + f"print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
