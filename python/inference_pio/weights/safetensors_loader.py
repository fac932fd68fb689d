"""Loading a checkpoint folder's safetensors weights: one file or shards with an index.

Every file's header is checked (``safetensors_header``) and the tensors' names and shapes
are compared with what the caller expects before any tensor data is read, so a bad
checkpoint fails fast with one message naming every problem. Data is read through
safetensors' ``safe_open`` (memory-mapped), one tensor at a time, converted to the
target dtype as it is read. Pickle-based checkpoints (``.bin``, ``.pt``) are refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable, Iterator, Mapping

import torch
from safetensors import safe_open

from .errors import WeightLoadError, shorten
from .fusion import EMBED_NAME, LM_HEAD_NAME, tie_embeddings
from .safetensors_header import TensorEntry, read_header

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_FLOAT_PREFIXES = ("F", "BF")  # safetensors dtype names of floating-point tensors (F32, BF16, F8_E4M3...)

_DTYPE_NAMES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


@dataclass(frozen=True)
class SafetensorsCheckpoint:
    """A checked checkpoint: for each tensor name, its file and header entry."""

    path: Path
    tensors: Mapping[str, tuple[Path, TensorEntry]]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Tensor shapes by name, read from the headers (no tensor data is read)."""
        return {name: entry.shape for name, (_, entry) in self.tensors.items()}

    def iter_tensors(
        self,
        names: Iterable[str] | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device = "cpu",
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield ``(name, tensor)`` for ``names`` (all by default), file by file.

        Floating-point tensors are converted to ``dtype`` (``None`` / ``"auto"`` keeps the
        stored dtype); integer and bool tensors are left as stored.
        """
        target = resolve_dtype(dtype)
        wanted = list(self.tensors) if names is None else list(names)
        by_file: dict[Path, list[str]] = {}
        for name in wanted:
            if name not in self.tensors:
                raise WeightLoadError(f"{self.path}: no tensor {name!r} in the checkpoint")
            by_file.setdefault(self.tensors[name][0], []).append(name)
        for file, file_names in by_file.items():
            try:
                with safe_open(str(file), framework="pt", device=str(device)) as f:
                    for name in file_names:
                        tensor = f.get_tensor(name)
                        if target is not None and tensor.is_floating_point():
                            tensor = tensor.to(target)
                        yield name, tensor
            except WeightLoadError:
                raise
            except Exception as exc:  # safetensors raises its own error type and OSError
                raise WeightLoadError(f"{file}: safetensors could not read it: {exc}") from exc


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``torch.float16`` for ``"float16"``/``"fp16"``/``"torch.float16"``; ``None`` for ``auto``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = dtype.removeprefix("torch.")
    if name == "auto":
        return None
    if name not in _DTYPE_NAMES:
        raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPE_NAMES)}, got {dtype!r}")
    return _DTYPE_NAMES[name]


def open_checkpoint(path: str | Path) -> SafetensorsCheckpoint:
    """Find and check a checkpoint's safetensors files.

    ``path`` is a folder holding ``model.safetensors.index.json`` (sharded; the index's
    ``weight_map`` says which shard holds each tensor) or ``model.safetensors``, or a single
    ``.safetensors`` file. Raises ``WeightLoadError`` for missing files or shards, index
    entries absent from their shard, corrupt or truncated files, and pickle checkpoints.
    """
    path = Path(path)
    if path.is_file():
        _refuse_pickle(path)
        return SafetensorsCheckpoint(path, _entries_of(path, read_header(path)))
    if not path.is_dir():
        raise WeightLoadError(f"{path}: no such file or folder")
    if (path / INDEX_FILE).is_file():
        return _open_sharded(path, path / INDEX_FILE)
    if (path / SINGLE_FILE).is_file():
        single = path / SINGLE_FILE
        return SafetensorsCheckpoint(path, _entries_of(single, read_header(single)))
    pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        _refuse_pickle(pickles[0])
    raise WeightLoadError(f"{path}: holds neither {SINGLE_FILE} nor {INDEX_FILE}")


def load_state(
    path: str | Path,
    expected: Mapping[str, Iterable[int]] | None = None,
    dtype: torch.dtype | str | None = None,
    strict: bool = True,
    *,
    device: str | torch.device = "cpu",
    tie_word_embeddings: bool = False,
    embed_name: str = EMBED_NAME,
    head_name: str = LM_HEAD_NAME,
    floating: bool = False,
) -> dict[str, torch.Tensor]:
    """Load a checkpoint's tensors into a dict, checking them against ``expected``.

    Args:
        path: checkpoint folder or ``.safetensors`` file (see ``open_checkpoint``).
        expected: ``{name: shape}`` the model needs; ``None`` loads everything as stored.
        dtype: target dtype for floating-point tensors (``None``/``"auto"`` keeps them).
        strict: with ``True`` missing and unexpected tensors are errors; with ``False``
            missing ones are left out and unexpected ones are not read. Wrong shapes are
            always errors.
        tie_word_embeddings: when the checkpoint has no ``head_name``, use
            ``embed_name`` for it (the same tensor object).
        floating: every tensor read must be floating point (a model's weights): an integer
            or bool one (a norm weight stored as I32) is refused by name.

    Raises ``WeightLoadError`` whose message names every missing, unexpected and
    wrongly shaped (or, with ``floating``, non-float) tensor, before any tensor data is read.
    """
    checkpoint = open_checkpoint(path)
    shapes = checkpoint.shapes()
    tie = tie_word_embeddings and head_name not in shapes and embed_name in shapes
    if tie:
        shapes[head_name] = shapes[embed_name]
    names = list(checkpoint.tensors)
    if expected is not None:
        _check_expected(checkpoint.path, shapes, expected, strict)
        names = [n for n in names if n in expected]
    if floating:
        _check_floating(checkpoint, names)
    state = dict(checkpoint.iter_tensors(names, dtype=dtype, device=device))
    if tie and (expected is None or head_name in expected):
        tie_embeddings(state, embed_name=embed_name, head_name=head_name)
    return state


def _check_expected(
    where: Path,
    shapes: dict[str, tuple[int, ...]],
    expected: Mapping[str, Iterable[int]],
    strict: bool,
) -> None:
    expected_shapes = {name: tuple(shape) for name, shape in expected.items()}
    wrong = [
        f"{name} (expected {list(shape)}, found {list(shapes[name])})"
        for name, shape in expected_shapes.items()
        if name in shapes and shapes[name] != shape
    ]
    problems = [f"wrong shape: {_name_list(wrong)}"] if wrong else []
    if strict:
        missing = [name for name in expected_shapes if name not in shapes]
        unexpected = [name for name in shapes if name not in expected_shapes]
        if missing:
            problems.insert(0, f"missing: {_name_list(missing)}")
        if unexpected:
            problems.append(f"unexpected: {_name_list(unexpected)}")
    if problems:
        raise WeightLoadError(
            f"{where}: checkpoint does not match the model; " + "; ".join(problems)
        )


def _check_floating(checkpoint: SafetensorsCheckpoint, names: list[str]) -> None:
    """A model's weights are floating point: an integer or bool tensor (a norm weight stored as I32)
    would be used as stored and compute garbage, so it is refused by name before any data is read."""
    wrong = [f"{name} ({checkpoint.tensors[name][1].dtype})" for name in names
             if not checkpoint.tensors[name][1].dtype.startswith(_FLOAT_PREFIXES)]
    if wrong:
        raise WeightLoadError(f"{checkpoint.path}: tensors the model needs as floating point have another dtype: "
                              f"{_name_list(wrong)}")


def _name_list(names: list[str], limit: int = 20) -> str:
    """At most ``limit`` names, then how many more: a message stays one readable line."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _shard_inside(folder: Path, index_path: Path, shard: str) -> Path:
    """``folder / shard`` for a shard named by a relative path that stays in the folder (no absolute
    path, no ``..``); symlinks are allowed, as in the Hugging Face cache."""
    parts = PurePosixPath(shard.replace("\\", "/")).parts
    if not parts or PurePosixPath(shard).is_absolute() or PureWindowsPath(shard).drive or ".." in parts:
        raise WeightLoadError(f"{index_path}: weight_map names shard {shorten(shard)}, outside the checkpoint "
                              "folder: shards must be files in it")
    return folder.joinpath(*parts)


def _open_sharded(folder: Path, index_path: Path) -> SafetensorsCheckpoint:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightLoadError(f"{index_path}: cannot be read as JSON: {exc}") from exc
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise WeightLoadError(
            f"{index_path}: needs a 'weight_map' object of tensor name -> shard file"
        )
    files = {shard: _shard_inside(folder, index_path, shard) for shard in sorted(set(weight_map.values()))}
    missing = [shard for shard, file in files.items() if not file.is_file()]
    if missing:
        raise WeightLoadError(
            f"{index_path}: shard(s) listed in weight_map are missing: {_name_list(missing)}"
        )
    headers = {shard: read_header(file) for shard, file in files.items()}
    absent = [
        f"{name} (in {shard})" for name, shard in weight_map.items() if name not in headers[shard]
    ]
    if absent:
        raise WeightLoadError(
            f"{index_path}: tensors listed in weight_map are absent from their shard: "
            + _name_list(absent)
        )
    tensors = {name: (files[shard], headers[shard][name]) for name, shard in weight_map.items()}
    return SafetensorsCheckpoint(folder, tensors)


def _entries_of(file: Path, header: dict[str, TensorEntry]) -> dict[str, tuple[Path, TensorEntry]]:
    return {name: (file, entry) for name, entry in header.items()}


def _refuse_pickle(file: Path) -> None:
    if file.suffix in PICKLE_SUFFIXES:
        raise WeightLoadError(
            f"{file}: only safetensors checkpoints are supported. This is a PyTorch pickle "
            "file, and unpickling can run arbitrary code from the file; convert it to "
            "safetensors (e.g. transformers' save_pretrained(..., safe_serialization=True))"
        )
