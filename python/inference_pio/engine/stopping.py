"""Stop conditions: EOS / stop token ids, a maximum number of new tokens, and stop strings.

Stop strings are matched on the detokenized text as it streams, so a stop string split across tokens
is found. Text that could still turn out to be the start of a stop string is held back, so the text
returned before a match never contains any part of the match. Matching runs one KMP automaton per
stop string over each new character: O(number of stop strings) amortized work per character, and
the held-back text is at most the longest stop string minus one character; earlier text is never
scanned again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .sampler import SamplingParams

FINISH_STOP = "stop"
FINISH_LENGTH = "length"


class _KMP:
    """Longest prefix of ``pattern`` that is a suffix of the text fed so far."""

    __slots__ = ("pattern", "fail", "state")

    def __init__(self, pattern: str):
        self.pattern = pattern
        fail = [0] * len(pattern)
        k = 0
        for i in range(1, len(pattern)):
            while k and pattern[i] != pattern[k]:
                k = fail[k - 1]
            if pattern[i] == pattern[k]:
                k += 1
            fail[i] = k
        self.fail = fail
        self.state = 0

    def step(self, ch: str) -> bool:
        """Advances by one character; True when the whole pattern has just been matched."""
        p, k = self.pattern, self.state
        while k and p[k] != ch:
            k = self.fail[k - 1]
        if p[k] == ch:
            k += 1
        if k == len(p):
            self.state = self.fail[k - 1]
            return True
        self.state = k
        return False


class StopStringMatcher:
    """Finds the first completed occurrence of any of ``stops`` in text fed piece by piece."""

    def __init__(self, stops: Sequence[str]):
        if not stops or any(not isinstance(s, str) or not s for s in stops):
            raise ValueError(f"stops must be a non-empty list of non-empty strings, got {stops!r}")
        self._automata = [_KMP(s) for s in stops]

    def feed(self, text: str) -> tuple[int, str] | None:
        """Feeds ``text``; returns ``(end, stop)`` for the first match, ``end`` being the index in
        ``text`` just past the match (the match may begin in earlier pieces), or None."""
        automata = self._automata
        for i, ch in enumerate(text):
            hit = None
            for a in automata:
                # Every automaton must step, even after a hit, to keep its state right.
                if a.step(ch) and (hit is None or len(a.pattern) > len(hit)):
                    hit = a.pattern  # among matches ending here, the longest starts earliest
            if hit is not None:
                return i + 1, hit
        return None

    @property
    def partial(self) -> int:
        """Characters at the end of the text fed so far that may begin a stop string."""
        return max(a.state for a in self._automata)


class StopChecker:
    """Per-request stop state. Feed each generated token with its new text through :meth:`update`.

    Finish reasons: ``"stop"`` (an EOS id unless ``ignore_eos``, a ``stop_token_ids`` entry, or a stop
    string) and ``"length"`` (``max_tokens`` new tokens). ``stop_reason`` is the token id or string
    that stopped it (None for EOS-free length stops). A stop token's text and a stop string are not
    part of the returned text (as in vLLM); text after a stop string within the same token is dropped.
    """

    def __init__(self, params: SamplingParams, eos_token_ids: Iterable[int] = ()):
        ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            ids.update(eos_token_ids)
        self._stop_ids = frozenset(ids)
        self._max_tokens = params.max_tokens
        self._matcher = StopStringMatcher(params.stop) if params.stop else None
        self._pending = ""
        self.num_tokens = 0
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def stops_on_token(self, token_id: int) -> bool:
        """Whether feeding ``token_id`` next finishes the request whatever its text (a stop id or the
        last allowed token); lets a caller flush its detokenizer before :meth:`update`."""
        return token_id in self._stop_ids or self.num_tokens + 1 >= self._max_tokens

    def update(self, token_id: int, text: str = "") -> str:
        """Feeds one generated token and the text it added; returns the text now safe to emit."""
        if self.finish_reason is not None:
            raise RuntimeError(f"update() after the request finished ({self.finish_reason!r})")
        self.num_tokens += 1
        if token_id in self._stop_ids:
            return self._finish(FINISH_STOP, token_id, self._pending)
        if self._matcher is None:
            out = text
        else:
            pending = self._pending + text
            hit = self._matcher.feed(text)
            if hit is not None:
                end, stop = hit
                match_start = len(pending) - len(text) + end - len(stop)
                return self._finish(FINISH_STOP, stop, pending[:match_start])
            keep = self._matcher.partial
            out, self._pending = (pending[:-keep], pending[-keep:]) if keep else (pending, "")
        if self.num_tokens >= self._max_tokens:
            return self._finish(FINISH_LENGTH, None, out + self._pending)
        return out

    def _finish(self, reason: str, stop_reason: int | str | None, text: str) -> str:
        self.finish_reason = reason
        self.stop_reason = stop_reason
        self._pending = ""
        return text
