"""A bounded fuzz of GGUF headers: mutated copies of a small valid file (bytes flipped, counts and
lengths overwritten with edge values, chunks cut or repeated) are parsed, turned into a config and a
tokenizer. Each must load or give ``WeightLoadError`` / ``ConfigError``: no other exception, no
hang (a per-file time bound), no large allocation (traced for a subset).

``PIO_FUZZ_ITERATIONS`` sets the number of files (default 2,000, a few seconds) and
``PIO_FUZZ_SEED`` the first seed, for longer runs outside CI.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import tracemalloc
from dataclasses import replace

import pytest

from inference_pio.plugin import ConfigError
from inference_pio.plugins.llama import LlamaConfig
from inference_pio.tokenizer import tokenizer_from_gguf
from inference_pio.weights import WeightLoadError
from inference_pio.weights.gguf_file import open_gguf

from .hostile import read_spec, write_base

ITERATIONS = int(os.environ.get("PIO_FUZZ_ITERATIONS", "2000"))
FIRST_SEED = int(os.environ.get("PIO_FUZZ_SEED", "0"))
TIME_BOUND_S = 5.0  # per file; a clean parse of this header takes milliseconds
TRACED = 200  # files whose allocations are traced (tracing slows the parse down)
MEMORY_BOUND = 64 << 20  # bytes; the file is 160 kB, so more would be an allocation sized by a lie
EDGES = (0, 1, 2, 3, 4, 5, 8, 9, 12, 31, 32, 33, 255, 1 << 15, 1 << 16, 1 << 31, (1 << 32) - 1, 1 << 32,
         1 << 58, 1 << 63, (1 << 64) - 1)


class Hang(Exception):
    pass


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """The hostile-corpus base with a 40-token tokenizer: a short header makes each parse fast."""
    spec = read_spec(write_base(tmp_path_factory.mktemp("fuzz") / "base.gguf"))
    fields = []
    for f in spec.fields:
        if f.key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
            f = replace(f, value=f.value[:40])
        elif f.key == "tokenizer.ggml.merges":
            f = replace(f, value=[])
        elif f.key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
            f = replace(f, value=min(f.value, 39))
        fields.append(f)
    spec = replace(spec, fields=fields)
    data = spec.encode()
    return data, spec.marks["data"]


def mutate(data: bytes, header_end: int, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3))):
        at = rng.randrange(header_end)
        kind = rng.randrange(5)
        if kind == 0:  # a random byte
            out[at] = rng.randrange(256)
        elif kind == 1:  # a u64 count, length, dimension or offset
            struct.pack_into("<Q", out, min(at, header_end - 8), rng.choice(EDGES) & ((1 << 64) - 1))
        elif kind == 2:  # a u32 type id, n_dims or version
            struct.pack_into("<I", out, min(at, header_end - 4), rng.choice(EDGES) & 0xFFFFFFFF)
        elif kind == 3:  # cut the file
            del out[at:]
            break
        else:  # repeat a chunk (shifts everything after it)
            out[at:at] = out[at:at + rng.randrange(1, 64)]
    return bytes(out)


def parse_everything(path) -> None:
    gguf = open_gguf(path)
    LlamaConfig.from_gguf(gguf)
    if "tokenizer.ggml.tokens" in gguf.metadata:
        tokenizer_from_gguf(gguf)


def _alarm(signum, frame):
    raise Hang()


def test_mutated_headers_load_or_give_named_errors(small_file, tmp_path):
    data, header_end = small_file
    path = tmp_path / "mutant.gguf"
    outcomes = {"loaded": 0, "named error": 0}
    crashes, hangs = [], []
    previous = signal.signal(signal.SIGALRM, _alarm)
    tracemalloc.start()
    try:
        for seed in range(FIRST_SEED, FIRST_SEED + ITERATIONS):
            if seed == FIRST_SEED + TRACED:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                assert peak < MEMORY_BOUND, f"parsing mutated headers allocated {peak} bytes"
            path.write_bytes(mutate(data, header_end, random.Random(seed)))
            signal.setitimer(signal.ITIMER_REAL, TIME_BOUND_S)
            try:
                parse_everything(path)
                outcomes["loaded"] += 1
            except (WeightLoadError, ConfigError) as exc:
                message = str(exc)
                assert "\n" not in message and len(message) < 1000 and str(path) in message, (seed, message[:500])
                outcomes["named error"] += 1
            except Hang:
                hangs.append(seed)
            except Exception as exc:  # noqa: BLE001 -- what the fuzz is looking for
                crashes.append((seed, f"{type(exc).__name__}: {str(exc)[:200]}"))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        tracemalloc.stop()
        signal.signal(signal.SIGALRM, previous)
    assert not crashes, f"{len(crashes)} of {ITERATIONS} mutated files raised unnamed errors: {crashes[:5]}"
    assert not hangs, f"seeds that ran past {TIME_BOUND_S} s: {hangs[:10]}"
    assert outcomes["named error"] > ITERATIONS // 4 and outcomes["loaded"] > 0, outcomes  # the fuzz reaches both
