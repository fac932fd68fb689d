"""One request's generation state: token ids, sampling generator, detokenizer and stop checker.

The generation loop keeps one :class:`Sequence` per request: it passes ``params``,
``seen_token_ids()`` and ``generator`` to the :class:`~inference_pio.engine.sampler.Sampler` row by
row, then calls :meth:`Sequence.append_token` with the sampled id, which streams text and decides
whether the request is finished.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence as SequenceABC

import torch

from .sampler import SamplingParams, TokenLogprobs
from .stopping import StopChecker
from .streaming import Decoder, IncrementalDetokenizer


class Sequence:
    """Prompt + generated tokens of one request.

    ``tokenizer`` (anything with ``decode(ids, skip_special_tokens=...)``) is needed for text
    output and stop strings; without it only token-level stops apply and ``append_token`` returns "".
    ``device`` is where the sampler's logits live: the seeded generator and the seen-token buffer
    (kept only when a repetition penalty is set) are created there.
    """

    def __init__(
        self,
        seq_id: Hashable,
        prompt_ids: SequenceABC[int],
        params: SamplingParams,
        tokenizer: Decoder | None = None,
        eos_token_ids: Iterable[int] = (),
        device: torch.device | str = "cpu",
        skip_special_tokens: bool = True,
    ):
        if len(prompt_ids) == 0:
            raise ValueError(f"sequence {seq_id!r}: prompt_ids is empty; the model needs at least one token")
        if params.stop and tokenizer is None:
            raise ValueError(f"sequence {seq_id!r}: stop strings {params.stop!r} need a tokenizer")
        self.seq_id = seq_id
        self.params = params
        self.num_prompt_tokens = len(prompt_ids)
        self._tokens: list[int] = list(prompt_ids)
        self.text_pieces: list[str] = []
        # One entry per output token when params.logprobs is set (the sampler's TokenLogprobs).
        self.logprobs: list[TokenLogprobs] | None = None if params.logprobs is None else []
        self.generator: torch.Generator | None = None
        if params.seed is not None:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(params.seed)
        self._seen: torch.Tensor | None = None
        if params.repetition_penalty != 1.0:
            # Sized once for the longest possible sequence, so a step writes one element, never reallocates.
            self._seen = torch.empty(self.num_prompt_tokens + params.max_tokens, dtype=torch.int64, device=device)
            self._seen[: self.num_prompt_tokens] = torch.tensor(self._tokens, dtype=torch.int64)
        self._detok = None if tokenizer is None else IncrementalDetokenizer(tokenizer, prompt_ids, skip_special_tokens)
        # Chain hashes of the full blocks of token_ids, filled in by the KV cache when prefix caching is
        # on; kept here because tokens only ever grow, so each block is hashed once per request.
        self.block_hashes: list[bytes] = []
        self._stop = StopChecker(params, eos_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self._tokens)

    @property
    def num_output_tokens(self) -> int:
        return len(self._tokens) - self.num_prompt_tokens

    @property
    def token_ids(self) -> list[int]:
        """Prompt + output ids (the live list: do not modify)."""
        return self._tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self._tokens[self.num_prompt_tokens :]

    @property
    def output_text(self) -> str:
        return "".join(self.text_pieces)

    @property
    def is_finished(self) -> bool:
        return self._stop.finished

    @property
    def finish_reason(self) -> str | None:
        """"stop", "length", or None while running."""
        return self._stop.finish_reason

    @property
    def stop_reason(self) -> int | str | None:
        """The stop token id or stop string that ended the request, if any."""
        return self._stop.stop_reason

    def seen_token_ids(self) -> torch.Tensor | None:
        """Prompt + output ids as an int64 tensor view for the repetition penalty (None when unused)."""
        return None if self._seen is None else self._seen[: len(self._tokens)]

    def append_token(self, token_id: int, logprobs: TokenLogprobs | None = None) -> str:
        """Records a sampled token (and its log-probabilities); returns the text it makes final (possibly "").

        After the call, ``is_finished`` tells whether the request is done (and why).
        """
        if self._stop.finished:
            raise RuntimeError(f"sequence {self.seq_id!r} already finished ({self._stop.finish_reason!r})")
        token_id = int(token_id)
        if self._seen is not None:
            self._seen[len(self._tokens)] = token_id
        self._tokens.append(token_id)
        if self.logprobs is not None and logprobs is not None:
            self.logprobs.append(logprobs)
        piece = ""
        if self._detok is not None:
            piece = self._detok.add(token_id)
            if self._stop.stops_on_token(token_id):
                piece += self._detok.flush()
        text = self._stop.update(token_id, piece)
        if text:
            self.text_pieces.append(text)
        return text
