"""Writes small but working plugin folders for the plugin-manager tests."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

PLUGIN_CODE = '''
"""A byte-level echo plugin: enough of a model plugin to be created and used in tests."""

from inference_pio.plugin import ModelPluginMetadata, PluginType, TextModelPluginInterface

from .config import EchoConfig  # a relative import: the package must be imported as one


class EchoPlugin(TextModelPluginInterface):
    config_class = EchoConfig

    def __init__(self, metadata, suffix=""):
        super().__init__(metadata)
        self.suffix = suffix
        self.config = None

    def initialize(self, **kwargs):
        self.config = EchoConfig.from_dict(kwargs.get("config", {}))
        self.is_loaded = True
        return True

    def load_model(self, config=None):
        return None

    def infer(self, data):
        return list(data)

    def supports_config(self, config):
        return isinstance(config, EchoConfig)

    def tokenize(self, text, **kwargs):
        return list(text.encode())

    def detokenize(self, token_ids, **kwargs):
        return bytes(token_ids).decode()

    def generate_text(self, prompt, max_new_tokens=512, **kwargs):
        return (prompt + self.suffix)[:max_new_tokens]

    def cleanup(self):
        self.is_loaded = False
        return True


def create_echo_plugin(suffix=""):
    metadata = ModelPluginMetadata(
        name=NAME, version="1.0.0", author="tests", description="echo",
        plugin_type=PluginType.MODEL_COMPONENT, dependencies=DEPENDENCIES,
    )
    return EchoPlugin(metadata, suffix)
'''

CONFIG_CODE = '''
from dataclasses import dataclass

from inference_pio.plugin import BaseConfig


@dataclass(kw_only=True)
class EchoConfig(BaseConfig):
    hidden_size: int = 8
'''


def manifest(name: str, **fields) -> dict:
    """A complete manifest for the echo plugin; ``fields`` replace or add keys."""
    data = {
        "name": name,
        "version": "1.0.0",
        "author": "tests",
        "description": "echo plugin for tests",
        "plugin_type": "MODEL_COMPONENT",
        "dependencies": [],
        "compatibility": {"python_version": ">=3.8", "min_memory_gb": 0.0},
        "model_types": [],
        "architectures": [],
        "capabilities": ["text-generation"],
        "entry_point": {
            "module": ".plugin", "class": "EchoPlugin", "factory_function": "create_echo_plugin"
        },
    }
    data.update(fields)
    return data


def write_plugin(
    folder: Path, name: str, *, manifest_text: str | None = None, code: str | None = None, **fields
) -> Path:
    """Write a plugin package at ``folder``: manifest, ``__init__``, ``config.py``, ``plugin.py``.

    ``manifest_text`` replaces the manifest file verbatim (for broken manifests); ``code``
    replaces ``plugin.py``.
    """
    folder.mkdir(parents=True)
    data = manifest(name, **fields)
    if manifest_text is None:
        manifest_text = json.dumps(data)
    (folder / "plugin_manifest.json").write_text(manifest_text)
    (folder / "__init__.py").write_text('"""Echo test plugin."""\n')
    (folder / "config.py").write_text(textwrap.dedent(CONFIG_CODE))
    constants = f"NAME = {name!r}\nDEPENDENCIES = {data.get('dependencies', [])!r}\n"
    (folder / "plugin.py").write_text(code if code is not None else PLUGIN_CODE + constants)
    return folder
