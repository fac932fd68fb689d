"""Choosing the replica for a request: the one that served the same prompt prefix, the least loaded otherwise.

The prompt text is cut into blocks of ``block_chars`` characters and each block's hash chains the one
before it (as the KV cache's prefix blocks do), so two prompts share a hash exactly when they share
every character up to the end of that block. A bounded LRU table maps block hashes to the replica that
last served them; a request goes to the replica holding its longest known prefix unless that replica is
saturated (``max_inflight`` requests, or ``imbalance`` more than the least-loaded replica).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict, Counter

PREFIX, NO_PREFIX, SATURATED, ROUND_ROBIN = "prefix", "no_prefix", "saturated", "round_robin"


def prefix_hashes(text: str, block_chars: int = 64, max_blocks: int = 64) -> list[bytes]:
    """Chained hashes of the whole blocks among the first ``max_blocks`` blocks of ``text``."""
    out, previous = [], b""
    for start in range(0, min(len(text) // block_chars, max_blocks) * block_chars, block_chars):
        previous = hashlib.blake2b(previous + text[start:start + block_chars].encode(), digest_size=16).digest()
        out.append(previous)
    return out


def routing_text(path: str, body: bytes) -> str:
    """The text a request's prompt starts with (the rendered messages of a chat); "" when it has none."""
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        return ""  # the replica answers the 400
    if not isinstance(payload, dict):
        return ""
    if path.endswith("/chat/completions") and isinstance(payload.get("messages"), list):
        return "".join(_message_text(m) for m in payload["messages"])
    if path.endswith("/completions"):
        prompt = payload.get("prompt")
        if isinstance(prompt, str):
            return prompt
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return "".join(f"{t}," for t in prompt)
    return ""


def _message_text(message) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, list):  # content parts: the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    elif not isinstance(content, str):
        content = json.dumps(content, sort_keys=True)
    return f"<{message.get('role')}>{content}\n"


class PrefixRouter:
    """Replica choice by prompt prefix with least-loaded fallback; ``policy="round_robin"`` for comparison."""

    def __init__(self, replicas: int, policy: str = "prefix", block_chars: int = 64, max_inflight: int = 32,
                 imbalance: int = 4, table_size: int = 100_000):
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        if policy not in ("prefix", ROUND_ROBIN):
            raise ValueError(f"unknown routing policy {policy!r} (prefix or round_robin)")
        self.replicas, self.policy, self.block_chars = replicas, policy, block_chars
        self.max_inflight, self.imbalance, self.table_size = max_inflight, imbalance, table_size
        self.inflight = [0] * replicas
        self.decisions: Counter = Counter()
        self._owner: OrderedDict[bytes, int] = OrderedDict()
        self._next = 0

    def choose(self, text: str) -> tuple[int, str]:
        """``(replica, reason)`` for a prompt starting with ``text``; counts the request as in flight there."""
        if self.policy == ROUND_ROBIN:
            replica, reason = self._next, ROUND_ROBIN
            self._next = (self._next + 1) % self.replicas
        else:
            hashes = prefix_hashes(text, self.block_chars)
            preferred = next((self._owner[h] for h in reversed(hashes) if h in self._owner), None)
            if preferred is None:
                replica, reason = self._least_loaded(), NO_PREFIX
            elif self._saturated(preferred):
                replica, reason = self._least_loaded(), SATURATED
            else:
                replica, reason = preferred, PREFIX
            self._remember(hashes, replica)
        self.inflight[replica] += 1
        self.decisions[reason] += 1
        return replica, reason

    def release(self, replica: int) -> None:
        """The request sent to ``replica`` finished (or failed)."""
        self.inflight[replica] = max(0, self.inflight[replica] - 1)

    def forget(self, replica: int) -> None:
        """``replica`` was replaced: its cache is empty, so none of its prefixes should attract requests."""
        for h in [h for h, r in self._owner.items() if r == replica]:
            del self._owner[h]

    def _saturated(self, replica: int) -> bool:
        load = self.inflight[replica]
        return load >= self.max_inflight or load - min(self.inflight) > self.imbalance

    def _least_loaded(self) -> int:
        # Ties rotate, so a run of idle-time requests with new prefixes spreads over the replicas.
        replica = min(range(self.replicas), key=lambda r: (self.inflight[r], (r - self._next) % self.replicas))
        self._next = (replica + 1) % self.replicas
        return replica

    def _remember(self, hashes: list[bytes], replica: int) -> None:
        for h in hashes:
            self._owner[h] = replica
            self._owner.move_to_end(h)
        while len(self._owner) > self.table_size:
            self._owner.popitem(last=False)
