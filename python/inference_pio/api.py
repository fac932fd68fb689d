"""The one-call public API: ``inference_pio.load(path)`` -> a model handle that generates text.

::

    model = inference_pio.load("path/to/checkpoint", dtype="bfloat16")   # or dtype=torch.bfloat16
    [result] = model.generate("Once upon a time", max_tokens=32, temperature=0)
    for piece in model.stream("Hello", max_tokens=16):
        print(piece, end="")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from .engine.sampler import SamplingParams
from .engine.openmp_pool import release_openmp_pool
from .engine.warmup import warm_up
from .plugin import CheckpointPlugin, PluginManager, TextModelPluginInterface
from .plugin.config import dtype_name
from .plugin.contract import EmbeddingPlugin, GenerationPlugin, can_embed, can_generate, require


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class GenerationResult:
    """One request's output: ``finish_reason`` is "stop" (EOS / stop string / stop id) or "length";
    ``logprobs``: one ``TokenLogprobs`` per token when ``generate`` was given ``logprobs=k``."""

    text: str
    token_ids: list[int]
    finish_reason: str
    usage: Usage
    logprobs: list | None = None


class Model:
    """A loaded checkpoint: its plugin, engine and tokenizer. ``close()`` frees everything.

    What it uses of the plugin is the contract in ``plugin.contract``: a ``GenerationPlugin``
    (engine, tokenizer, config) or an ``EmbeddingPlugin`` (embed, embedding_dim, max_seq_length).
    """

    def __init__(self, plugin: TextModelPluginInterface):
        self.plugin = plugin
        self._async_engine = None

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What the plugin serves, e.g. ("text-generation", "chat", "streaming") or ("embeddings",)."""
        return tuple(self.plugin.metadata.capabilities or ())

    @property
    def is_embedding_model(self) -> bool:
        return "text-generation" not in self.capabilities and can_embed(self.plugin)

    @property
    def can_generate(self) -> bool:
        """Whether this model generates (its plugin has a generation engine and it is not closed)."""
        return can_generate(self.plugin) and self.plugin.engine is not None

    @property
    def engine(self):
        if not can_generate(self.plugin):
            if not self.is_embedding_model:
                require(self.plugin, GenerationPlugin)  # raises, naming what the plugin lacks
            if self.plugin.is_loaded:
                raise ValueError(f"{self.plugin.metadata.name} is an embedding model: it has no generation "
                                 "engine; use embed()")
            raise RuntimeError("this model was closed")
        engine = self.plugin.engine
        if engine is None:
            raise RuntimeError("this model was closed")
        return engine

    @property
    def vocab_size(self) -> int:
        return int(self.plugin.config.vocab_size)

    @property
    def max_model_len(self) -> int:
        """Most tokens one request may hold (prompt + output; the input of an embedding model)."""
        if self.is_embedding_model:
            return int(self._embedder().max_seq_length)
        return int(self.engine.max_model_len)

    @property
    def embedding_dim(self) -> int:
        """Length of the vectors ``embed`` returns (embedding models)."""
        if not self.is_embedding_model:
            raise ValueError(f"{self.plugin.metadata.name} is not an embedding model")
        return int(self._embedder().embedding_dim)

    def _embedder(self) -> EmbeddingPlugin:
        if not can_embed(self.plugin):
            raise ValueError(f"{self.plugin.metadata.name} is not an embedding model")
        return self.plugin

    @property
    def tokenizer(self):
        """The plugin's tokenizer; ``ValueError`` when the checkpoint has none."""
        tokenizer = self.plugin.tokenizer if (can_generate(self.plugin) or can_embed(self.plugin)) else None
        if tokenizer is None:
            raise ValueError(f"{self.plugin.metadata.name}: this model has no tokenizer")
        return tokenizer

    @property
    def chat_template(self) -> str | None:
        """The tokenizer's chat template (Jinja source), or None (no tokenizer, or one without a template)."""
        try:
            return self.tokenizer.chat_template
        except ValueError:
            return None

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True,
                            **template_kwargs: Any) -> list[int]:
        """Token ids of ``messages`` (``[{"role": ..., "content": ...}]``) rendered with the model's chat template."""
        try:
            tokenizer = self.tokenizer
        except ValueError:
            raise ValueError("this model has no tokenizer, so no chat template") from None
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True,
                                             **template_kwargs)

    def embed(self, texts: str | Sequence[str], **options: Any):
        """Sentence embeddings ``[n, dim]`` (float32) from an embedding model's plugin."""
        try:
            return self._embedder().embed([texts] if isinstance(texts, str) else list(texts), **options)
        finally:
            # Servers embed on worker threads that outlive the call: a pool left there would put the
            # OpenMP runtime in its oversubscribed mode for the generation engine (engine/openmp_pool.py).
            release_openmp_pool()

    def async_engine(self):
        """The model's :class:`~inference_pio.engine.async_engine.AsyncEngine` (one per model, started lazily):
        concurrent ``generate`` calls from asyncio share the batch (continuous batching)."""
        if self._async_engine is None:
            from .engine.async_engine import AsyncEngine

            self._async_engine = AsyncEngine(self.engine)
        return self._async_engine

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.plugin.tokenize(text, add_special_tokens=add_special_tokens)

    def detokenize(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.plugin.detokenize(token_ids, skip_special_tokens=skip_special_tokens)

    def _ids(self, prompt: str | Sequence[int]) -> list[int]:
        self.engine  # noqa: B018 -- a closed model says so before the tokenizer does
        return self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]

    def generate(self, prompts: str | Sequence[int] | Sequence[str | Sequence[int]],
                 **sampling: Any) -> list[GenerationResult]:
        """Generates for one prompt or a list (texts or token-id lists), batched together.

        ``sampling``: ``SamplingParams`` fields (temperature, top_k, top_p, min_p,
        repetition_penalty, seed, max_tokens, stop, stop_token_ids, ignore_eos, logprobs).
        """
        if isinstance(prompts, str) or (len(prompts) and isinstance(prompts[0], int)):
            prompts = [prompts]
        ids = [self._ids(p) for p in prompts]
        seqs = self.engine.generate(ids, SamplingParams(**sampling))
        return [GenerationResult(s.output_text, list(s.output_token_ids), s.finish_reason,
                                 Usage(s.num_prompt_tokens, s.num_output_tokens), s.logprobs) for s in seqs]

    def stream(self, prompt: str | Sequence[int], **sampling: Any) -> Iterator[str]:
        """Yields text pieces of one request as they are generated."""
        return self.engine.stream(self._ids(prompt), SamplingParams(**sampling))

    def close(self) -> None:
        if self._async_engine is not None:
            self._async_engine.shutdown()
            self._async_engine = None
        self.plugin.cleanup()


