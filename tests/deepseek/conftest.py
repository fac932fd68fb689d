import pytest
import torch

from tests.llama.checkpoints import write_checkpoint

from .checkpoints import YARN, hf_deepseek


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: on a shared 2-core machine, waking torch's thread pool for every small
    op costs far more than the op (index_add_ went from 0.1 ms to 50 ms under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def v2_checkpoint(tmp_path_factory):
    """DeepSeek-V2: no q LoRA, softmax greedy routing, a dense first layer: (hf_model, folder)."""
    model = hf_deepseek(2)
    return model, write_checkpoint(tmp_path_factory.mktemp("v2"), model)


@pytest.fixture(scope="module")
def v3_checkpoint(tmp_path_factory):
    """DeepSeek-V3: q LoRA, sigmoid + bias routing over 4 groups (2 kept), YaRN: (hf_model, folder)."""
    model = hf_deepseek(3, rope_parameters=YARN)
    return model, write_checkpoint(tmp_path_factory.mktemp("v3"), model)
