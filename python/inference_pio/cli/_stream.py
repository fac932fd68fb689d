"""Streams one request's text to a callback and measures it (shared by generate, chat and bench)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..engine.sampler import SamplingParams


@dataclass(frozen=True)
class StreamStats:
    prompt_tokens: int
    completion_tokens: int
    prefill_s: float  # submit -> first token
    decode_s: float  # first token -> last token
    finish_reason: str | None
    text: str

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else float("nan")

    @property
    def decode_tps(self) -> float:
        """Tokens after the first over the time they took (the first token's time is prefill)."""
        n = self.completion_tokens - 1
        return n / self.decode_s if n > 0 and self.decode_s > 0 else float("nan")

    def summary(self) -> str:
        return (f"{self.completion_tokens} tokens ({self.finish_reason}) · prompt {self.prompt_tokens} tokens "
                f"at {self.prompt_tps:.1f} tok/s · decode {self.decode_tps:.1f} tok/s")


def stream_tokens(model, prompt_ids: Sequence[int], params: SamplingParams,
                  on_text: Callable[[str], None]) -> StreamStats:
    """Runs the request through the model's async engine, calling ``on_text`` with each new piece."""
    return asyncio.run(_run(model, list(prompt_ids), params, on_text))


async def _run(model, prompt_ids, params, on_text) -> StreamStats:
    engine = model.async_engine()
    start = time.perf_counter()
    first = last = None
    tokens, pieces, finish = 0, [], None
    async for out in engine.generate(prompt_ids, params):
        now = time.perf_counter()
        if out.token_ids:
            first = first or now
            last = now
            tokens += len(out.token_ids)
        if out.text:
            pieces.append(out.text)
            on_text(out.text)
        finish = out.finish_reason or finish
    first, last = first or start, last or start
    return StreamStats(len(prompt_ids), tokens, first - start, last - first, finish, "".join(pieces))


def write_stdout(text: str) -> None:
    """Generated text goes to stdout unstyled, flushed piece by piece."""
    sys.stdout.write(text)
    sys.stdout.flush()
