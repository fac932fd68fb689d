"""Optional dependencies behind extras: the core works without them, and a feature that needs one names it.

A missing package is simulated with ``sys.modules[name] = None`` (Python then refuses to import it),
never by uninstalling anything.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from inference_pio.errors import MissingExtraError
from inference_pio.extras import EXTRAS, require

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = sorted({module for modules in EXTRAS.values() for module in modules})


def _run_without(modules, code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter where ``modules`` cannot be imported."""
    prelude = f"import sys\nfor _m in {list(modules)!r}:\n    sys.modules[_m] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "NO_COLOR": "1"})


def _distribution_module(requirement: str) -> str:
    """"prometheus-client>=0.20" -> "prometheus_client"; "ray[serve]>=2.60,<3" -> "ray"."""
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower().replace("-", "_")


def test_the_extras_table_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        assert sorted(map(_distribution_module, extras[extra])) == sorted(modules), extra
    core = {_distribution_module(r) for r in project["dependencies"]}
    assert not core & set(OPTIONAL), "an optional package is also a core dependency"
    # The test extra pulls every extra, so `pip install ".[test]"` installs everything the tests use.
    assert set(EXTRAS) <= _extras_pulled_by(extras, "test")


def _extras_pulled_by(extras: dict, name: str) -> set[str]:
    """The extras that installing ``inference-pio[name]`` installs (self-references followed)."""
    pulled = {name}
    for requirement in extras[name]:
        if requirement.startswith("inference-pio["):
            for inner in requirement[len("inference-pio["):requirement.index("]")].split(","):
                pulled |= _extras_pulled_by(extras, inner)
    return pulled


def test_import_and_the_cli_work_without_any_optional_package():
    proc = _run_without(OPTIONAL, "import inference_pio, inference_pio.cli, inference_pio.engine, "
                                  "inference_pio.engine.grammar, inference_pio.services.schemas\n"
                                  "from inference_pio.cli import main\n"
                                  "sys.exit(main(['generate', '--help']))")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "generate" in proc.stdout


@pytest.mark.parametrize("missing", ["fastapi", "uvicorn", "prometheus_client"])
def test_pio_serve_without_the_server_stack_names_the_extra(missing):
    proc = _run_without([missing], "from inference_pio.cli import main\nsys.exit(main(['serve', 'no/such/model']))")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"pio serve needs {missing}" in proc.stderr and 'pip install "inference-pio[serve]"' in proc.stderr


def test_grammar_without_xgrammar_names_the_extra(monkeypatch):
    from inference_pio.engine.grammar_vocab import load_xgrammar

    monkeypatch.setitem(sys.modules, "xgrammar", None)
    with pytest.raises(MissingExtraError, match=r'needs xgrammar.*pip install "inference-pio\[grammar\]"') as e:
        load_xgrammar()
    assert isinstance(e.value, ImportError) and e.value.name == "xgrammar" and e.value.extra == "grammar"


def test_require_reraises_a_broken_install_as_itself(monkeypatch):
    """A package that is there but fails to import says its own error, not "install the extra"."""
    class Broken:
        def find_spec(self, name, path=None, target=None):
            if name == "openai":
                raise ImportError("openai is broken here", name="httpx_internal")
            return None

    monkeypatch.delitem(sys.modules, "openai", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(ImportError, match="openai is broken here") as e:
        require("remote", "a remote service")
    assert not isinstance(e.value, MissingExtraError)


def test_unknown_extra_is_refused():
    with pytest.raises(ValueError, match="unknown extra 'gpu'"):
        require("gpu", "x")
