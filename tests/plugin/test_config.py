"""BaseConfig: validation with clear messages, and building from a transformers config.json."""

import json
from dataclasses import dataclass

import pytest

from inference_pio.plugin import BaseConfig, ConfigError


@dataclass(kw_only=True)
class TinyConfig(BaseConfig):
    hidden_size: int  # no default: allowed after BaseConfig's fields thanks to kw_only
    rms_norm_eps: float = 1e-6
    rope_scaling: dict | None = None
    tie_word_embeddings: bool = False

    config_aliases = {**BaseConfig.config_aliases, "n_embd": "hidden_size"}


HF_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "rms_norm_eps": 1, "rope_scaling": {"rope_type": "llama3", "factor": 8.0},
    "torch_dtype": "bfloat16", "tie_word_embeddings": True, "num_key_value_heads": 2,
}


def test_from_pretrained_config_maps_known_keys_and_ignores_others():
    config = TinyConfig.from_pretrained_config(HF_CONFIG, max_seq_len=128)
    assert config.hidden_size == 64 and config.tie_word_embeddings is True
    assert config.rope_scaling == {"rope_type": "llama3", "factor": 8.0}
    assert config.dtype == "bfloat16"  # from torch_dtype through config_aliases
    assert config.max_seq_len == 128
    assert isinstance(config.rms_norm_eps, float)  # JSON's 1 becomes 1.0


def test_aliases_and_own_names():
    assert TinyConfig.from_pretrained_config({"n_embd": 32}).hidden_size == 32
    assert TinyConfig.from_pretrained_config({"n_embd": 32, "hidden_size": 16}).hidden_size == 16


def test_from_checkpoint_reads_config_json(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(HF_CONFIG))
    config = TinyConfig.from_checkpoint(tmp_path)
    assert config.model_path == str(tmp_path) and config.hidden_size == 64


def test_from_checkpoint_without_config_json_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config.json: no such file"):
        TinyConfig.from_checkpoint(tmp_path)


def test_unknown_override_is_refused():
    with pytest.raises(ConfigError, match=r"no field\(s\) \['hiden_size'\]"):
        TinyConfig.from_dict({"hidden_size": 8}, hiden_size=4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden_size": "64"}, "TinyConfig.hidden_size must be int, got str '64'"),
        ({"hidden_size": True}, "TinyConfig.hidden_size must be int, got bool"),
        ({"hidden_size": 8, "rms_norm_eps": "1e-5"}, "rms_norm_eps must be float"),
        ({"hidden_size": 8, "dtype": "int8"}, "TinyConfig.dtype must be one of auto, float32"),
        ({"hidden_size": 8, "device": "gpu"}, "TinyConfig.device must be"),
        ({"hidden_size": 8, "max_seq_len": 0}, "TinyConfig.max_seq_len must be positive, got 0"),
        ({"hidden_size": 8, "kv_block_size": 12}, "kv_block_size must be a power of two, got 12"),
        ({"hidden_size": 8, "seed": 1.5}, "TinyConfig.seed must be int or None"),
    ],
)
def test_invalid_values_name_the_field(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        TinyConfig(**kwargs)


def test_dtype_spellings_are_normalized():
    assert TinyConfig(hidden_size=8, dtype="torch.float16", kv_cache_dtype="bf16").dtype == "float16"
    assert TinyConfig(hidden_size=8, kv_cache_dtype="bf16").kv_cache_dtype == "bfloat16"
