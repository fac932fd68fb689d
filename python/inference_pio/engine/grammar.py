"""JSON-schema constrained decoding with xgrammar: schema -> compiled grammar -> per-request logits processor.

The engine's feature, used by the services (schematic generation) and the server (``response_format``,
tool calls); xgrammar is the optional ``grammar`` extra, loaded on first use.

``GrammarBackend.for_model(model)`` builds xgrammar's ``TokenizerInfo`` once per loaded model from our
``Tokenizer`` (vocabulary strings, byte encoding detected from the vocabulary, special tokens blanked so
the grammar never emits a token that detokenizing would drop) and caches compiled grammars per schema.
``backend.processor(schema, max_tokens)`` returns a fresh :class:`GrammarLogitsProcessor` for one request:
an ``inference_pio.engine.SamplingParams`` logits processor that masks every token the grammar forbids
and, once the JSON is complete, allows only the stop tokens, so the engine ends the request there.

A token budget (``max_tokens``) is part of the grammar state, so the output always completes within it.
The closing distance of a state is the number of tokens the closing path (at each step the stop token,
else the first allowed closing piece, else the longest allowed token: whole keys and enum values at once)
takes to finish the JSON; ``GrammarBackend.min_tokens`` is that distance from the start, and a smaller
budget is refused before generating. Near the end of the budget (the caution zone) the processor allows
only tokens verified to keep the distance within the tokens left: the closing path's next token (always
fits) and those of the model's ``_VERIFY`` likeliest tokens that fit after a trial step on a forked matcher.
Far from the end nothing is masked for the budget: one token can raise the distance by at most what
opening one nested value costs, which the caution zone's width (``_caution``) covers.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from ..errors import BudgetTooSmallError, SchemaError
from .grammar_vocab import BAD_SECOND, load_xgrammar, tokenizer_info
from .output_schema import OutputSchema

# Tokens that close or shorten the JSON fastest, most preferred first (the stop token beats them all);
# when none is allowed the longest allowed token is taken. The quote leads: inside a string "}" is just a
# character, and outside one a quote opens at most "". The comma beats digits: a digit only lengthens a number.
_CLOSING_PIECES = ('"', "}", "]", ",", "0", "false", "null", ":", "{", "[")
# Check the closing distance at least this often (tokens) while far from the caution zone.
_CHECK_EVERY = 8
# In the caution zone, trial-step the model's this many likeliest allowed tokens.
_VERIFY = 6


def _caution(min_tokens: int) -> int:
    """Width of the caution zone beyond the closing distance: room for the largest jump in distance one token
    can cause (opening a nested value with required parts), which is at most about a minimal document."""
    return max(48, 2 * min_tokens)


class GrammarBackend:
    """Compiled grammars for one model's vocabulary (thread-safe; LRU of ``cache_size`` schemas)."""

    _per_model: "weakref.WeakKeyDictionary[Any, GrammarBackend]" = weakref.WeakKeyDictionary()
    _per_model_lock = threading.Lock()

    def __init__(self, tokenizer, vocab_size: int, cache_size: int = 64):
        xgr = load_xgrammar()
        self.info = tokenizer_info(tokenizer, vocab_size)
        self.vocab_size = vocab_size
        self.stop_token_ids = tuple(self.info.stop_token_ids)
        self._compiler = xgr.GrammarCompiler(self.info, cache_enabled=False)  # our own LRU below
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size
        self._min_tokens: dict[str, tuple[int, int]] = {}  # schema key -> (distance, limit it ran to)
        self._lock = threading.Lock()
        self.closing_token_ids = self._closing_token_ids(tokenizer)
        # Byte length of each token, to take the longest allowed one on the closing path (ties: lowest id).
        lengths = np.zeros(((vocab_size + 31) // 32) * 32, dtype=np.int32)
        for i, piece in enumerate(self.info.decoded_vocab[:vocab_size]):
            lengths[i] = len(piece)
        self.token_lengths = lengths
        self._utf8_tables()

    def _utf8_tables(self) -> None:
        """Per restricted lead byte, the bitmask words and keep-masks that drop tokens starting with a byte the
        lead forbids next; and each token's last byte when it is such a lead."""
        pieces = self.info.decoded_vocab
        words = (self.vocab_size + 31) // 32
        self.lead_at_end: dict[int, int] = {}
        self.after_lead: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        drop = {lead: np.zeros(words * 32, dtype=bool) for lead in BAD_SECOND}
        for i, piece in enumerate(pieces[:self.vocab_size]):
            if not piece or i in self.stop_token_ids:
                continue
            if piece[-1] in BAD_SECOND:
                self.lead_at_end[i] = piece[-1]
            for lead, second in BAD_SECOND.items():
                if piece[0] in second:
                    drop[lead][i] = True
        for lead, flags in drop.items():
            packed = np.packbits(flags, bitorder="little").view(np.uint32)
            hit = np.flatnonzero(packed)
            self.after_lead[lead] = (hit, ~packed[hit])

    def mask_after(self, bits: np.ndarray, lead: int | None) -> None:
        """Clears, in the bitmask ``bits`` (uint32 view), the tokens that cannot follow the byte ``lead``."""
        if lead is not None:
            hit, keep = self.after_lead[lead]
            bits[hit] &= keep

    @classmethod
    def for_model(cls, model) -> "GrammarBackend":
        """The backend of a loaded ``inference_pio.Model`` (built on first use, then shared)."""
        with cls._per_model_lock:
            backend = cls._per_model.get(model)
            if backend is None:
                tokenizer = getattr(model.plugin, "tokenizer", None)
                if tokenizer is None:
                    raise ValueError("constrained generation needs the model's tokenizer, and this model has none")
                backend = cls._per_model[model] = cls(tokenizer, model.vocab_size)
            return backend

    def _closing_token_ids(self, tokenizer) -> list[int]:
        ids = []
        for piece in _CLOSING_PIECES:
            encoded = tokenizer.encode(piece, add_special_tokens=False)
            if len(encoded) == 1 and encoded[0] < self.vocab_size and tokenizer.decode(encoded) == piece:
                ids.append(encoded[0])
        return ids

    def compile(self, schema: Any):
        """``CompiledGrammar`` for ``schema`` (anything :meth:`OutputSchema.of` takes); SchemaError when
        xgrammar cannot compile it."""
        out = OutputSchema.of(schema)
        # Compact JSON: free whitespace would let a weak model spend its whole budget on spaces.
        return self._cached(out.key, lambda: self._compiler.compile_json_schema(out.key, any_whitespace=False),
                            (RuntimeError,), f"JSON schema {out.name!r}")

    def compile_structural_tag(self, tag: dict) -> Any:
        """``CompiledGrammar`` for an xgrammar structural tag (a dict: tool calls, say); cached like schemas.
        Raises SchemaError when xgrammar rejects it (a bad JSON schema inside, for one)."""
        key = "structural_tag:" + json.dumps(tag)  # key order kept: it is the property order
        # xgrammar's InvalidStructuralTagError is a RuntimeError; some checks raise ValueError.
        return self._cached(key, lambda: self._compiler.compile_structural_tag(tag), (RuntimeError, ValueError),
                            "the structural tag")

    def _cached(self, key: str, build, errors: tuple, what: str) -> Any:
        """The compiled grammar under ``key`` from the LRU, or ``build()``'s, stored; ``errors`` from it -> SchemaError."""
        with self._lock:
            compiled = self._cache.get(key)
            if compiled is not None:
                self._cache.move_to_end(key)
                return compiled
        try:
            compiled = build()
        except errors as e:
            message = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
            raise SchemaError(f"cannot compile {what} into a grammar: {message}") from None
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def processor(self, schema: Any, max_tokens: int | None = None) -> "GrammarLogitsProcessor":
        """A fresh processor (one per request: it holds the matcher state). ``BudgetTooSmallError`` when
        ``max_tokens`` cannot hold the shortest answer."""
        compiled = self.compile(schema)
        if max_tokens is None:
            return GrammarLogitsProcessor(compiled, self)
        need = self.min_tokens(schema, limit=max(max_tokens + 1, 1))
        if need > max_tokens:
            raise BudgetTooSmallError(f"the shortest {OutputSchema.of(schema).name} answer takes {need} tokens "
                                      f"(end of sequence included) and the budget is {max_tokens}")
        return GrammarLogitsProcessor(compiled, self, max_tokens, caution=_caution(need))

    def min_tokens(self, schema: Any, limit: int = 4096) -> int:
        """Tokens (EOS included) of the shortest output the closing path finds for ``schema`` (``limit`` if
        more): a budget below it cannot hold a valid answer. Deterministic, so cached per schema."""
        key = OutputSchema.of(schema).key
        known = self._min_tokens.get(key)
        if known is None or (known[0] >= known[1] and known[1] < limit):  # unknown, or only "at least" a smaller limit
            distance = GrammarLogitsProcessor(self.compile(schema), self)._closing_distance(limit)
            known = self._min_tokens[key] = (distance, limit)
        return min(known[0], limit)


class GrammarLogitsProcessor:
    """``f(output_token_ids, logits[vocab] float32)``: masks what the grammar (and the budget) forbids, in place.

    Called by the engine before each sampled token with the request's output so far; it first feeds
    the tokens sampled since the last call to the matcher. Never raises on the engine thread: a token
    the grammar rejects (only possible if something else edited the logits) ends the request.
    """

    def __init__(self, compiled, backend: GrammarBackend, max_tokens: int | None = None, caution: int = 48):
        xgr = load_xgrammar()
        self._xgr = xgr
        self.backend = backend
        self.matcher = xgr.GrammarMatcher(compiled)
        self.max_tokens = max_tokens
        self._caution = caution
        self._bitmask = xgr.allocate_token_bitmask(1, backend.vocab_size)
        self._bits = self._bitmask.numpy()[0].view(np.uint32)
        self._scratch = xgr.allocate_token_bitmask(1, backend.vocab_size)  # for walks on forked matchers
        self._fed = 0
        self._lead: int | None = None  # the output's last byte when it is a restricted UTF-8 lead byte
        self._check_at = max_tokens or 0
        self.rejected_token: int | None = None

    def __call__(self, output_token_ids: list[int], logits: torch.Tensor) -> None:
        for token in output_token_ids[self._fed:]:
            if self.rejected_token is None and not self.matcher.is_terminated() \
                    and not self.matcher.accept_token(token):
                self.rejected_token = token
            self._lead = self.backend.lead_at_end.get(token)
        self._fed = len(output_token_ids)
        if self.rejected_token is not None or self.matcher.is_terminated():
            return self._force(logits, self.backend.stop_token_ids[0])
        self.matcher.fill_next_token_bitmask(self._bitmask)
        self.backend.mask_after(self._bits, self._lead)
        if self.max_tokens is not None:
            self._keep_within(self.max_tokens - len(output_token_ids), logits)
        self._xgr.apply_token_bitmask_inplace(logits.view(1, -1), self._bitmask.to(logits.device, non_blocking=True),
                                              vocab_size=self.backend.vocab_size)

    # ----- finishing within the budget -----

    def _keep_within(self, remaining: int, logits: torch.Tensor) -> None:
        """Narrows the allowed tokens (``self._bits``) to those whose closing distance fits ``remaining - 1``."""
        if remaining > self._check_at:
            return
        distance = self._closing_distance(remaining)
        slack = remaining - distance
        if slack > self._caution:  # far: look again halfway to the caution zone (never later than _CHECK_EVERY on)
            self._check_at = remaining - min(_CHECK_EVERY, max(1, (slack - self._caution) // 2))
            return
        self._check_at = remaining  # inside the zone: every token
        keep = set()
        closing = self._closing_choice(self._bits)
        if closing is not None:
            keep.add(closing)  # the closing path's next token: its distance is distance - 1 <= remaining - 1
        if slack > 1:
            for token in self._likeliest_allowed(logits, _VERIFY):
                if token not in keep and self._fits_after(token, remaining - 1):
                    keep.add(token)
        self._bits[:] = 0
        for token in keep:
            self._bits[token >> 5] |= np.uint32(1) << np.uint32(token & 31)

    def _likeliest_allowed(self, logits: torch.Tensor, k: int) -> list[int]:
        allowed = np.flatnonzero(np.unpackbits(self._bits.view(np.uint8), bitorder="little")[:self.backend.vocab_size])
        if allowed.size <= k:
            return allowed.tolist()
        scores = logits.detach().float().cpu().numpy()[allowed]
        return allowed[np.argpartition(-scores, k)[:k]].tolist()

    def _fits_after(self, token: int, left: int) -> bool:
        """Does the closing distance after ``token`` fit in ``left`` tokens?"""
        if token in self.backend.stop_token_ids:
            return True
        matcher = self.matcher.fork()
        if not matcher.accept_token(token):
            return False
        return self._walk(matcher, self.backend.lead_at_end.get(token), left + 1) <= left

    def _closing_choice(self, bits: np.ndarray) -> int | None:
        """Stop if allowed, else the first allowed closing piece, else the longest allowed token (None: nothing)."""
        for token in self.backend.stop_token_ids:
            if bits[token >> 5] >> np.uint32(token & 31) & 1:
                return token
        for token in self.backend.closing_token_ids:
            if bits[token >> 5] >> np.uint32(token & 31) & 1:
                return token
        allowed = np.unpackbits(bits.view(np.uint8), bitorder="little")[:self.backend.vocab_size]
        if not allowed.any():
            return None
        return int(np.argmax(np.where(allowed, self.backend.token_lengths[:self.backend.vocab_size], -1)))

    def _closing_distance(self, limit: int) -> int:
        """Tokens (stop included) that the closing path takes to finish the JSON from here; ``limit`` if more.

        The path from a matcher state is deterministic, so a budget that holds it holds a valid answer."""
        return self._walk(self.matcher.fork(), self._lead, limit)

    def _walk(self, matcher, lead: int | None, limit: int) -> int:
        bitmask = self._scratch
        bits = bitmask.numpy()[0].view(np.uint32)
        for steps in range(1, limit + 1):
            if matcher.is_terminated():
                return steps
            matcher.fill_next_token_bitmask(bitmask)
            self.backend.mask_after(bits, lead)
            token = self._closing_choice(bits)
            if token is None or token in self.backend.stop_token_ids:
                return steps
            if not matcher.accept_token(token):
                return limit
            lead = self.backend.lead_at_end.get(token)
        return limit

    @staticmethod
    def _force(logits: torch.Tensor, token: int) -> None:
        logits.fill_(float("-inf"))
        logits[token] = 0.0


__all__ = ["BudgetTooSmallError", "GrammarBackend", "GrammarLogitsProcessor", "tokenizer_info"]
