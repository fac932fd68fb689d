"""``pio serve --tensor-parallel-size 2``: two ranks serve the OpenAI API like one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import torch

from tests.server.chat_checkpoint import write_chat_checkpoint
from tests.server.serving import free_port

REPO = __file__.rsplit("/tests/", 1)[0]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the ranks use NCCL, one GPU each")
def test_two_ranks_answer_what_one_process_answers(tmp_path):
    import inference_pio
    from openai import OpenAI

    ckpt = write_chat_checkpoint(tmp_path / "tiny")
    port = free_port()
    # pio serve --tensor-parallel-size 2 runs torchrun -m inference_pio.distributed.tp_serve in its process.
    proc = subprocess.Popen([sys.executable, "-m", "inference_pio", "serve", str(ckpt), "--tensor-parallel-size", "2",
                             "--port", str(port), "--dtype", "float32", "--max-seq-len", "256",
                             "--max-batch-size", "4", "--api-key", "secret", "--log-level", "warning"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:  # a bounded wait, not a speed claim
                pytest.fail("the tensor-parallel server did not come up")
            time.sleep(0.5)
        client = OpenAI(base_url=f"{base}/v1", api_key="secret", max_retries=0, timeout=120)
        messages = [{"role": "user", "content": "Hello there"}]
        answers = [client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                                  extra_body={"ignore_eos": True}).choices[0].message.content
                   for _ in range(2)]
        local = inference_pio.load(ckpt, dtype="float32", max_seq_len=256)
        [expected] = local.generate([local.apply_chat_template(messages)], max_tokens=10, temperature=0,
                                    ignore_eos=True)
        local.close()
        assert answers == [expected.text, expected.text]
    finally:
        proc.send_signal(signal.SIGTERM)  # torchrun (inside pio) passes it on; rank 0 stops the follower
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the ranks did not stop on SIGTERM")
    assert "rank 1: rank 0 stopped" in output, output[-3000:]
