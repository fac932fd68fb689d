"""Safetensors loading: single and sharded checkpoints, dtype conversion, and a clear
WeightLoadError for every way a checkpoint can be wrong."""

import json
import re
import struct

import pytest
import torch
from safetensors.torch import save_file

from inference_pio.weights import (
    WeightLoadError,
    fuse_into,
    fuse_rows,
    load_state,
    open_checkpoint,
    read_header,
    tie_embeddings,
)


def tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "model.embed_tokens.weight": torch.randn(10, 4, generator=g),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(4, 4, generator=g),
        "model.layers.0.self_attn.k_proj.weight": torch.randn(2, 4, generator=g),
        "model.layers.0.self_attn.v_proj.weight": torch.randn(2, 4, generator=g),
        "model.norm.weight": torch.randn(4, generator=g).to(torch.bfloat16),
        "model.rotary.positions": torch.arange(6),
    }


def shapes(state):
    return {name: tuple(t.shape) for name, t in state.items()}


@pytest.fixture
def single(tmp_path):
    save_file(tensors(), tmp_path / "model.safetensors")
    return tmp_path


@pytest.fixture
def sharded(tmp_path):
    state = tensors()
    names = list(state)
    shards = {"model-00001-of-00002.safetensors": names[:3], "model-00002-of-00002.safetensors": names[3:]}
    weight_map = {}
    for shard, shard_names in shards.items():
        save_file({n: state[n] for n in shard_names}, tmp_path / shard)
        weight_map.update({n: shard for n in shard_names})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return tmp_path


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_loads_every_tensor_exactly(layout, request):
    state = load_state(request.getfixturevalue(layout))
    expected = tensors()
    assert set(state) == set(expected)
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name


def test_single_file_path_is_accepted(single):
    assert set(load_state(single / "model.safetensors")) == set(tensors())


@pytest.mark.parametrize("dtype", [torch.float16, "bfloat16", "fp32"])
def test_dtype_conversion_touches_floats_only(single, dtype):
    state = load_state(single, dtype=dtype)
    target = {"bfloat16": torch.bfloat16, "fp32": torch.float32}.get(dtype, dtype)
    for name, tensor in tensors().items():
        if tensor.is_floating_point():
            assert state[name].dtype == target
            torch.testing.assert_close(state[name], tensor.to(target))
        else:
            assert state[name].dtype == tensor.dtype


def test_expected_shapes_pass_and_limit_what_is_read(sharded):
    expected = shapes(tensors())
    assert set(load_state(sharded, expected)) == set(expected)
    del expected["model.rotary.positions"]
    assert set(load_state(sharded, expected, strict=False)) == set(expected)


def test_every_offending_tensor_is_named_in_one_message(sharded):
    expected = shapes(tensors())
    del expected["model.rotary.positions"]
    del expected["model.norm.weight"]
    expected["lm_head.weight"] = (10, 4)
    expected["model.layers.0.self_attn.k_proj.weight"] = (4, 4)
    with pytest.raises(WeightLoadError) as err:
        load_state(sharded, expected)
    message = str(err.value)
    assert str(sharded) in message
    assert "missing: lm_head.weight" in message
    assert "wrong shape: model.layers.0.self_attn.k_proj.weight (expected [4, 4], found [2, 4])" in message
    assert "model.rotary.positions" in message and "model.norm.weight" in message
    assert message.index("unexpected") < message.index("model.rotary.positions")


def test_non_strict_still_refuses_wrong_shapes(single):
    expected = {"model.norm.weight": (5,), "lm_head.weight": (10, 4)}
    with pytest.raises(WeightLoadError, match=r"wrong shape: model.norm.weight") as err:
        load_state(single, expected, strict=False)
    assert "lm_head" not in str(err.value)


def test_truncated_file_names_the_file(single):
    path = single / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(WeightLoadError, match="truncated") as err:
        load_state(single)
    assert str(path) in str(err.value)


def test_file_cut_inside_the_header(single):
    path = single / "model.safetensors"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(WeightLoadError, match="goes beyond the file size 40"):
        read_header(path)


