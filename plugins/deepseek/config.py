"""``DeepSeekConfig``: the DeepSeek-V2 / V3 architecture's fields, read from a checkpoint's config.json."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from inference_pio.layers.rope_parameters import rope_theta_and_scaling
from inference_pio.plugin import BaseConfig, ConfigError

MODEL_TYPES = ("deepseek_v2", "deepseek_v3")
V2_TOPK_METHODS = ("greedy", "group_limited_greedy")
# The field defaults are transformers' DeepseekV2Config's; these are DeepseekV3Config's where they differ
# (used for keys a deepseek_v3 config.json leaves out).
V3_DEFAULTS = dict(vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
                   num_hidden_layers=61, num_attention_heads=128, n_shared_experts=1, n_routed_experts=256,
                   routed_scaling_factor=2.5, n_group=8, topk_group=4, num_experts_per_tok=8,
                   first_k_dense_replace=3, norm_topk_prob=True, max_position_embeddings=4096)


@dataclass(kw_only=True)
class DeepSeekConfig(BaseConfig):
    """DeepSeek-V2 (-Lite) / V2.5 / V3 hyper-parameters, as transformers' ``DeepseekV2Config`` /
    ``DeepseekV3Config`` name them.

    Attention is multi-head latent attention: keys and values come from a ``kv_lora_rank`` latent
    plus a ``qk_rope_head_dim`` rope key shared by all heads (that pair is what the KV cache holds);
    queries come from ``q_proj`` or, with ``q_lora_rank``, from a normed low-rank ``q_a``/``q_b`` pair.
    Layer ``i`` is mixture-of-experts when ``i >= first_k_dense_replace`` and ``i % moe_layer_freq
    == 0``, else a dense gated MLP. Routing follows transformers: V2 scores with a softmax and picks
    greedily (optionally within the best ``topk_group`` of ``n_group`` groups); V3 scores with a
    sigmoid, adds ``e_score_correction_bias`` for the choice only, ranks groups by their two best
    scores and renormalizes with ``norm_topk_prob``. Both scale by ``routed_scaling_factor``.
    (transformers' V2 ignores ``norm_topk_prob``, and so do we.)
    """

    model_type: str = "deepseek_v2"
    vocab_size: int = 102400
    hidden_size: int = 4096
    intermediate_size: int = 11008
    moe_intermediate_size: int = 1407
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    q_lora_rank: int | None = 1536
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    n_routed_experts: int | None = 64
    n_shared_experts: int | None = 2
    num_experts_per_tok: int | None = 6
    routed_scaling_factor: float = 1.0
    topk_method: str | None = "greedy"
    scoring_func: str | None = None
    n_group: int | None = None
    topk_group: int | None = None
    norm_topk_prob: bool | None = False
    first_k_dense_replace: int | None = 0
    moe_layer_freq: int = 1
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    rope_parameters: dict | None = None
    rope_interleave: bool | None = True
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list | None = None
    quantization_config: dict | None = None
    name_or_path: str = ""

    config_aliases: ClassVar[dict[str, str]] = {**BaseConfig.config_aliases, "_name_or_path": "name_or_path"}

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"{name}.model_type must be one of {', '.join(MODEL_TYPES)}, got {self.model_type!r}")
        if self.quantization_config:
            method = self.quantization_config.get("quant_method", "?")
            raise ConfigError(f"{name}: quantized checkpoints ({method!r} quantization_config) are not supported; "
                              f"use a bfloat16 / float16 / float32 copy of the weights")
        if self.hidden_act != "silu":
            raise ConfigError(f"{name}.hidden_act must be 'silu' (the gated MLP's activation), got {self.hidden_act!r}")
        self.rope_theta, self.rope_scaling = rope_theta_and_scaling(self.rope_theta, self.rope_scaling,
                                                                    self.rope_parameters)
        self.first_k_dense_replace = self.first_k_dense_replace or 0
        if self.moe_layer_freq < 1:
            raise ConfigError(f"{name}.moe_layer_freq must be >= 1, got {self.moe_layer_freq}")
        if self.n_routed_experts:
            self._check_routing(name)
        # Never serve past the positions the model was built for.
        self.max_seq_len = min(self.max_seq_len, self.max_position_embeddings)

    def _check_routing(self, name: str) -> None:
        if not self.num_experts_per_tok or self.num_experts_per_tok > self.n_routed_experts:
            raise ConfigError(f"{name}.num_experts_per_tok must be in [1, n_routed_experts={self.n_routed_experts}], "
                              f"got {self.num_experts_per_tok}")
        scoring = "sigmoid" if self.is_v3 else "softmax"
        if self.scoring_func not in (None, scoring):  # the original configs name it; transformers assumes it
            raise ConfigError(f"{name}.scoring_func must be {scoring!r} for {self.model_type}, got {self.scoring_func!r}")
        if self.model_type == "deepseek_v2" and self.topk_method not in V2_TOPK_METHODS:
            raise ConfigError(f"{name}.topk_method must be one of {', '.join(V2_TOPK_METHODS)} for DeepSeek-V2, "
                              f"got {self.topk_method!r}")
        if self.uses_groups:
            if not self.n_group or self.n_routed_experts % self.n_group:
                raise ConfigError(f"{name}.n_routed_experts ({self.n_routed_experts}) must be a multiple of "
                                  f"n_group ({self.n_group})")
            if not self.topk_group or self.topk_group > self.n_group:
                raise ConfigError(f"{name}.topk_group must be in [1, n_group={self.n_group}], got {self.topk_group}")
            if self.num_experts_per_tok > self.topk_group * (self.n_routed_experts // self.n_group):
                raise ConfigError(f"{name}.num_experts_per_tok ({self.num_experts_per_tok}) exceeds the experts of "
                                  f"topk_group ({self.topk_group}) groups")

    # ----- derived values -----

    @property
    def is_v3(self) -> bool:
        return self.model_type == "deepseek_v3"

    @property
    def uses_groups(self) -> bool:
        """V3 always ranks groups (its ``n_group`` may be 1); V2 only with ``group_limited_greedy``."""
        return self.is_v3 or self.topk_method == "group_limited_greedy"

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """One cached row per token and layer: the rope key then the latent."""
        return self.qk_rope_head_dim + self.kv_lora_rank

    # The engine sees the latent cache as multi-query attention: one kv head of latent_dim.
    @property
    def num_key_value_heads(self) -> int:
        return 1

    @property
    def head_dim(self) -> int:
        return self.latent_dim

    @property
    def rope_is_neox(self) -> bool:
        """V2 rotates interleaved pairs (GPT-J layout); V3 too unless ``rope_interleave`` is false."""
        return self.is_v3 and not self.rope_interleave

    @property
    def softmax_scale(self) -> float:
        """``qk_head_dim ** -0.5``, times YaRN's ``mscale(factor, mscale_all_dim) ** 2`` when set
        (DeepSeek scales the non-rotary dims too: transformers' ``yarn_apply_mscale``)."""
        scale = self.qk_head_dim ** -0.5
        scaling = self.rope_scaling or {}
        mscale_all_dim = scaling.get("mscale_all_dim")
        factor = scaling.get("factor") or 1.0
        if mscale_all_dim and factor > 1:
            mscale = 0.1 * mscale_all_dim * math.log(factor) + 1.0
            scale *= mscale * mscale
        return scale

    def is_moe_layer(self, i: int) -> bool:
        return bool(self.n_routed_experts) and i >= self.first_k_dense_replace and i % self.moe_layer_freq == 0

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        ids = self.eos_token_id
        return () if ids is None else (ids,) if isinstance(ids, int) else tuple(ids)

    @property
    def family(self) -> str:
        return "DeepSeek"

    @classmethod
    def from_gguf(cls, gguf: Any, **overrides: Any) -> "DeepSeekConfig":
        """Not supported yet: the plugin reads safetensors checkpoints (a clear error instead of a
        missing method when ``DecoderPlugin.load`` is handed a ``.gguf`` file)."""
        raise ConfigError("DeepSeek-V2/V3 GGUF files are not supported yet; load the safetensors checkpoint folder")

    @classmethod
    def from_pretrained_config(cls, config_json: dict[str, Any], **overrides: Any) -> "DeepSeekConfig":
        if config_json.get("model_type") not in MODEL_TYPES:
            raise ConfigError(f"not a DeepSeek-V2/V3 checkpoint: model_type {config_json.get('model_type')!r}, "
                              f"architectures {config_json.get('architectures')}")
        if config_json["model_type"] == "deepseek_v3":
            config_json = {**V3_DEFAULTS, **config_json}
        return super().from_pretrained_config(config_json, **overrides)
