"""Every test gets its own manager home, Ollama store and hub cache under tmp_path, no progress
bars and no real hub (HF_ENDPOINT points at a closed port unless a test serves one)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from inference_pio.models import LocalModelManager


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    paths = {"home": tmp_path / "home", "ollama": tmp_path / "ollama", "hub": tmp_path / "hub"}
    monkeypatch.setenv("INFERENCE_PIO_HOME", str(paths["home"]))
    monkeypatch.setenv("OLLAMA_MODELS", str(paths["ollama"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(paths["hub"]))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing leaves the machine
    monkeypatch.setenv("INFERENCE_PIO_PROGRESS", "0")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("INFERENCE_PIO_OLLAMA_REGISTRY", raising=False)
    return paths


@pytest.fixture
def manager(env) -> LocalModelManager:
    manager = LocalModelManager()
    asyncio.run(manager.initialize())
    return manager


