"""One real ``pio serve`` process per module, on a free loopback port, with an API key."""

from __future__ import annotations

import pytest

from tests.server.chat_checkpoint import write_chat_checkpoint
from tests.server.serving import minilm_folder, running_pio_serve

API_KEY = "test-key"
MODEL = "tiny"
EMBEDDER = "minilm"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    return write_chat_checkpoint(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(checkpoint):
    args = ["--name", MODEL, "--api-key", API_KEY, "--dtype", "float32", "--max-seq-len", "256"]
    embedder = minilm_folder()
    if embedder is not None:
        args += ["--embedding-model", str(embedder), "--embedding-name", EMBEDDER]
    with running_pio_serve(checkpoint, *args) as base:
        yield type("Server", (), {"base": base, "v1": f"{base}/v1", "has_embedder": embedder is not None,
                                  "checkpoint": checkpoint})


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def aclient(server):
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=server.v1, api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def local_model(checkpoint):
    """The same checkpoint in-process: the reference for what the server must answer."""
    import inference_pio

    model = inference_pio.load(checkpoint, dtype="float32", max_seq_len=256)
    yield model
    model.close()
