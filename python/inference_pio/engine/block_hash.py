"""Chain hashes of full KV blocks, the names prefix caching finds blocks by.

A full block's keys and values depend on every token before it, so block ``i`` of a sequence is
named by ``sha256(hash of block i-1 + its token ids)``, the chain starting from a root that holds
what else shapes the cached values (the model, later a LoRA adapter). SHA-256 rather than Python's
``hash``: a server mixes prompts from different clients, and a collision one of them could craft
would hand it another's keys and values.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence

BlockHash = bytes


def root_hash(extra_key: bytes | str = b"") -> BlockHash:
    """The parent hash of a chain's first block; ``extra_key`` names what else shapes the cached values."""
    return hashlib.sha256(b"inference-pio prefix cache\0" + (extra_key.encode() if isinstance(extra_key, str)
                                                            else bytes(extra_key))).digest()


def extend_block_hashes(hashes: list[BlockHash], token_ids: Sequence[int], block_size: int,
                        root: BlockHash) -> list[BlockHash]:
    """Appends to ``hashes`` the chain hashes of the full blocks of ``token_ids`` it does not cover yet.

    ``hashes`` is kept by the caller from step to step (token ids only ever grow), so each block is
    hashed once per sequence.
    """
    parent = hashes[-1] if hashes else root
    for i in range(len(hashes), len(token_ids) // block_size):
        block = array("q", token_ids[i * block_size:(i + 1) * block_size])
        parent = hashlib.sha256(parent + block.tobytes()).digest()
        hashes.append(parent)
    return hashes
