"""``LlamaConfig``: the Llama architecture's fields, read from a checkpoint's config.json or a GGUF.

Every field and check is the shared decoder's (``inference_pio.plugin.decoder_config``); Llama
reads ``model_type: llama`` checkpoints and ``llama`` GGUF files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from inference_pio.plugin.decoder_config import DecoderConfig


@dataclass(kw_only=True)
class LlamaConfig(DecoderConfig):
    """Llama / TinyLlama / DeepSeek-Coder (Llama architecture) hyper-parameters (see ``DecoderConfig``)."""

    default_model_type: ClassVar[str | None] = "llama"
    gguf_architectures: ClassVar[tuple[str, ...]] = ("llama",)

    @property
    def family(self) -> str:
        """"DeepSeek" for DeepSeek's Llama-architecture checkpoints, else "Llama"."""
        folder = Path(self.model_path).name if self.model_path else ""
        where = f"{self.name_or_path} {folder}".lower()
        return "DeepSeek" if "deepseek" in where else "Llama"
