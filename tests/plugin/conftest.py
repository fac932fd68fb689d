"""Plugin tests run with an empty plugin path and leave no plugin modules behind."""

import sys

import pytest


@pytest.fixture(autouse=True)
def isolated_plugins(monkeypatch):
    monkeypatch.delenv("INFERENCE_PIO_PLUGIN_PATH", raising=False)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("inference_pio_plugin_", "echo_dist_plugin", "fake_builtin_plugins")):
            del sys.modules[name]
