"""The tokenizer package: its public names, and modules that import one another one way only."""

from __future__ import annotations

import ast
from pathlib import Path

import inference_pio.tokenizer as package

PACKAGE_DIR = Path(package.__file__).parent


def _imports_within_package(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports (``from .x import`` / ``from . import x``), anywhere in it,
    function bodies included: a lazy import is still a dependency."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("inference_pio.tokenizer"):
            rest = node.module.removeprefix("inference_pio.tokenizer").lstrip(".")
            found.add(rest.split(".")[0] or "__init__")
    return found


def test_the_package_modules_import_without_a_cycle():
    graph = {p.stem: _imports_within_package(p) for p in PACKAGE_DIR.glob("*.py")}
    assert {"tokenizer", "gguf", "backends"} <= set(graph)

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    cycles = [name for name in graph if reaches(name, name, {name})]
    assert not cycles, f"import cycle through {cycles}: {graph}"
    # The GGUF reader builds a backend and hands back the constructor's arguments: it knows no Tokenizer.
    assert "tokenizer" not in graph["gguf"] and "__init__" not in graph["gguf"]


def test_public_names_stay_where_they_were():
    from inference_pio.tokenizer import Tokenizer, compile_chat_template, tokenizer_from_gguf
    from inference_pio.tokenizer.gguf import PRE_TOKENIZER_SPLITS, build_tokenizer

    assert Tokenizer.__module__ == "inference_pio.tokenizer.tokenizer"
    assert callable(compile_chat_template) and callable(build_tokenizer) and "llama3" in PRE_TOKENIZER_SPLITS
    assert tokenizer_from_gguf == Tokenizer.from_gguf

