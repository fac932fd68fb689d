"""``Llama_Plugin``: loads a Llama-architecture checkpoint (safetensors folder or GGUF file) and serves it
through the engine."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import torch

from inference_pio.engine import PagedKVCache, SamplingParams
from inference_pio.engine.generate import GenerationEngine
from inference_pio.plugin import ModelPluginMetadata, PluginType, CheckpointPlugin
from inference_pio.tokenizer import Tokenizer
from inference_pio.weights import resolve_dtype
from inference_pio.weights.gguf_file import is_gguf_file, open_gguf

from .config import LlamaConfig
from .model import LlamaModel



def _torch_dtype(cfg: LlamaConfig) -> torch.dtype:
    # "auto" follows the checkpoint; a checkpoint that says nothing runs in float32.
    return resolve_dtype(cfg.dtype) or torch.float32


class Llama_Plugin(CheckpointPlugin):
    """Llama, TinyLlama and DeepSeek (Llama architecture) checkpoints on the paged-KV engine.

    ``initialize(model_path=..., dtype=..., device=..., num_kv_blocks=..., prefill_budget=...,
    enable_prefix_caching=True, **config_overrides)`` loads config, weights, tokenizer (when the folder
    or GGUF has one) and allocates the KV cache; on failure it returns ``False`` and keeps the exception
    in ``init_error``.
    Plugins of Llama-shaped families subclass it, naming their ``config_class`` / ``model_class`` / ``kv_cache_class``
    and passing their own metadata.
    """

    config_class: type[LlamaConfig] = LlamaConfig
    model_class: type[LlamaModel] = LlamaModel
    kv_cache_class: type[PagedKVCache] = PagedKVCache  # built with (layers, kv heads, head_dim, blocks, ...)

    def __init__(self, metadata: ModelPluginMetadata | None = None):
        super().__init__(metadata or ModelPluginMetadata(
            name="Llama", version="1.0.0", author="inference-pio",
            description="Llama-architecture decoder models on the paged-KV engine",
            plugin_type=PluginType.MODEL_COMPONENT, dependencies=["torch>=2.4", "safetensors>=0.4", "tokenizers>=0.19"],
            compatibility={"torch_version": ">=2.4", "python_version": ">=3.10", "min_memory_gb": 1.0},
            model_family="Llama", model_types=["llama"], architectures=["LlamaForCausalLM"],
            capabilities=["text-generation", "chat", "streaming"],
        ))
        self.config: LlamaConfig | None = None
        self.model: LlamaModel | None = None
        self.tokenizer: Tokenizer | None = None
        self.kv_cache: PagedKVCache | None = None
        self.engine: GenerationEngine | None = None

    # ----- lifecycle -----

    def load(self, model_path: str | Path | None = None, config: LlamaConfig | None = None,
             num_kv_blocks: int | None = None, prefill_budget: int = 512, enable_prefix_caching: bool = True,
             tensor_parallel_size: int = 1, **overrides: Any) -> None:
        """Like ``initialize`` but raises (ConfigError, WeightLoadError, ...) on failure.

        ``tensor_parallel_size > 1``: this process is one rank of an initialized ``torch.distributed``
        group of that size (see ``inference_pio.distributed.tp_serve``); it loads its shards, and only
        rank 0 gets an engine (the other ranks follow its steps)."""
        gguf = None
        if config is None:
            if model_path is None:
                raise ValueError(f"the {self.metadata.name} plugin needs model_path (a checkpoint folder or "
                                 ".gguf file) or config")
            if overrides.get("dtype") == "auto":  # let the checkpoint's torch_dtype / dtype decide
                del overrides["dtype"]
            if is_gguf_file(model_path):  # one reader serves config, weights and tokenizer
                gguf = open_gguf(model_path)
                config = self.config_class.from_gguf(gguf, **overrides)
            else:
                config = self.config_class.from_checkpoint(model_path, **overrides)
        self.config = cfg = config
        if cfg.model_path is None:
            raise ValueError(f"{type(cfg).__name__}.model_path is not set: there is no checkpoint to read weights from")
        device = torch.device("cpu" if cfg.device == "auto" and not torch.cuda.is_available()
                              else "cuda" if cfg.device == "auto" else cfg.device)
        dtype = _torch_dtype(cfg)  # a GGUF says nothing: float32 activations over its quantized weights
        self.metadata.model_family = cfg.family
        tp = _tensor_parallel(tensor_parallel_size)
        model = tp.model(self.model_class, cfg, device) if tp else self.model_class(cfg, dtype, device)
        if gguf is not None or is_gguf_file(cfg.model_path):
            gguf = gguf if gguf is not None else open_gguf(cfg.model_path)
            model.load_gguf(gguf, device)
            if "tokenizer.ggml.tokens" in gguf.metadata:
                self.tokenizer = Tokenizer.from_gguf(gguf)
        else:
            if not tp:  # a tensor-parallel model has read its shards already
                model.load_weights(cfg.model_path, device)
            folder = Path(cfg.model_path)
            if (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file():
                self.tokenizer = Tokenizer.from_pretrained(folder)
        self.model = model.eval()
        kv_dtype = dtype if cfg.kv_cache_dtype == "auto" else resolve_dtype(cfg.kv_cache_dtype)
        if num_kv_blocks is None:  # room for max_batch_size sequences of max_seq_len tokens
            num_kv_blocks = cfg.max_batch_size * -(-cfg.max_seq_len // cfg.kv_block_size)
        kv_heads = cfg.num_key_value_heads // tensor_parallel_size
        self.kv_cache = self.kv_cache_class(cfg.num_hidden_layers, kv_heads, cfg.head_dim,
                                            num_kv_blocks, cfg.kv_block_size, kv_dtype, device)
        eos = self.tokenizer.eos_token_ids if self.tokenizer is not None else cfg.eos_token_ids
        if tp and not tp.leads:
            self.is_loaded = True
            return
        stepped = tp.leader(model) if tp else model  # under TP, rank 0's steps are broadcast to the others
        self.engine = GenerationEngine(stepped, self.kv_cache, max_model_len=cfg.max_seq_len,
                                       prefill_budget=prefill_budget, max_num_seqs=cfg.max_batch_size,
                                       tokenizer=self.tokenizer, eos_token_ids=eos,
                                       enable_prefix_caching=enable_prefix_caching)
        self.is_loaded = True

    def load_model(self, config: Any = None) -> LlamaModel:
        """The loaded model; ``config`` (a ``LlamaConfig`` or a checkpoint path) loads it first."""
        if config is not None or self.model is None:
            self.load(**({"config": config} if isinstance(config, self.config_class) else {"model_path": config}))
        return self.model

    def cleanup(self) -> bool:
        """Drops weights, KV cache, buffers and tokenizer; their memory is returned."""
        if self.model is not None:
            self.model.workspace.clear()
        self.engine = self.kv_cache = self.model = self.tokenizer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.is_loaded = False
        return True

    # ----- use -----

    def _require(self) -> GenerationEngine:
        if self.engine is None:
            raise RuntimeError(f"the {self.metadata.name} plugin is not initialized (call initialize(model_path=...) first)")
        return self.engine

    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise RuntimeError("this checkpoint has no tokenizer (tokenizer.json): pass token ids instead of text")
        return self.tokenizer

    def tokenize(self, text: str, **kwargs: Any) -> list[int]:
        return self._require_tokenizer().encode(text, kwargs.get("add_special_tokens", True))

    def detokenize(self, token_ids: Any, **kwargs: Any) -> str:
        return self._require_tokenizer().decode(list(token_ids), kwargs.get("skip_special_tokens", True))

    def infer(self, data: Any) -> Any:
        """Token ids (list of ints) or a prompt string -> logits ``[vocab]`` of the next token (float32)."""
        engine = self._require()
        ids = self.tokenize(data) if isinstance(data, str) else [int(t) for t in data]
        if not ids or len(ids) > engine.max_model_len:
            raise ValueError(f"infer needs 1..{engine.max_model_len} tokens, got {len(ids)}")
        cache, seq = self.kv_cache, object()
        try:
            cache.allocate(seq, len(ids))
            meta = cache.build_metadata([seq], [len(ids)])
            device = cache.device
            ids_t = torch.tensor(ids, dtype=torch.int64, device=device)
            pos = torch.arange(len(ids), dtype=torch.int64, device=device)
            return self.model(ids_t, pos, meta, cache.key_caches, cache.value_caches)[0].float().clone()
        finally:
            if seq in cache:
                cache.free(seq)

    def generate_text(self, prompt: str, max_new_tokens: int = 512, **kwargs: Any) -> str:
        params = SamplingParams(max_tokens=max_new_tokens, **kwargs)
        return self._require().generate([self.tokenize(prompt)], params)[0].output_text


def _tensor_parallel(size: int):
    """The tensor-parallel hooks for ``size`` ranks, or None for one process."""
    if size == 1:
        return None
    from inference_pio.distributed.tp_serve import TensorParallelRank

    return TensorParallelRank(size)


def create_llama_plugin() -> Llama_Plugin:
    """Factory named in plugin_manifest.json."""
    return Llama_Plugin()
