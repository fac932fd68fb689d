"""The SQLite catalogue: schema versioning, round trips, id conflicts, and two processes writing
at once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from inference_pio.models import (Catalogue, CatalogueError, ModelExistsError, ModelFormat, ModelInfo, ModelSource,
                                  ModelType, model_home)
from inference_pio.models.catalogue import SCHEMA_VERSION

from .builders import run_together


def _info(i: int, path: str | None = None) -> ModelInfo:
    return ModelInfo(id=f"local/llama/m{i}", name=f"m{i}", family=ModelType.LLAMA, source=ModelSource.GGUF,
                     format=ModelFormat.GGUF, path=Path(path or f"/models/m{i}.gguf"), size_bytes=1000 + i,
                     parameter_count=i, quantization="Q4_1", capabilities=("generation", "chat"), plugin="Llama",
                     owned=bool(i % 2), origin=f"origin-{i}")


def test_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("INFERENCE_PIO_HOME", str(tmp_path / "elsewhere"))
    assert model_home() == tmp_path / "elsewhere"
    monkeypatch.delenv("INFERENCE_PIO_HOME")
    assert model_home() == Path.home() / ".inference_pio"


def test_schema_is_created_versioned_and_in_wal_mode(tmp_path):
    catalogue = Catalogue(tmp_path / "c" / "catalogue.db")
    catalogue.create()
    catalogue.create()  # idempotent
    assert catalogue.schema_version() == SCHEMA_VERSION
    with sqlite3.connect(catalogue.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_round_trip_conflict_and_removal(tmp_path):
    catalogue = Catalogue(tmp_path / "catalogue.db")
    catalogue.create()
    infos = [_info(i) for i in range(3)]
    for info in infos:
        assert catalogue.add(info) is info
    assert catalogue.all() == infos and catalogue.get("local/llama/m1") == infos[1]
    assert catalogue.add(_info(1)) == infos[1]  # same id, same path: the stored row
    with pytest.raises(ModelExistsError, match="local/llama/m1.*already taken by /models/m1.gguf"):
        catalogue.add(_info(1, path="/other/place.gguf"))
    assert catalogue.ids_using("/models/m2.gguf") == ["local/llama/m2"]
    assert catalogue.remove("local/llama/m0") == infos[0] and catalogue.remove("local/llama/m0") is None
    assert [m.id for m in catalogue.all()] == ["local/llama/m1", "local/llama/m2"]


def test_newer_schema_is_refused(tmp_path):
    catalogue = Catalogue(tmp_path / "catalogue.db")
    catalogue.create()
    with sqlite3.connect(catalogue.path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(CatalogueError, match="newer than this inference-pio"):
        catalogue.create()


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "catalogue.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CatalogueError, match="catalogue.db"):
        Catalogue(path).create()


def _writer(path: str, first: int, count: int, start) -> None:
    start.wait()
    catalogue = Catalogue(path)
    catalogue.create()
    for i in range(first, first + count):
        catalogue.add(_info(i))
        if i % 3 == 0:
            catalogue.remove(f"local/llama/m{i}")


def test_two_processes_write_at_once(tmp_path):
    path = str(tmp_path / "catalogue.db")
    run_together(_writer, [(path, 0, 60), (path, 60, 60)])
    ids = {m.id for m in Catalogue(path).all()}
    assert ids == {f"local/llama/m{i}" for i in range(120) if i % 3}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
