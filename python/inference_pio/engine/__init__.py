"""Model-independent generation engine pieces.

- :mod:`.kv_cache`: :class:`PagedKVCache` (per-layer block tensors, block tables, allocation) and
  :class:`KVCacheFullError`; :mod:`.metadata`: the :class:`AttentionMetadata` of one step.
- :mod:`.prefix_cache`: :class:`PrefixCachingAllocator` (reference-counted blocks, a hash index of
  full blocks, LRU eviction) behind the cache's automatic prefix caching; :mod:`.block_hash`: the
  chain hashes that name full blocks.
- :mod:`.sampler`: :class:`SamplingParams` and the batched :class:`Sampler`.
- :mod:`.stopping`: :class:`StopChecker` (EOS / stop ids, max tokens, stop strings).
- :mod:`.streaming`: :class:`IncrementalDetokenizer` (UTF-8 safe text pieces).
- :mod:`.sequence`: :class:`Sequence`, one request's tokens, generator, detokenizer and stop state.
- :mod:`.scheduler`: :class:`Scheduler` (continuous batching: admission, chunked prefill, preemption).
- :mod:`.generate`: :class:`GenerationEngine` (steps, sampling, sync generate/stream) and
  :class:`RequestOutput`; :mod:`.async_engine`: :class:`AsyncEngine` (a stepping thread for asyncio).
"""

from .async_engine import AsyncEngine
from .generate import GenerationEngine, RequestOutput
from .kv_cache import BlockAllocator, KVCacheFullError, KVCacheUsage, PagedKVCache
from .metadata import AttentionMetadata
from .prefix_cache import PrefixCachingAllocator, PrefixHit
from .sampler import Sampler, SamplingParams, apply_repetition_penalty, filter_logits
from .scheduler import Request, Scheduler
from .sequence import Sequence
from .stopping import FINISH_LENGTH, FINISH_STOP, StopChecker, StopStringMatcher
from .streaming import IncrementalDetokenizer

__all__ = [
    "AsyncEngine",
    "AttentionMetadata",
    "BlockAllocator",
    "FINISH_LENGTH",
    "FINISH_STOP",
    "GenerationEngine",
    "IncrementalDetokenizer",
    "KVCacheFullError",
    "KVCacheUsage",
    "PagedKVCache",
    "PrefixCachingAllocator",
    "PrefixHit",
    "Request",
    "RequestOutput",
    "Sampler",
    "Scheduler",
    "SamplingParams",
    "Sequence",
    "StopChecker",
    "StopStringMatcher",
    "apply_repetition_penalty",
    "filter_logits",
]
