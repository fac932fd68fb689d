"""``Bert_Plugin``: sentence embeddings from a BERT-architecture checkpoint (sentence-transformers layout)."""

from __future__ import annotations

import gc
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from inference_pio.plugin import CheckpointPlugin, ConfigError, ModelPluginMetadata
from inference_pio.plugin.manifest import plugin_metadata
from inference_pio.tokenizer import Tokenizer
from inference_pio.weights import resolve_dtype

from .config import BertConfig
from .model import BertModel
from .pooling import l2_normalize, pool_packed
from .sentence_config import SentenceEmbeddingConfig
from .text_encoder import TextEncoder


class Bert_Plugin(CheckpointPlugin):
    """BERT, MiniLM, BGE, E5 ... sentence-embedding checkpoints: ``embed(texts) -> [n, dim]``.

    ``initialize(model_path=..., dtype=..., device=..., **config_overrides)`` loads config.json,
    the sentence-transformers files (pooling, normalization, max_seq_length), the weights and
    tokenizer.json; on failure it returns ``False`` and keeps the exception in ``init_error``.
    An encoder has no generation engine: ``generate_text`` raises ``NotImplementedError``.
    """

    config_class = BertConfig

    def __init__(self, metadata: ModelPluginMetadata | None = None):
        super().__init__(metadata or plugin_metadata(__file__))  # the manifest is the one description
        self.config: BertConfig | None = None
        self.sentence_config: SentenceEmbeddingConfig | None = None
        self.model: BertModel | None = None
        self.tokenizer: Tokenizer | None = None
        self.text_encoder: TextEncoder | None = None
        self.device: torch.device | None = None

    # ----- lifecycle -----

    def load(self, model_path: str | Path | None = None, config: BertConfig | None = None,
             num_kv_blocks: int | None = None, prefill_budget: int | None = None, **overrides: Any) -> None:
        """Like ``initialize`` but raises (ConfigError, WeightLoadError, FileNotFoundError ...) on failure.

        ``num_kv_blocks`` / ``prefill_budget`` (generation-engine options that callers may pass to
        every model) are accepted and ignored: an encoder has no KV cache.
        """
        if config is None:
            if model_path is None:
                raise ValueError("the Bert plugin needs model_path (a checkpoint folder) or config")
            if Path(model_path).is_file():
                raise ConfigError(f"{model_path}: the Bert plugin reads a checkpoint folder (config.json, "
                                  "model.safetensors, tokenizer.json), not a single file such as a GGUF")
            if overrides.get("dtype") == "auto":  # let the checkpoint's torch_dtype / dtype decide
                del overrides["dtype"]
            config = BertConfig.from_checkpoint(model_path, **overrides)
        if config.model_path is None:
            raise ValueError("BertConfig.model_path is not set: there is no checkpoint to read weights from")
        folder = Path(config.model_path)
        sentence = SentenceEmbeddingConfig.from_folder(folder)
        tokenizer = Tokenizer.from_pretrained(folder)
        # sentence_bert_config.json's length, never past the positions the model has (nor a smaller max_seq_len).
        max_length = min(sentence.max_seq_length or config.max_seq_len, config.max_seq_len)
        text_encoder = TextEncoder(tokenizer, max_length)
        device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available()
                              else "cpu" if config.device == "auto" else config.device)
        model = BertModel(config, resolve_dtype(config.dtype) or torch.float32)
        model.load_weights(folder, device)
        self.config, self.sentence_config, self.device = config, sentence, device
        self.model, self.tokenizer, self.text_encoder = model.eval(), tokenizer, text_encoder
        self.is_loaded = True

    def load_model(self, config: Any = None) -> BertModel:
        """The loaded model; ``config`` (a ``BertConfig`` or a checkpoint path) loads it first."""
        if config is not None or self.model is None:
            self.load(**({"config": config} if isinstance(config, BertConfig) else {"model_path": config}))
        return self.model

    def cleanup(self) -> bool:
        """Drops weights and tokenizer; their memory is returned."""
        self.model = self.tokenizer = self.text_encoder = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.is_loaded = False
        return True

    # ----- what the model is -----

    @property
    def embedding_dim(self) -> int:
        """Length of each vector ``embed`` returns (hidden size times the number of pooling modes)."""
        self._require()
        return self.config.hidden_size * len(self.sentence_config.pooling_modes)

    @property
    def max_seq_length(self) -> int:
        """Tokens of a text the model reads (special tokens included); the rest is cut off."""
        return self._require().max_length

    def _require(self) -> TextEncoder:
        if self.model is None or self.text_encoder is None:
            raise RuntimeError("the Bert plugin is not initialized (call initialize(model_path=...) first)")
        return self.text_encoder

    # ----- use -----

    def tokenize(self, text: str, **kwargs: Any) -> list[int]:
        """Token ids of ``text`` (``add_special_tokens=True``; ``truncation=True`` cuts to ``max_seq_length``)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._require().encode(text, kwargs.get("add_special_tokens", True), kwargs.get("truncation", False))

    def detokenize(self, token_ids: Any, **kwargs: Any) -> str:
        self._require()
        return self.tokenizer.decode(list(token_ids), kwargs.get("skip_special_tokens", True))

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Sentence embeddings ``[len(texts), embedding_dim]`` float32 on the CPU, in input order.

        Each text is stripped (and lower-cased when sentence_bert_config.json says so), tokenized,
        cut to ``max_seq_length`` tokens, run through the encoder ``batch_size`` texts at a time,
        pooled and (when the model has a Normalize module) scaled to unit length.
        """
        encoder = self._require()
        texts = _check_texts(texts)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        lower = self.sentence_config.do_lower_case
        ids = encoder.encode_batch([t.strip().lower() if lower else t.strip() for t in texts])
        empty = next((i for i, seq in enumerate(ids) if not seq), None)
        if empty is not None:  # only a tokenizer that adds no special tokens gets here
            raise ValueError(f"texts[{empty}] ({texts[empty]!r}) gives no tokens to embed")
        with torch.inference_mode():
            return torch.cat([self._embed_ids(ids[i:i + batch_size]) for i in range(0, len(ids), batch_size)])

    def _embed_ids(self, batch: list[list[int]]) -> torch.Tensor:
        """One packed forward over ``batch`` (token-id lists) -> ``[len(batch), dim]`` float32 CPU."""
        hidden, cu_seqlens = self.hidden_states(batch)
        vectors = pool_packed(hidden, cu_seqlens, self.sentence_config.pooling_modes)
        if self.sentence_config.normalize:
            vectors = l2_normalize(vectors)
        return vectors.cpu()

    def hidden_states(self, batch: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states of token-id sequences, packed: ``([T, hidden] model dtype, cu_seqlens [B+1] int32)``."""
        self._require()
        lens = torch.tensor([len(seq) for seq in batch], dtype=torch.int32)
        if lens.numel() == 0 or int(lens.min()) == 0 or int(lens.max()) > self.config.max_position_embeddings:
            raise ValueError(f"each sequence needs 1..{self.config.max_position_embeddings} tokens, "
                             f"got lengths {lens.tolist()}")
        cu_seqlens = torch.zeros(len(batch) + 1, dtype=torch.int32)
        torch.cumsum(lens, 0, out=cu_seqlens[1:])
        total = int(cu_seqlens[-1])
        positions = torch.arange(total) - torch.repeat_interleave(cu_seqlens[:-1].long(), lens, output_size=total)
        input_ids = torch.tensor(list(itertools.chain.from_iterable(batch)), dtype=torch.int64)
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got {int(input_ids.min())}.."
                             f"{int(input_ids.max())}")
        d = self.device
        hidden = self.model(input_ids.to(d), positions.to(d), cu_seqlens.to(d), int(lens.max()))
        return hidden, cu_seqlens.to(d)

    def infer(self, data: Any) -> Any:
        """A text -> its vector ``[dim]``; a list of texts -> ``embed(texts)``; a list of token ids ->
        the last hidden states ``[T, hidden]`` float32 (no pooling)."""
        if isinstance(data, str):
            return self.embed([data])[0]
        if isinstance(data, Sequence) and data and all(isinstance(t, int) and not isinstance(t, bool) for t in data):
            with torch.inference_mode():
                return self.hidden_states([list(data)])[0].float().cpu()
        return self.embed(data)

    def generate_text(self, prompt: str, max_new_tokens: int = 512, **kwargs: Any) -> str:
        raise NotImplementedError(f"{self.metadata.name} is an embedding (encoder) model: it cannot generate text; "
                                  "use embed(texts) for sentence vectors")


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of str, got one str (wrap a single text in a list)")
    if not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of str, got {type(texts).__name__}")
    if not texts:
        raise ValueError("texts is empty: nothing to embed")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts[{bad}] must be a str, got {type(texts[bad]).__name__} {texts[bad]!r}")
    return list(texts)


def create_bert_plugin() -> Bert_Plugin:
    """Factory named in plugin_manifest.json."""
    return Bert_Plugin()
