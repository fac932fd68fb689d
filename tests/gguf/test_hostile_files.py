"""Hostile GGUF files (``hostile.py``): each attack gives its named, one-line error before anything
is built, or (optional token ids that are wrong) loads with the token absent; never a crash."""

from __future__ import annotations

import pytest

from inference_pio.plugin import ConfigError
from inference_pio.plugins.llama import Llama_Plugin
from inference_pio.weights import WeightLoadError

from .hostile import ATTACKS, CONFIG, LOADS, WEIGHTS, read_spec, truncations, write_base

ERRORS = {WEIGHTS: WeightLoadError, CONFIG: ConfigError}
MAX_MESSAGE = 600  # characters: one line naming file, key and value, never the value whole


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return read_spec(write_base(tmp_path_factory.mktemp("hostile") / "base.gguf"))


def load(path):
    plugin = Llama_Plugin()
    plugin.load(model_path=path, max_seq_len=64, max_batch_size=1, num_kv_blocks=4)
    return plugin


def assert_named_error(path, kind: str, pattern: str):
    with pytest.raises(ERRORS[kind], match=pattern) as info:
        load(path)
    message = str(info.value)
    assert type(info.value) is ERRORS[kind] or issubclass(type(info.value), ERRORS[kind])
    assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < MAX_MESSAGE, message[:2000]


def test_the_base_file_re_encoded_loads_and_generates(base, tmp_path):
    path = tmp_path / "base.gguf"
    path.write_bytes(base.encode())
    plugin = load(path)
    assert plugin.tokenizer.bos_token_id == 3 and plugin.tokenizer.eos_token_ids[0] == 0  # <s>, <|endoftext|>
    assert len(plugin.generate_text("Hello", max_new_tokens=3, temperature=0, ignore_eos=True)) > 0
    plugin.cleanup()


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_gives_its_named_error(base, tmp_path, name):
    data, kind, pattern = ATTACKS[name](base)
    path = tmp_path / "attack.gguf"
    path.write_bytes(data)
    if kind == LOADS:  # an optional token id that is missing or wrong: absent, not an error
        plugin = load(path)
        which = "bos" if "bos" in name else "eos"
        if which == "bos":
            assert plugin.tokenizer.bos_token_id is None and plugin.config.bos_token_id is None
        else:
            assert plugin.config.eos_token_id is None
            assert all(0 <= i < 400 for i in plugin.tokenizer.eos_token_ids)
        plugin.cleanup()
        return
    assert_named_error(path, kind, pattern)


def test_truncation_in_every_section_names_the_file(base, tmp_path):
    cuts = truncations(base)
    assert len(cuts) > 60  # every metadata entry and tensor info is cut once
    for where, data in cuts.items():
        path = tmp_path / f"cut-{len(data)}.gguf"
        path.write_bytes(data)
        assert_named_error(path, WEIGHTS, r"truncated|not a GGUF file")


def test_the_cli_prints_the_error_in_one_line(base, tmp_path, capfd):
    from inference_pio.cli import main

    data, _, _ = ATTACKS["llama.block_count = 100000"](base)
    path = tmp_path / "blocks.gguf"
    path.write_bytes(data)
    assert main(["generate", str(path), "hi", "-n", "1"]) == 1
    err = capfd.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err[:2000]
    assert f"{path}: llama.block_count = 100000: the file holds the tensors of 2 blocks" in err
