"""The catalogue: an embedded SQLite database of local models under the manager's home folder.

Home: ``$INFERENCE_PIO_HOME`` or ``~/.inference_pio``; the database is ``catalogue.db`` there.
Several processes may use it at once: the database runs in WAL mode (readers never wait for a
writer), every write is one ``BEGIN IMMEDIATE`` transaction (writers queue instead of failing
half-way), and a busy timeout makes a writer wait for the other's commit rather than raise.
The schema is versioned with ``PRAGMA user_version``; a newer schema than this code knows is
refused with a message instead of being misread.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Iterator

from .errors import ModelExistsError, ModelManagerError
from .types import ModelFormat, ModelInfo, ModelSource, ModelType

HOME_ENV = "INFERENCE_PIO_HOME"
DATABASE_NAME = "catalogue.db"

# One list of statements per schema version; version N's statements upgrade N-1 to N.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE models (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            family TEXT NOT NULL,
            source TEXT NOT NULL,
            format TEXT NOT NULL,
            path TEXT NOT NULL,
            size_bytes INTEGER NOT NULL,
            parameter_count INTEGER,
            dtype TEXT,
            quantization TEXT,
            capabilities TEXT NOT NULL,
            plugin TEXT,
            owned INTEGER NOT NULL,
            origin TEXT,
            added_at REAL NOT NULL
        )""",
        "CREATE INDEX models_path ON models(path)",
    ),
}
SCHEMA_VERSION = max(_MIGRATIONS)

_COLUMNS = ("id", "name", "family", "source", "format", "path", "size_bytes", "parameter_count", "dtype",
            "quantization", "capabilities", "plugin", "owned", "origin", "added_at")


def model_home() -> Path:
    """The manager's home folder (catalogue, downloaded models): ``$INFERENCE_PIO_HOME`` or ``~/.inference_pio``."""
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else Path.home() / ".inference_pio"


class CatalogueError(ModelManagerError):
    """A catalogue database that cannot be opened or was written by a newer version."""


class Catalogue:
    """The model rows of one SQLite file. Every method opens its own short-lived connection,
    so one ``Catalogue`` may be used from any thread (the manager calls it from worker threads)."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s

    def create(self) -> None:
        """Create or upgrade the schema (idempotent; safe when several processes do it at once)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            with self._write(db):
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise CatalogueError(
                        f"{self.path} has catalogue schema v{version}, newer than this inference-pio knows "
                        f"(v{SCHEMA_VERSION}); upgrade inference-pio or point {HOME_ENV} elsewhere"
                    )
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def schema_version(self) -> int:
        with self._connect() as db:
            return db.execute("PRAGMA user_version").fetchone()[0]

    def all(self) -> list[ModelInfo]:
        with self._connect() as db:
            rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM models ORDER BY id").fetchall()
        return [_to_info(row) for row in rows]

    def get(self, model_id: str) -> ModelInfo | None:
        with self._connect() as db:
            row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM models WHERE id = ?", (model_id,)).fetchone()
        return _to_info(row) if row else None

    def add(self, info: ModelInfo) -> ModelInfo:
        """Insert ``info``; when its id exists with the same path, return the stored row unchanged.

        Raises ``ModelExistsError`` when the id is taken by a model at another path.
        """
        with self._connect() as db, self._write(db):
            row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM models WHERE id = ?", (info.id,)).fetchone()
            if row is not None:
                existing = _to_info(row)
                if Path(existing.path) == Path(info.path):
                    return existing
                raise ModelExistsError(
                    f"model id {info.id!r} is already taken by {existing.path}; choose another name "
                    f"or remove it first (`pio models rm {info.id}`)"
                )
            db.execute(f"INSERT INTO models ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                       _to_row(info))
        return info

    def remove(self, model_id: str) -> ModelInfo | None:
        """Delete the row of ``model_id``; return it (None when there was none)."""
        with self._connect() as db, self._write(db):
            row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM models WHERE id = ?", (model_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM models WHERE id = ?", (model_id,))
        return _to_info(row)

    def ids_using(self, path: str | Path) -> list[str]:
        """The ids of rows whose files are ``path`` (two names may share one downloaded blob)."""
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT id FROM models WHERE path = ?", (str(path),))]

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves; timeout is SQLite's busy timeout.
            db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        except sqlite3.Error as e:
            raise CatalogueError(f"cannot open the model catalogue {self.path}: {e}") from e
        try:
            yield db
        except sqlite3.DatabaseError as e:
            raise CatalogueError(f"model catalogue {self.path}: {e}") from e
        finally:
            db.close()

    @staticmethod
    @contextlib.contextmanager
    def _write(db: sqlite3.Connection) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so two writers queue on the busy timeout
        # instead of both reading and one failing to upgrade its lock.
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def _to_row(info: ModelInfo) -> tuple:
    return (info.id, info.name, info.family.value, info.source.value, info.format.value, str(info.path),
            int(info.size_bytes), info.parameter_count, info.dtype, info.quantization,
            json.dumps(list(info.capabilities)), info.plugin, int(info.owned), info.origin, time.time())


def _to_info(row: tuple) -> ModelInfo:
    values = dict(zip(_COLUMNS, row))
    values.pop("added_at")
    return ModelInfo(
        **{**values,
           "family": ModelType.stored(values["family"]),
           "source": ModelSource(values["source"]),
           "format": ModelFormat(values["format"]),
           "path": Path(values["path"]),
           "capabilities": tuple(json.loads(values["capabilities"])),
           "owned": bool(values["owned"])}
    )
