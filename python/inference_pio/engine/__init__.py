"""Model-independent generation engine pieces.

- :mod:`.kv_cache`: :class:`PagedKVCache` (per-layer block tensors, block tables, allocation) and
  :class:`KVCacheFullError`; :mod:`.metadata`: the :class:`AttentionMetadata` of one step.
- :mod:`.sampler`: :class:`SamplingParams` and the batched :class:`Sampler`.
- :mod:`.stopping`: :class:`StopChecker` (EOS / stop ids, max tokens, stop strings).
- :mod:`.streaming`: :class:`IncrementalDetokenizer` (UTF-8 safe text pieces).
- :mod:`.sequence`: :class:`Sequence`, one request's tokens, generator, detokenizer and stop state.
"""

from .kv_cache import BlockAllocator, KVCacheFullError, KVCacheUsage, PagedKVCache
from .metadata import AttentionMetadata
from .sampler import Sampler, SamplingParams, apply_repetition_penalty, filter_logits
from .sequence import Sequence
from .stopping import FINISH_LENGTH, FINISH_STOP, StopChecker, StopStringMatcher
from .streaming import IncrementalDetokenizer

__all__ = [
    "AttentionMetadata",
    "BlockAllocator",
    "FINISH_LENGTH",
    "FINISH_STOP",
    "IncrementalDetokenizer",
    "KVCacheFullError",
    "KVCacheUsage",
    "PagedKVCache",
    "Sampler",
    "SamplingParams",
    "Sequence",
    "StopChecker",
    "StopStringMatcher",
    "apply_repetition_penalty",
    "filter_logits",
]