@pytest.mark.parametrize(
    "header, message",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}', "4 bytes for F32 [2]"),
        (b'{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', "invalid shape"),
        (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}', "invalid data_offsets"),
        (b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}', "truncated"),
    ],
)
def test_corrupt_header(tmp_path, header, message):
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(WeightLoadError, match=re.escape(message)) as err:
        load_state(tmp_path)
    assert str(path) in str(err.value)


def test_too_short_file(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\1\2")
    with pytest.raises(WeightLoadError, match="2 bytes, too short"):
        load_state(tmp_path)


def test_missing_shard_is_named(sharded):
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(WeightLoadError, match="missing: model-00002-of-00002.safetensors") as err:
        load_state(sharded)
    assert "model.safetensors.index.json" in str(err.value)


def test_index_entry_absent_from_its_shard(sharded):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    index["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors"
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightLoadError, match=r"absent from their shard: lm_head.weight \(in model-00001"):
        open_checkpoint(sharded)


def test_broken_index(sharded):
    (sharded / "model.safetensors.index.json").write_text('{"weight_map": [1]}')
    with pytest.raises(WeightLoadError, match="weight_map"):
        load_state(sharded)


def test_empty_folder(tmp_path):
    with pytest.raises(WeightLoadError, match="neither model.safetensors nor"):
        load_state(tmp_path)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "consolidated.00.pth", "model.pt"])
def test_pickle_checkpoints_are_refused(tmp_path, name):
    # Not a real pickle: the loader must refuse by name, never open it with torch.load.
    (tmp_path / name).write_bytes(b"\x80\x04 not to be unpickled")
    for path in (tmp_path, tmp_path / name):
        with pytest.raises(WeightLoadError, match="only safetensors checkpoints are supported.*arbitrary code"):
            load_state(path)


def test_fuse_rows_concatenates_and_returns_splits():
    q, k, v = torch.randn(4, 3), torch.randn(2, 3), torch.randn(2, 3)
    qkv, sizes = fuse_rows([q, k, v])
    assert sizes == [4, 2, 2]
    for part, original in zip(qkv.split(sizes), (q, k, v)):
        assert torch.equal(part, original)


@pytest.mark.parametrize(
    "other, message",
    [
        (torch.randn(2, 5), r"k is \(2, 5\)"),
        (torch.randn(2, 3, dtype=torch.float64), "torch.float64"),
        (torch.tensor(1.0), "scalar"),
    ],
)
def test_fuse_rows_refuses_mismatched_parts(other, message):
    with pytest.raises(ValueError, match=message):
        fuse_rows([torch.randn(4, 3), other], names=["q", "k"])


def test_fuse_into_replaces_names_in_a_state(single):
    state = load_state(single)
    prefix = "model.layers.0.self_attn."
    parts = [prefix + "q_proj.weight", prefix + "k_proj.weight", prefix + "v_proj.weight"]
    sizes = fuse_into(state, parts, prefix + "qkv_proj.weight")
    assert sizes == [4, 2, 2] and state[prefix + "qkv_proj.weight"].shape == (8, 4)
    assert prefix + "q_proj.weight" not in state
    with pytest.raises(WeightLoadError, match="cannot build x: missing " + prefix + "q_proj.weight"):
        fuse_into(state, [prefix + "q_proj.weight"], "x")


def test_tied_embeddings_fill_a_missing_head(single):
    expected = {**shapes(tensors()), "lm_head.weight": (10, 4)}
    with pytest.raises(WeightLoadError, match="missing: lm_head.weight"):
        load_state(single, expected)
    state = load_state(single, expected, tie_word_embeddings=True)
    assert state["lm_head.weight"] is state["model.embed_tokens.weight"]


def test_tie_keeps_a_stored_head_and_needs_an_embedding():
    head, embed = torch.zeros(2, 2), torch.ones(2, 2)
    state = {"lm_head.weight": head, "model.embed_tokens.weight": embed}
    assert tie_embeddings(state)["lm_head.weight"] is head
    with pytest.raises(WeightLoadError, match="neither is in the checkpoint"):
        tie_embeddings({})
