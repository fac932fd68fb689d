import pytest

from tests.llama.checkpoints import hf_model

from .writer import write_gguf

VOCAB = 400  # the tiny tokenizers' size, so the GGUF's token list covers the embedding


@pytest.fixture(scope="module")
def tiny_hf():
    """A seeded random transformers Llama (GQA 4/2 heads, untied) sized for the tiny tokenizer."""
    return hf_model(vocab_size=VOCAB)


@pytest.fixture(scope="module")
def gguf_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("gguf")


@pytest.fixture(scope="module")
def f32_gguf(tiny_hf, gguf_folder):
    return write_gguf(gguf_folder / "tiny-f32.gguf", tiny_hf, qtype="F32")


def hf_from_gguf(path):
    """transformers' own GGUF loader (dequantizes to float32): the reference model."""
    pytest.importorskip("accelerate", reason="transformers needs accelerate to load a GGUF file")
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()


def hf_tokenizer_from_gguf(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
