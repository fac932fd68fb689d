"""Sampling parameters and the batched sampler that turns logits into next-token ids.

Filter order follows Hugging Face ``generate``: repetition penalty, temperature, top-k, top-p, min-p.
Each filter matches the corresponding transformers processor/warper (``RepetitionPenaltyLogitsProcessor``,
``TemperatureLogitsWarper``, ``TopKLogitsWarper``, ``TopPLogitsWarper``, ``MinPLogitsWarper``); the
filters read per-row parameter tensors, so one set of torch ops serves a batch whose rows share
parameters or not, and a filter that no row uses is skipped.

Sampling uses the exponential-race form of a categorical draw, ``argmax(probs / E)`` with ``E ~ Exp(1)``
(no host sync, unlike ``torch.multinomial``). A row with a seed draws its noise from its own
``torch.Generator``, so its tokens depend only on its logits and its generator's state, never on
which other requests share the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_finite(v: object) -> bool:
    return _is_number(v) and math.isfinite(v)


# What the sampler's tensors can hold: top_k goes into an int64 tensor, a seed into torch.Generator.
MAX_TOP_K = 2**63 - 1
SEED_RANGE = (-(2**63), 2**64 - 1)
# Below this a temperature samples greedily: float32 logits divided by a smaller one overflow to inf/NaN.
GREEDY_BELOW = 1e-5


MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


@dataclass(frozen=True)
class TokenLogprobs:
    """One sampled token's log-probability and the ``top`` most likely ``(token_id, logprob)``, best first."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation settings (validated on construction).

    - ``temperature`` >= 0; 0 (or below ``GREEDY_BELOW``) means greedy (argmax, every other filter is
      then irrelevant).
    - ``top_k``: None or 0 = off, else >= 1 (ties with the k-th logit are kept, as in transformers).
    - ``top_p`` in (0, 1]; 1 = off. ``min_p`` in [0, 1); 0 = off.
    - ``repetition_penalty`` > 0; 1 = off. Tokens present in prompt + output get positive logits
      divided by it and negative logits multiplied by it (transformers semantics).
    - ``seed``: None = the global torch generator; an int gives a per-request generator.
    - ``max_tokens`` >= 1 new tokens; ``stop`` strings (non-empty); ``stop_token_ids``; ``ignore_eos``.
    - ``logits_processors``: callables ``f(output_token_ids: list[int], logits: Tensor[vocab]) -> None``
      that edit the row's float32 logits in place before every other filter (a grammar's token
      mask, say). They run for greedy rows too. A processor holding state is per request.
    - ``logprobs``: None = off; ``k`` in [0, 20] = the sampled token's log-probability and the ``k``
      most likely tokens' (see :func:`token_logprobs` for which distribution).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    max_tokens: int = 16
    stop: tuple[str, ...] = field(default=())
    stop_token_ids: tuple[int, ...] = field(default=())
    ignore_eos: bool = False
    logits_processors: tuple[Callable[[list[int], torch.Tensor], None], ...] = field(default=())
    logprobs: int | None = None

    def __post_init__(self):
        if not _is_finite(self.temperature) or not self.temperature >= 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if self.top_k is not None and (not _is_int(self.top_k) or not 0 <= self.top_k <= MAX_TOP_K):
            raise ValueError(f"top_k must be None, 0 (off) or an integer in [1, 2**63 - 1], got {self.top_k!r}")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not _is_number(self.min_p) or not 0 <= self.min_p < 1:
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p!r}")
        if not _is_finite(self.repetition_penalty) or not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be a finite number > 0 (1 = off), got {self.repetition_penalty!r}")
        if self.seed is not None and (not _is_int(self.seed) or not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]):
            raise ValueError(f"seed must be None or an integer in [-2**63, 2**64 - 1], got {self.seed!r}")
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if any(not isinstance(s, str) or not s for s in stop):
            raise ValueError(f"stop must be a string or a list of non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", stop)
        ids = tuple(self.stop_token_ids)
        if any(not _is_int(t) or t < 0 for t in ids):
            raise ValueError(f"stop_token_ids must be non-negative integers, got {self.stop_token_ids!r}")
        object.__setattr__(self, "stop_token_ids", ids)
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be a bool, got {self.ignore_eos!r}")
        processors = tuple(self.logits_processors)
        if any(not callable(f) for f in processors):
            raise ValueError(f"logits_processors must be callables, got {self.logits_processors!r}")
        object.__setattr__(self, "logits_processors", processors)
        if self.logprobs is not None and (not _is_int(self.logprobs) or not 0 <= self.logprobs <= MAX_TOP_LOGPROBS):
            raise ValueError(f"logprobs must be None or an integer in [0, {MAX_TOP_LOGPROBS}], got {self.logprobs!r}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    @property
    def top_k_or_off(self) -> int:
        """top_k with 0 meaning off (None folded in)."""
        return self.top_k or 0


# ----- filters (public so tests and other samplers can inspect them) -----


def apply_repetition_penalty(
    logits: torch.Tensor, seen_token_ids: Sequence[torch.Tensor | None], penalties: Sequence[float]
) -> torch.Tensor:
    """In place on ``logits [batch, vocab]``: penalize row ``i``'s ``seen_token_ids[i]`` (1-D int64).

    Repeated ids in ``seen_token_ids`` are penalized once, as in transformers. Rows whose penalty is 1
    or whose seen ids are None/empty are untouched.
    """
    for i, (ids, penalty) in enumerate(zip(seen_token_ids, penalties)):
        if penalty == 1.0 or ids is None or ids.numel() == 0:
            continue
        row = logits[i]
        score = row.gather(0, ids)
        row.scatter_(0, ids, torch.where(score < 0, score * penalty, score / penalty))
    return logits


def filter_logits(
    logits: torch.Tensor,
    temperatures: torch.Tensor | None = None,
    top_k: torch.Tensor | None = None,
    top_p: torch.Tensor | None = None,
    min_p: torch.Tensor | None = None,
) -> torch.Tensor:
    """In place on ``logits [batch, vocab]`` (float32): temperature, then top-k, top-p, min-p.

    Each parameter is a per-row tensor ``[batch]`` on the logits' device, or None when no row uses
    that filter. ``top_k`` rows of 0 and ``top_p`` rows of 1 are off. Removed tokens become ``-inf``.
    """
    if temperatures is not None:
        logits.div_(temperatures.unsqueeze(1))
    if top_p is not None:
        _top_k_top_p(logits, top_k, top_p)
    elif top_k is not None:
        _top_k_only(logits, top_k)
    if min_p is not None:
        probs = logits.softmax(dim=-1)
        threshold = probs.amax(dim=-1, keepdim=True) * min_p.unsqueeze(1)
        # probs < threshold never removes the top token (min_p < 1), so at least one survives.
        logits.masked_fill_(probs < threshold, float("-inf"))
    return logits


def _effective_k(top_k: torch.Tensor, vocab: int) -> torch.Tensor:
    """Per-row k as int64 with 0 (off) and k > vocab both meaning the whole vocabulary."""
    return torch.where(top_k > 0, top_k.clamp(max=vocab), vocab).to(torch.int64)


def _top_k_only(logits: torch.Tensor, top_k: torch.Tensor) -> None:
    """Without top-p no full sort is needed: a top-k of the largest k finds each row's k-th value."""
    k = _effective_k(top_k, logits.shape[1])
    largest = logits.topk(int(k.max()), dim=-1).values
    kth = largest.gather(1, (k - 1).unsqueeze(1))
    logits.masked_fill_(logits < kth, float("-inf"))  # ties with the k-th value stay, as in transformers


def _top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor) -> None:
    """Top-p (after top-k when given): one descending sort serves both filters."""
    vocab = logits.shape[1]
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    remove = torch.zeros_like(sorted_logits, dtype=torch.bool)
    if top_k is not None:
        k = _effective_k(top_k, vocab)
        kth = sorted_logits.gather(1, (k - 1).unsqueeze(1))
        remove |= sorted_logits < kth  # ties with the k-th value stay, as in transformers
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    probs = sorted_logits.softmax(dim=-1)
    # transformers removes a token when the mass of it and all smaller ones is <= 1 - top_p,
    # i.e. when the mass strictly above it is >= top_p; the top token always stays.
    mass_above = probs.cumsum(dim=-1) - probs
    # Rows with top_p == 1 are off; comparing against 1 would drop tail tokens on rounding.
    threshold = torch.where(top_p < 1, top_p, float("inf")).unsqueeze(1)
    remove |= mass_above >= threshold
    remove[:, 0] = False
    logits.masked_fill_(remove.scatter(1, order, remove), float("-inf"))


