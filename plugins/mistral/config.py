"""``MistralConfig``: the Llama architecture plus a sliding attention window, from config.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from inference_pio.plugin import ConfigError
from inference_pio.plugins.llama import LlamaConfig


@dataclass(kw_only=True)
class MistralConfig(LlamaConfig):
    """Mistral 7B and its dense successors (``model_type: mistral``; not the Mixtral MoE).

    ``sliding_window``: each token attends to itself and the ``sliding_window - 1`` tokens before
    it, in every layer; ``None`` (Mistral v0.2 and later write ``null``) attends to everything.
    The default 4096 is transformers' ``MistralConfig`` default, for a config.json without the key.
    """

    sliding_window: int | None = 4096

    # llama.cpp converts Mistral checkpoints to the "llama" GGUF architecture: the Llama plugin serves them.
    gguf_architectures: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ConfigError(f"MistralConfig.sliding_window must be a positive int or null, got {self.sliding_window}")

    @property
    def layer_sliding_windows(self) -> tuple[int | None, ...]:
        """The attention window of each layer (the same in all of Mistral's)."""
        return (self.sliding_window,) * self.num_hidden_layers

    @property
    def family(self) -> str:
        return "Mistral"

    @classmethod
    def from_pretrained_config(cls, config_json: dict[str, Any], **overrides: Any) -> "MistralConfig":
        model_type, architectures = config_json.get("model_type"), config_json.get("architectures") or []
        if (model_type or architectures) and model_type != "mistral" and "MistralForCausalLM" not in architectures:
            raise ConfigError(f"not a Mistral checkpoint: model_type {model_type!r}, architectures {architectures}")
        # Skip LlamaConfig's own model_type check; its field handling is inherited unchanged.
        return super(LlamaConfig, cls).from_pretrained_config(config_json, **overrides)
