"""Live figures per model (requests, errors, latency percentiles, tokens/s) and a circuit breaker.

``ModelHealth`` is what the ``ModelSwitcher`` keeps for each model it routes to. The breaker opens
after ``failure_threshold`` consecutive failures; while open the model is skipped for ``cooldown``
seconds; then one request may try it again (half-open): success closes the breaker, failure reopens it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFigures:
    """A snapshot. Latencies in seconds over the last ``window`` successes (None before the first);
    ``tokens_per_second``: output tokens over generation time, all successes so far."""

    model_id: str
    requests: int
    successes: int
    errors: int
    timeouts: int
    latency_p50: float | None
    latency_p95: float | None
    tokens_per_second: float | None
    consecutive_failures: int
    circuit_open: bool
    last_error: str | None


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class ModelHealth:
    def __init__(self, model_id: str, failure_threshold: int = 3, cooldown: float = 30.0, window: int = 1000,
                 clock: Callable[[], float] = time.monotonic):
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold}")
        if cooldown < 0:
            raise ValueError(f"cooldown must be >= 0 seconds, got {cooldown}")
        self.model_id = model_id
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=window)
        self.requests = self.successes = self.errors = self.timeouts = 0
        self.consecutive_failures = 0
        self._output_tokens = 0
        self._generation_seconds = 0.0
        self._open_until: float | None = None
        self._trial_in_flight = False
        self.last_error: str | None = None

    # ----- the breaker -----

    def available(self) -> bool:
        """May a request go to this model now? (Claims the single half-open trial when it is due.)"""
        with self._lock:
            if self._open_until is None:
                return True
            if self._clock() < self._open_until or self._trial_in_flight:
                return False
            self._trial_in_flight = True
            return True

    @property
    def circuit_open(self) -> bool:
        return self._open_until is not None

    @property
    def reopens_at(self) -> float:
        return self._open_until if self._open_until is not None else float("-inf")

    def abandon_trial(self) -> None:
        """The request that claimed the half-open trial was cancelled before an answer: the next may try."""
        with self._lock:
            self._trial_in_flight = False

    # ----- recording -----

    def record_success(self, latency: float, output_tokens: int = 0) -> None:
        with self._lock:
            self.requests += 1
            self.successes += 1
            self._latencies.append(latency)
            if output_tokens > 0:
                self._output_tokens += output_tokens
                self._generation_seconds += latency
            self.consecutive_failures = 0
            self._open_until = None
            self._trial_in_flight = False

    def record_failure(self, error: BaseException, timed_out: bool = False) -> None:
        with self._lock:
            self.requests += 1
            self.errors += 1
            self.timeouts += int(timed_out)
            self.consecutive_failures += 1
            self.last_error = f"{type(error).__name__}: {error}"
            if self._trial_in_flight or self.consecutive_failures >= self.failure_threshold:
                self._open_until = self._clock() + self.cooldown
            self._trial_in_flight = False

    def figures(self) -> ModelFigures:
        with self._lock:
            ordered = sorted(self._latencies)
            return ModelFigures(
                self.model_id, self.requests, self.successes, self.errors, self.timeouts,
                _percentile(ordered, 0.5) if ordered else None, _percentile(ordered, 0.95) if ordered else None,
                self._output_tokens / self._generation_seconds if self._generation_seconds > 0 else None,
                self.consecutive_failures, self._open_until is not None, self.last_error,
            )


__all__ = ["ModelFigures", "ModelHealth"]
