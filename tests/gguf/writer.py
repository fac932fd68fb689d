"""Writing a transformers Llama model to GGUF the way llama.cpp's converter does, for tests.

Q and K rows are permuted as ``convert_hf_to_gguf.py`` permutes them; matrices are stored in the
requested ggml type (quantized with ``gguf.quants.quantize``), norms in F32; the tokenizer goes in as
``tokenizer.ggml.*`` metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.engine.tiny_tokenizers import byte_level_bpe, sentencepiece_bpe

_NAMES = {"embed_tokens": "token_embd", "norm": "output_norm", "input_layernorm": "attn_norm",
          "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
          "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_name(hf_name: str) -> str:
    """``model.layers.0.self_attn.q_proj.weight`` -> ``blk.0.attn_q.weight``."""
    stem, _, kind = hf_name.rpartition(".")
    if stem == "lm_head":
        return f"output.{kind}"
    stem = stem.removeprefix("model.")
    if stem.startswith("layers."):
        _, layer, part = stem.split(".", 2)
        return f"blk.{layer}.{_NAMES[part]}.{kind}"
    return f"{_NAMES[stem]}.{kind}"


def permute_qk(w: np.ndarray, heads: int) -> np.ndarray:
    """The converter's permutation (llama.cpp's rotary layout), applied to rows."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, hf, *, qtype: str = "F32", overrides: dict[str, str] | None = None,
               tokenizer: str | None = "gpt2", arch: str = "llama") -> Path:
    """Writes ``hf`` (a transformers ``LlamaForCausalLM``) to ``path``.

    ``qtype``: ggml type of every matrix (F32, F16, Q8_0, Q4_0, Q4_1); ``overrides`` maps a GGUF tensor
    name suffix (``attn_v.weight``) to another type. ``tokenizer``: "gpt2" (byte-level BPE), "llama"
    (SentencePiece BPE with scores, no merges) or None. A tied model gets no ``output.weight``.
    """
    import gguf

    cfg = hf.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny-llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    if tokenizer is not None:
        _add_tokenizer(writer, tokenizer)
    for name, tensor in hf.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        data = tensor.detach().float().numpy()
        if name.endswith("q_proj.weight"):
            data = permute_qk(data, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = permute_qk(data, cfg.num_key_value_heads)
        target = gguf_name(name)
        kind = "F32" if data.ndim == 1 else next((q for s, q in (overrides or {}).items() if target.endswith(s)), qtype)
        _add_tensor(writer, target, data, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# K-quant blocks: (bytes per 256 values, byte offsets of their fp16 super-block scales).
_K_QUANTS = {"Q4_K": (144, (0, 2)), "Q6_K": (210, (208,))}


def _add_tensor(writer, name: str, data: np.ndarray, kind: str) -> None:
    import gguf
    from gguf.quants import quantize

    if kind in ("F32", "F16"):
        writer.add_tensor(name, data.astype(np.float32 if kind == "F32" else np.float16))
        return
    qtype = gguf.GGMLQuantizationType[kind]
    if kind in _K_QUANTS:  # gguf cannot quantize to K-quants: random blocks with sane scales instead
        writer.add_tensor(name, random_k_blocks(kind, data.shape, seed=len(name)), raw_dtype=qtype)
        return
    writer.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)


def random_k_blocks(kind: str, shape: tuple[int, int], seed: int) -> np.ndarray:
    """uint8 ``[rows, cols / 256 * block_bytes]`` of random K-quant blocks whose fp16 scales are small
    finite numbers (random bytes there could be NaN or huge)."""
    block_bytes, scale_offsets = _K_QUANTS[kind]
    rows, cols = shape
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (rows, cols // 256, block_bytes), dtype=np.uint8)
    for offset in scale_offsets:
        scales = rng.uniform(5e-5, 2e-4, (rows, cols // 256)).astype(np.float16)  # weights ~0.1
        blocks[..., offset:offset + 2] = scales.view(np.uint8).reshape(rows, cols // 256, 2)
    return blocks.reshape(rows, -1)


def _add_tokenizer(writer, kind: str) -> None:
    if kind == "gpt2":
        spec = json.loads(byte_level_bpe(400).to_str())
        specials = {t["content"] for t in spec["added_tokens"]}
        vocab = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
        tokens = [t for t, _ in vocab]
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types([3 if t in specials else 1 for t in tokens])
        writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
        writer.add_bos_token_id(tokens.index("<s>"))
        writer.add_eos_token_id(tokens.index("<|endoftext|>"))
        writer.add_add_bos_token(False)
        writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    elif kind == "llama":
        spec = json.loads(sentencepiece_bpe(300).to_str())
        tokens = [t for t, _ in sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])]
        types = [2 if t == "<unk>" else 3 if t in ("<s>", "</s>") else 6 if t.startswith("<0x") else 1 for t in tokens]
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores([-float(i) for i in range(len(tokens))])
        writer.add_token_types(types)
        writer.add_bos_token_id(tokens.index("<s>"))
        writer.add_eos_token_id(tokens.index("</s>"))
        writer.add_unk_token_id(tokens.index("<unk>"))
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