# ----- log-probabilities -----

# JSON has no -inf: a token the grammar (or a filter) forbids reports this, as vLLM does.
_FLOOR = -9999.0


def token_logprobs(rows: list[int], log_probs: torch.Tensor, next_ids: torch.Tensor,
                   params: Sequence[SamplingParams]) -> list[TokenLogprobs | None]:
    """Per row of the batch, the sampled token's log-probability and the ``params[row].logprobs`` best.

    ``log_probs [len(rows), vocab]`` is ``log_softmax`` of the logits after the request's logits
    processors (a grammar's mask) and repetition penalty, before temperature, top-k, top-p and min-p:
    the model's distribution over what the request may emit, independent of how it is then sampled
    (vLLM's "processed_logprobs" also applies the sampling filters; OpenAI's figures do not depend on
    temperature, so neither do ours). For a greedy request it is exactly what the argmax saw.
    """
    k = max(params[r].logprobs for r in rows)
    chosen = log_probs.gather(1, next_ids[rows].unsqueeze(1)).squeeze(1).clamp_min(_FLOOR).tolist()
    top_values, top_ids = log_probs.topk(k, dim=-1) if k else (log_probs[:, :0], log_probs[:, :0].long())
    top_values, top_ids = top_values.clamp_min(_FLOOR).tolist(), top_ids.tolist()
    ids = next_ids.tolist()
    out: list[TokenLogprobs | None] = [None] * len(params)
    for j, r in enumerate(rows):
        n = params[r].logprobs
        out[r] = TokenLogprobs(ids[r], chosen[j], tuple(zip(top_ids[j][:n], top_values[j][:n])))
    return out


