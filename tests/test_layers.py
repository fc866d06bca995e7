"""Dependency rules from ARCHITECTURE.md, as tests.

- engine/ and finetune/ never import textual;
- importing medchat, its CLI, config and the reasoning splitter imports no heavy library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import medchat

ROOT = Path(medchat.__file__).parent
HEAVY = ("torch", "transformers", "textual", "trl", "peft", "unsloth", "datasets", "bitsandbytes")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_engine_and_finetune_never_import_textual():
    for pkg in ("engine", "finetune"):
        for path in (ROOT / pkg).rglob("*.py"):
            bad = {m for m in imported_modules(path) if m.split(".")[0] == "textual" or m.startswith("medchat.ui")}
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_light_modules_import_nothing_heavy():
    mods = ["medchat", "medchat.cli", "medchat.config", "medchat.chatformat.think", "medchat.engine.session",
            "medchat.engine.events", "medchat.store.adapters", "medchat.models.catalog", "medchat.paths",
            "medchat.cli.main", "medchat.chatformat.prompt", "medchat.chatformat.messages"]
    code = "import sys\n" + "".join(f"import {m}\n" for m in mods) + f"print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
