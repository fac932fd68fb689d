"""The top-level kernels/ folder: installed as inference_pio.kernels, shadowing nothing, importing nothing above it."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KERNELS = REPO / "kernels"
# What a Triton kernel module may import: the libraries, its neighbours, and the shared exceptions.
ALLOWED = {"__future__", "os", "torch", "triton", "inference_pio.errors"}


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ""}  # only what an interpreter started in ``cwd`` would see
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_the_folder_is_not_a_regular_package():
    """With an __init__.py, ``import kernels`` from the repository root would shadow the PyPI package."""
    assert KERNELS.is_dir() and not (KERNELS / "__init__.py").exists()
    assert not (REPO / "python" / "inference_pio" / "kernels").exists(), "the kernels have one home"


@pytest.mark.parametrize("module", sorted(p.name for p in KERNELS.glob("*.py")))
def test_kernels_import_nothing_above_them(module):
    """Imports anywhere in the file (function bodies too): no ops, layers or dispatcher."""
    tree = ast.parse((KERNELS / module).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from ._common import ...: a neighbour in the folder
                assert (KERNELS / f"{(node.module or '').split('.')[0]}.py").exists(), ast.unparse(node)
                continue
            names = [node.module]
        else:
            continue
        for name in names:
            assert name in ALLOWED or name.split(".")[0] in {"torch", "triton"}, f"{module}: {ast.unparse(node)}"


def test_installed_as_inference_pio_kernels_from_anywhere(tmp_path):
    proc = _run("import inference_pio.kernels.rms_norm as m, inference_pio.kernels._common as c; "
                "print(m.__file__); print(c.BackendUnsupported.__module__)", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    origin, error_module = proc.stdout.split()
    assert Path(origin).parent.name == "kernels" and Path(origin).name == "rms_norm.py"
    assert error_module == "inference_pio.errors"


def test_import_kernels_from_the_repository_root_finds_the_pypi_package():
    try:
        dist = importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the PyPI 'kernels' package is not installed here")
    proc = _run("import kernels; print(kernels.__file__)", cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert Path(proc.stdout.strip()).resolve().is_relative_to(Path(dist.locate_file("")).resolve())


def test_transformers_imports_from_the_repository_root():
    """transformers looks for the hub's ``kernels`` package; from here it must find that one or none, never ours."""
    pytest.importorskip("transformers")
    proc = _run("import transformers; from transformers import LlamaConfig; "
                "from transformers.utils.import_utils import is_kernels_available as a\n"
                "import importlib.util as u; s = u.find_spec('kernels') if a() else None\n"
                "print(a(), s.origin if s else None)", cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    available, origin = proc.stdout.split()[-2:]
    if available == "True":
        assert origin != "None" and not Path(origin).resolve().is_relative_to(KERNELS.resolve()), origin
    else:  # without the PyPI package our folder must not look like it
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution("kernels")
