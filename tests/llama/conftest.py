import pytest

from .checkpoints import hf_model, write_checkpoint


@pytest.fixture(scope="module")
def gqa_checkpoint(tmp_path_factory):
    """GQA (4 query / 2 kv heads), untied, default RoPE: (hf_model, folder)."""
    model = hf_model()
    return model, write_checkpoint(tmp_path_factory.mktemp("gqa"), model)