def load(path: str | Path, dtype: str | torch.dtype = "auto", device: str = "auto", *,
         manager: PluginManager | None = None, **options: Any) -> Model:
    """Loads the checkpoint folder ``path`` with the plugin its config.json asks for.

    ``dtype``: ``"auto"`` (the checkpoint's), ``"float32"``, ``"bfloat16"``, ``"float16"`` (or
    ``"fp16"``, ``"bf16"``...), or the torch dtype itself (``torch.bfloat16``) as transformers takes it.

    ``options`` go to the plugin's ``initialize`` (e.g. ``max_seq_len``, ``max_batch_size``,
    ``num_kv_blocks``, ``prefill_budget``). Raises ``ConfigError`` (no/bad config.json),
    ``NoPluginForModelError`` (listing the served model types), ``WeightLoadError``, or what else
    stopped the plugin. A generation model is warmed up before it is returned (``engine.warmup``).
    """
    dtype = dtype_name(dtype)  # a wrong dtype fails here, before any file is read
    manager = manager or PluginManager()
    info = manager.plugin_for_checkpoint(path)
    plugin = manager.create_plugin(info.name)
    if not plugin.initialize(model_path=str(path), dtype=dtype, device=device, **options):
        error = plugin.init_error if isinstance(plugin, CheckpointPlugin) else None
        if error is not None:
            raise error
        raise RuntimeError(f"plugin {info.name!r} failed to initialize {path}")
    if not (can_generate(plugin) or can_embed(plugin)):
        plugin.cleanup()
        require(plugin, GenerationPlugin)  # names what a generation plugin would need
    model = Model(plugin)
    if model.can_generate:  # the first request at steady speed: weights paged in, buffers built
        warm_up(model.engine)
    release_openmp_pool()  # loading is done on this thread (engine/openmp_pool.py: one live pool)
    return model
