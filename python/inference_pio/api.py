"""The one-call public API: ``inference_pio.load(path)`` -> a model handle that generates text.

::

    model = inference_pio.load("path/to/checkpoint", dtype="bfloat16")
    [result] = model.generate("Once upon a time", max_tokens=32, temperature=0)
    for piece in model.stream("Hello", max_tokens=16):
        print(piece, end="")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from .engine.sampler import SamplingParams
from .engine.warmup import warm_up
from .plugin import PluginManager, TextModelPluginInterface


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
    """A loaded checkpoint: its plugin, engine and tokenizer. ``close()`` frees everything."""

    def __init__(self, plugin: TextModelPluginInterface):
        self.plugin = plugin
        self._async_engine = None

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What the plugin serves, e.g. ("text-generation", "chat", "streaming") or ("embeddings",)."""
        return tuple(self.plugin.metadata.capabilities or ())

    @property
    def is_embedding_model(self) -> bool:
        return "text-generation" not in self.capabilities and callable(getattr(self.plugin, "embed", None))

    @property
    def engine(self):
        engine = getattr(self.plugin, "engine", None)
        if engine is None:
            if self.plugin.is_loaded and self.is_embedding_model:
                raise ValueError(f"{self.plugin.metadata.name} is an embedding model: it has no generation "
                                 "engine; use embed()")
            raise RuntimeError("this model was closed")
        return engine

    @property
    def vocab_size(self) -> int:
        return int(self.plugin.config.vocab_size)

    @property
    def max_model_len(self) -> int:
        """Most tokens one request may hold (prompt + output; the input of an embedding model)."""
        if self.is_embedding_model:
            return int(self.plugin.max_seq_length)
        return int(self.engine.max_model_len)

    @property
    def embedding_dim(self) -> int:
        """Length of the vectors ``embed`` returns (embedding models)."""
        if not self.is_embedding_model:
            raise ValueError(f"{self.plugin.metadata.name} is not an embedding model")
        return int(self.plugin.embedding_dim)

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True,
                            **template_kwargs: Any) -> list[int]:
        """Token ids of ``messages`` (``[{"role": ..., "content": ...}]``) rendered with the model's chat template."""
        tokenizer = getattr(self.plugin, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("this model has no tokenizer, so no chat template")
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True,
                                             **template_kwargs)

    def embed(self, texts: str | Sequence[str], **options: Any):
        """Sentence embeddings ``[n, dim]`` (float32) from an embedding model's plugin."""
        embed = getattr(self.plugin, "embed", None)
        if embed is None:
            raise ValueError(f"{self.plugin.metadata.name} is not an embedding model")
        return embed([texts] if isinstance(texts, str) else list(texts), **options)

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


def load(path: str | Path, dtype: str = "auto", device: str = "auto", *,
         manager: PluginManager | None = None, **options: Any) -> Model:
    """Loads the checkpoint folder ``path`` with the plugin its config.json asks for.

    ``options`` go to the plugin's ``initialize`` (e.g. ``max_seq_len``, ``max_batch_size``,
    ``num_kv_blocks``, ``prefill_budget``). Raises ``ConfigError`` (no/bad config.json),
    ``NoPluginForModelError`` (listing the served model types), ``WeightLoadError``, or what else
    stopped the plugin. A generation model is warmed up before it is returned (``engine.warmup``).
    """
    manager = manager or PluginManager()
    info = manager.plugin_for_checkpoint(path)
    plugin = manager.create_plugin(info.name)
    if not plugin.initialize(model_path=str(path), dtype=dtype, device=device, **options):
        error = getattr(plugin, "init_error", None)
        if error is not None:
            raise error
        raise RuntimeError(f"plugin {info.name!r} failed to initialize {path}")
    engine = getattr(plugin, "engine", None)
    if engine is not None:  # the first request at steady speed: weights paged in, buffers built
        warm_up(engine)
    return Model(plugin)
