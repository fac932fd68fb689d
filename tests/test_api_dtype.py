"""``inference_pio.load(..., dtype=...)`` takes torch dtypes as transformers users pass them, as well as
the strings; anything else is refused by name before a file is read."""

from __future__ import annotations

import pytest
import torch

import inference_pio
from inference_pio.plugin import BaseConfig, ConfigError
from inference_pio.plugin.config import dtype_name

pytest.importorskip("transformers")

from tests.llama.checkpoints import hf_model, write_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("tiny"), hf_model(num_hidden_layers=1))


@pytest.mark.parametrize("given, stored", [
    (torch.bfloat16, torch.bfloat16), ("bfloat16", torch.bfloat16), ("torch.bfloat16", torch.bfloat16),
    (torch.float16, torch.float16), ("fp16", torch.float16), (torch.float32, torch.float32),
])
def test_load_takes_torch_dtypes_and_their_names(checkpoint, given, stored):
    model = inference_pio.load(checkpoint, dtype=given, max_seq_len=64, max_batch_size=1)
    try:
        assert model.plugin.config.dtype == str(stored).removeprefix("torch.")
        assert {p.dtype for p in model.plugin.model.parameters() if p.is_floating_point()} == {stored}
        [result] = model.generate([1, 2, 3], max_tokens=2, temperature=0)
        assert len(result.token_ids) == 2
    finally:
        model.close()


@pytest.mark.parametrize("bad, message", [
    (torch.int8, "dtype must be one of auto, float32, float16, bfloat16 .*got torch.int8"),
    ("int4", "dtype must be one of auto, float32, float16, bfloat16 .*got 'int4'"),
    (32, "dtype must be a str or a torch.dtype .*got int 32"),
])
def test_load_refuses_other_dtypes_by_name_before_reading_files(tmp_path, bad, message):
    with pytest.raises(ConfigError, match=message):
        inference_pio.load(tmp_path / "does-not-exist", dtype=bad)


def test_plugin_configs_take_torch_dtypes():
    config = BaseConfig(dtype=torch.bfloat16, kv_cache_dtype=torch.float16)
    assert (config.dtype, config.kv_cache_dtype) == ("bfloat16", "float16")
    assert dtype_name(torch.float32) == "float32" and dtype_name("half") == "float16" and dtype_name("auto") == "auto"
    with pytest.raises(ConfigError, match="BaseConfig.dtype must be one of .*got torch.float64"):
        BaseConfig(dtype=torch.float64)
