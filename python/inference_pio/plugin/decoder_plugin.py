"""``DecoderPlugin``: loads a decoder checkpoint (safetensors folder or GGUF file) and serves it on the engine.

Every Llama-family plugin is this base naming its ``config_class`` (and, when it has modules of its
own, its ``model_class`` / ``kv_cache_class``); its metadata is its own ``plugin_manifest.json``.
Loading reads the config, picks the device, loads weights and tokenizer, sizes the paged KV cache
and builds the ``GenerationEngine``; under tensor parallelism the rank's shards come from the
``distributed`` hooks instead.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

import torch

from ..engine import PagedKVCache, SamplingParams
from ..engine.generate import GenerationEngine
from ..layers.decoder import DecoderModel
from ..tokenizer import Tokenizer
from ..weights import resolve_dtype
from ..weights.gguf_file import is_gguf_file, open_gguf
from .decoder_config import DecoderConfig
from .interface import CheckpointPlugin, ModelPluginMetadata
from .manifest import MANIFEST_FILENAME, load_manifest


class DecoderPlugin(CheckpointPlugin):
    """A decoder checkpoint on the paged-KV engine.

    ``initialize(model_path=..., dtype=..., device=..., num_kv_blocks=..., prefill_budget=...,
    enable_prefix_caching=True, **config_overrides)`` loads config, weights, tokenizer (when the folder
    or GGUF has one) and allocates the KV cache; on failure it returns ``False`` and keeps the exception
    in ``init_error``. Attributes the services use: ``engine``, ``tokenizer``, ``config``, ``model``,
    ``kv_cache``.
    """

    config_class: type[DecoderConfig] = DecoderConfig
    model_class: type[torch.nn.Module] = DecoderModel
    kv_cache_class: type[PagedKVCache] = PagedKVCache  # built with (layers, kv heads, head_dim, blocks, ...)

    def __init__(self, metadata: ModelPluginMetadata | None = None):
        super().__init__(metadata or self.manifest_metadata())
        self.config: DecoderConfig | None = None
        self.model: torch.nn.Module | None = None
        self.tokenizer = None
        self.kv_cache: PagedKVCache | None = None
        self.engine: GenerationEngine | None = None

    @classmethod
    def manifest_metadata(cls) -> ModelPluginMetadata:
        """The metadata of ``plugin_manifest.json`` beside the module that defines ``cls``."""
        module_file = getattr(sys.modules.get(cls.__module__), "__file__", None)
        if module_file is None:
            raise TypeError(f"{cls.__name__}: no plugin folder to read {MANIFEST_FILENAME} from; pass metadata")
        return load_manifest(Path(module_file).with_name(MANIFEST_FILENAME)).to_metadata()

    # ----- lifecycle -----

    def load(self, model_path: str | Path | None = None, config: DecoderConfig | None = None,
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
        if gguf is None and is_gguf_file(cfg.model_path):
            gguf = open_gguf(cfg.model_path)
        device = torch.device("cpu" if cfg.device == "auto" and not torch.cuda.is_available()
                              else "cuda" if cfg.device == "auto" else cfg.device)
        dtype = resolve_dtype(cfg.dtype) or torch.float32  # a GGUF says nothing: float32 over its quantized weights
        if cfg.family:
            self.metadata.model_family = cfg.family
        tp = _tensor_parallel(tensor_parallel_size)
        self.model = self._load_model(cfg, dtype, device, gguf, tp).eval()
        self.tokenizer = _tokenizer(cfg.model_path, gguf)
        self.kv_cache = self._kv_cache(cfg, dtype, device, num_kv_blocks, tensor_parallel_size)
        if tp and not tp.leads:
            self.is_loaded = True
            return
        eos = self.tokenizer.eos_token_ids if self.tokenizer is not None else cfg.eos_token_ids
        stepped = tp.leader(self.model) if tp else self.model  # under TP, rank 0's steps are broadcast to the others
        self.engine = GenerationEngine(stepped, self.kv_cache, max_model_len=cfg.max_seq_len,
                                       prefill_budget=prefill_budget, max_num_seqs=cfg.max_batch_size,
                                       tokenizer=self.tokenizer, eos_token_ids=eos,
                                       enable_prefix_caching=enable_prefix_caching)
        self.is_loaded = True

    def _load_model(self, cfg: DecoderConfig, dtype: torch.dtype, device: torch.device, gguf, tp) -> torch.nn.Module:
        """The model with its weights: this rank's shards under tensor parallelism, else the whole checkpoint."""
        if tp:
            return tp.model(self.model_class, cfg, device, gguf=gguf)
        model = self.model_class(cfg, dtype, device)
        if gguf is not None:
            model.load_gguf(gguf, device)
        else:
            model.load_weights(cfg.model_path, device)
        return model

    def _kv_cache(self, cfg: DecoderConfig, dtype: torch.dtype, device: torch.device, num_kv_blocks: int | None,
                  tensor_parallel_size: int) -> PagedKVCache:
        kv_dtype = dtype if cfg.kv_cache_dtype == "auto" else resolve_dtype(cfg.kv_cache_dtype)
        if num_kv_blocks is None:  # room for max_batch_size sequences of max_seq_len tokens
            num_kv_blocks = cfg.max_batch_size * -(-cfg.max_seq_len // cfg.kv_block_size)
        kv_heads = cfg.num_key_value_heads // tensor_parallel_size
        return self.kv_cache_class(cfg.num_hidden_layers, kv_heads, cfg.head_dim, num_kv_blocks, cfg.kv_block_size,
                                   kv_dtype, device)

    def load_model(self, config: Any = None) -> torch.nn.Module:
        """The loaded model; ``config`` (a config instance or a checkpoint path) loads it first."""
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

    def _require_tokenizer(self):
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


def _tokenizer(model_path: str, gguf):
    """The checkpoint's tokenizer (a GGUF's own vocabulary, or tokenizer.json / tokenizer.model beside the
    weights), or None when it has none."""
    if gguf is not None:
        return Tokenizer.from_gguf(gguf) if "tokenizer.ggml.tokens" in gguf.metadata else None
    folder = Path(model_path)
    if (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file():
        return Tokenizer.from_pretrained(folder)
    return None


def _tensor_parallel(size: int):
    """The tensor-parallel hooks for ``size`` ranks, or None for one process."""
    if size == 1:
        return None
    from ..distributed.tp_serve import TensorParallelRank

    return TensorParallelRank(size)
