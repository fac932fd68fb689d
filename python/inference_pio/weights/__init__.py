"""Reading model weights: safetensors checkpoints (single file or shards), fused projections
and tied embeddings built at load."""

from .errors import WeightLoadError
from .fusion import EMBED_NAME, LM_HEAD_NAME, fuse_into, fuse_rows, tie_embeddings
from .gguf_file import GGUFFile, GGUFTensor, is_gguf_file, open_gguf, read_gguf_architecture
from .gguf_loader import fuse_gguf_rows, hf_tensor_name, load_gguf_state, unpermute_qk_rows
from .safetensors_header import TensorEntry, read_header
from .safetensors_loader import (
    INDEX_FILE,
    SINGLE_FILE,
    SafetensorsCheckpoint,
    load_state,
    open_checkpoint,
    resolve_dtype,
)

__all__ = [
    "EMBED_NAME", "INDEX_FILE", "LM_HEAD_NAME", "SINGLE_FILE", "SafetensorsCheckpoint",
    "TensorEntry", "WeightLoadError", "fuse_into", "fuse_rows", "load_state", "open_checkpoint",
    "read_header", "resolve_dtype", "tie_embeddings",
    "GGUFFile", "GGUFTensor", "fuse_gguf_rows", "hf_tensor_name", "is_gguf_file", "load_gguf_state", "open_gguf",
    "read_gguf_architecture", "unpermute_qk_rows",
]