# ----- the sampler -----


class Sampler:
    """Turns ``logits [batch, vocab]`` into next-token ids ``[batch]`` (int64), one params per row.

    ``logits`` is used as scratch space and overwritten (the model's output buffer need not be
    copied). ``seen_token_ids[i]`` (1-D int64 on the logits' device: prompt + output so far) is read
    only for rows with a repetition penalty. ``generators[i]`` is row ``i``'s torch.Generator (on the
    logits' device) or None for the global one; a request with a seed must pass the same generator
    every step (:class:`inference_pio.engine.sequence.Sequence` keeps it). ``output_token_ids[i]`` (row
    ``i``'s generated ids so far) is required when a row has ``logits_processors``.
    """

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        """The next-token ids of :meth:`sample` (same arguments)."""
        return self.sample(*args, **kwargs)[0]

    def sample(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        seen_token_ids: Sequence[torch.Tensor | None] | None = None,
        generators: Sequence[torch.Generator | None] | None = None,
        output_token_ids: Sequence[list[int]] | None = None,
    ) -> tuple[torch.Tensor, list[TokenLogprobs | None]]:
        """Next-token ids, and per row its :class:`TokenLogprobs` (None for rows whose params ask for none)."""
        ids, wanted = self._next_ids(logits, params, seen_token_ids, generators, output_token_ids)
        return ids, [None] * len(params) if wanted is None else token_logprobs(*wanted, ids, params)

    def _next_ids(self, logits, params, seen_token_ids, generators, output_token_ids):
        batch = self._check(logits, params, seen_token_ids, generators)
        if logits.is_inference() and not torch.is_inference_mode_enabled():
            logits = logits.clone()  # made under inference_mode (a model step): the filters below edit in place
        for i, p in enumerate(params):
            if p.logits_processors:
                if output_token_ids is None:
                    raise ValueError("output_token_ids is required when a row has logits_processors")
                for processor in p.logits_processors:
                    processor(output_token_ids[i], logits[i])
        penalties = [p.repetition_penalty for p in params]
        if any(p != 1.0 for p in penalties):
            if seen_token_ids is None:
                raise ValueError("seen_token_ids is required when a row has repetition_penalty != 1")
            apply_repetition_penalty(logits, seen_token_ids, penalties)
        # Log-probabilities come from these logits, before the sampling filters overwrite them in place.
        wanted = [i for i, p in enumerate(params) if p.logprobs is not None]
        log_probs = (wanted, logits[wanted].log_softmax(dim=-1)) if wanted else None

        sampled_rows = [i for i, p in enumerate(params) if not p.is_greedy]
        if not sampled_rows:
            return logits.argmax(dim=-1), log_probs
        if len(sampled_rows) == batch:
            return self._sample(logits, params, generators), log_probs
        out = logits.argmax(dim=-1)
        index = torch.tensor(sampled_rows, device=logits.device)
        sub_params = [params[i] for i in sampled_rows]
        sub_gens = None if generators is None else [generators[i] for i in sampled_rows]
        out[index] = self._sample(logits.index_select(0, index), sub_params, sub_gens)
        return out, log_probs

    @staticmethod
    def _check(logits, params, seen_token_ids, generators) -> int:
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ValueError(f"logits must be a 2-D tensor [batch, vocab], got {getattr(logits, 'shape', logits)!r}")
        if logits.dtype != torch.float32:
            raise ValueError(f"logits must be float32, got {logits.dtype}")
        batch = logits.shape[0]
        for name, seq in (("params", params), ("seen_token_ids", seen_token_ids), ("generators", generators)):
            if seq is not None and len(seq) != batch:
                raise ValueError(f"{name} has {len(seq)} entries for a batch of {batch} logits rows")
        return batch

    @staticmethod
    def _sample(logits, params, generators) -> torch.Tensor:
        """Samples every row of ``logits`` (none greedy)."""
        device = logits.device
        temps = [p.temperature for p in params]
        ks = [p.top_k_or_off for p in params]
        ps = [p.top_p for p in params]
        mins = [p.min_p for p in params]

        def per_row(values, off, dtype):
            return None if all(v == off for v in values) else torch.tensor(values, dtype=dtype, device=device)

        filter_logits(
            logits,
            temperatures=per_row(temps, 1.0, torch.float32),
            top_k=per_row(ks, 0, torch.int64),
            top_p=per_row(ps, 1.0, torch.float32),
            min_p=per_row(mins, 0.0, torch.float32),
        )
        probs = logits.softmax(dim=-1)
        noise = torch.empty_like(probs)
        seeded = [] if generators is None else [(i, g) for i, g in enumerate(generators) if g is not None]
        if len(seeded) < len(params):
            noise.exponential_()
        for i, g in seeded:
            noise[i].exponential_(generator=g)
        # A zero draw would turn a removed token's 0/0 into NaN, which argmax would pick.
        noise.clamp_min_(torch.finfo(noise.dtype).tiny)
        return probs.div_(noise).argmax(dim=-1)
