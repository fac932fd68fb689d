"""The generation loop: packed (chunked) prefill, batched decode, sampling, stops, streaming.

``GenerationEngine`` drives any model with the engine's forward signature
``model(input_ids [T], positions [T], meta, key_caches, value_caches) -> logits [num_seqs, vocab]``
over a :class:`PagedKVCache`. One call serves a fixed batch of requests (no continuous batching
yet): all prompts are prefilled, packed together up to ``prefill_budget`` tokens per step (longer
prompts in chunks), then the unfinished sequences decode together, one token each per step.
A sequence's KV blocks are freed as soon as it finishes, and always when the call ends (also on
an error), so a failed call leaves the cache empty and usable.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Sequence as SequenceABC

import torch

from .kv_cache import PagedKVCache
from .sampler import Sampler, SamplingParams
from .sequence import Sequence
from .streaming import Decoder


class GenerationEngine:
    """Runs requests through ``model`` with ``kv_cache``.

    ``max_model_len``: most tokens (prompt + output) one sequence may hold; ``prefill_budget``:
    most prompt tokens in one forward step. ``tokenizer`` enables text output and stop strings.
    """

    def __init__(self, model, kv_cache: PagedKVCache, *, max_model_len: int, prefill_budget: int = 512,
                 tokenizer: Decoder | None = None, eos_token_ids: Iterable[int] = ()):
        if prefill_budget < 1:
            raise ValueError(f"prefill_budget must be >= 1, got {prefill_budget}")
        self.model = model
        self.kv_cache = kv_cache
        self.max_model_len = max_model_len
        self.prefill_budget = prefill_budget
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(eos_token_ids)
        self.device = kv_cache.device
        self.sampler = Sampler()
        self._ids = itertools.count()
        # Step inputs are written through numpy views of reused buffers (no tensor built per step).
        self._input_ids = torch.empty(max(prefill_budget, 1), dtype=torch.int64)
        self._positions = torch.empty_like(self._input_ids)

    # ----- public -----

    def generate(self, prompts: SequenceABC[SequenceABC[int]],
                 params: SamplingParams | SequenceABC[SamplingParams]) -> list[Sequence]:
        """Runs every prompt (token ids) to completion; returns their finished ``Sequence``s in order."""
        seqs = self._new_sequences(prompts, params)
        for _ in self._run(seqs):
            pass
        return seqs

    def stream(self, prompt: SequenceABC[int], params: SamplingParams) -> Iterator[str]:
        """Yields the text pieces of one request as they become final (needs a tokenizer)."""
        if self.tokenizer is None:
            raise ValueError("streaming text needs a tokenizer")
        seqs = self._new_sequences([prompt], params)
        for _, piece in self._run(seqs):
            if piece:
                yield piece

    # ----- the loop -----

    def _new_sequences(self, prompts, params) -> list[Sequence]:
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(params)} SamplingParams")
        if not prompts:
            raise ValueError("no prompts given")
        seqs = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            n = len(prompt)
            if n >= self.max_model_len:
                raise ValueError(f"prompt {i} has {n} tokens but the context holds at most {self.max_model_len} "
                                 f"tokens (prompt + at least one generated token)")
            # Generation stops with "length" where the context ends.
            p = dataclasses.replace(p, max_tokens=min(p.max_tokens, self.max_model_len - n))
            seqs.append(Sequence(next(self._ids), prompt, p, self.tokenizer, self.eos_token_ids, self.device))
        return seqs

    def _run(self, seqs: list[Sequence]) -> Iterator[tuple[int, str]]:
        """Yields ``(index, text piece)`` after each sampled token."""
        cache = self.kv_cache
        try:
            yield from self._prefill(seqs)
            while True:
                running = [i for i, s in enumerate(seqs) if not s.is_finished]
                if not running:
                    return
                for i in running:
                    cache.append_slots(seqs[i].seq_id, 1)
                batch = [seqs[i] for i in running]
                ids = [s.token_ids[-1] for s in batch]
                positions = [s.num_tokens - 1 for s in batch]
                yield from self._step(seqs, running, ids, positions, [1] * len(batch))
        finally:
            for s in seqs:
                if s.seq_id in cache:
                    cache.free(s.seq_id)

    def _prefill(self, seqs: list[Sequence]) -> Iterator[tuple[int, str]]:
        """Prompt tokens in steps of at most ``prefill_budget``; a prompt may span several steps."""
        cache, budget = self.kv_cache, self.prefill_budget
        done = [0] * len(seqs)  # prompt tokens already in the cache
        pending = list(range(len(seqs)))
        while pending:
            rows, ids, positions, lens, room = [], [], [], [], budget
            for i in pending:
                if room == 0:
                    break
                s, start = seqs[i], done[i]
                take = min(room, s.num_prompt_tokens - start)
                if start == 0:
                    cache.allocate(s.seq_id, take)
                else:
                    cache.append_slots(s.seq_id, take)
                rows.append(i)
                ids += s.token_ids[start:start + take]
                positions += range(start, start + take)
                lens.append(take)
                done[i] += take
                room -= take
            complete = [i for i in rows if done[i] == seqs[i].num_prompt_tokens]
            yield from self._step(seqs, rows, ids, positions, lens, sample_rows=complete)
            pending = [i for i in pending if done[i] < seqs[i].num_prompt_tokens]

    def _step(self, seqs, rows, ids, positions, lens, sample_rows=None) -> Iterator[tuple[int, str]]:
        """One forward over ``rows`` (their new tokens packed), then sampling for ``sample_rows``."""
        cache, t = self.kv_cache, len(ids)
        if t > self._input_ids.shape[0]:
            self._input_ids = torch.empty(t, dtype=torch.int64)
            self._positions = torch.empty_like(self._input_ids)
        np_ids, np_pos = self._input_ids.numpy(), self._positions.numpy()
        np_ids[:t] = ids
        np_pos[:t] = positions
        meta = cache.build_metadata([seqs[i].seq_id for i in rows], lens)
        input_ids, pos = self._input_ids[:t].to(self.device), self._positions[:t].to(self.device)
        logits = self.model(input_ids, pos, meta, cache.key_caches, cache.value_caches)
        if sample_rows is None:
            sample_rows = rows
        if not sample_rows:
            return
        if len(sample_rows) < len(rows):
            logits = logits[torch.tensor([rows.index(i) for i in sample_rows], device=logits.device)]
        batch = [seqs[i] for i in sample_rows]
        next_ids = self.sampler(logits.float(), [s.params for s in batch], [s.seen_token_ids() for s in batch],
                                [s.generator for s in batch],
                                [s.output_token_ids if s.params.logits_processors else None for s in batch])
        for i, s, token in zip(sample_rows, batch, next_ids.tolist()):
            piece = s.append_token(token)
            if s.is_finished:
                cache.free(s.seq_id)
            yield i, piece


def greedy(max_tokens: int, **kwargs) -> SamplingParams:
    """``SamplingParams`` for greedy decoding (a shorthand used by tests and benchmarks)."""
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kwargs)


__all__ = ["GenerationEngine", "greedy"]
