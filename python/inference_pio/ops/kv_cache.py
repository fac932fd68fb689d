"""reshape_and_cache: write new keys and values into the paged KV cache.

Layout: ``key``/``value`` are ``[num_tokens, num_kv_heads, head_dim]`` with the last two
dimensions contiguous (the token stride is free, so a slice of a fused qkv projection works);
``key_cache``/``value_cache`` are ``[num_blocks, block_size, num_kv_heads, head_dim]``
contiguous, in key's dtype; ``slot_mapping[t] = block * block_size + offset`` (int32 or
int64) says where token t goes, and a negative slot skips the token (padding).
"""

from __future__ import annotations

import torch

from . import _dispatch
from ._checks import (FLOAT_DTYPES, INDEX_DTYPES, check_no_aliasing, check_same_device, check_same_dtype, check_shape,
                      check_tensor, same_view)
from ._tensor import view
from .. import _native

_reshape_and_cache = _dispatch.op("reshape_and_cache")


def check_slot_mapping_values(slot_mapping: torch.Tensor, num_slots: int) -> None:
    """Raises ValueError naming slot_mapping when a slot is >= num_slots (reads the values)."""
    if slot_mapping.numel() == 0:
        return
    bad = (slot_mapping >= num_slots).nonzero()
    if bad.numel():
        t = int(bad[0, 0])
        raise ValueError(
            f"slot_mapping[{t}] = {int(slot_mapping[t])} is outside the cache (num_blocks * block_size = {num_slots})"
        )


def reshape_and_cache_reference(
    key: torch.Tensor, value: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """The specification: ``cache.view(-1, heads, dim)[slot] = row`` for every slot >= 0.

    Slots should be distinct; when one repeats, which token's row lands is backend-defined
    (the cpu backend keeps the last)."""
    num_blocks, block_size, heads, dim = key_cache.shape
    check_slot_mapping_values(slot_mapping, num_blocks * block_size)
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    key_cache.view(-1, heads, dim)[slots] = key[keep]
    value_cache.view(-1, heads, dim)[slots] = value[keep]


def _check_rows(name: str, t: torch.Tensor, key: torch.Tensor) -> None:
    check_tensor(name, t, ndim=3, dtypes=FLOAT_DTYPES)
    check_shape(name, t, tuple(key.shape))
    check_same_dtype(name, t, "key", key)
    check_same_device(name, t, "key", key)
    _, heads, dim = t.shape
    if (dim > 1 and t.stride(2) != 1) or (heads > 1 and t.stride(1) != dim):
        raise ValueError(f"{name} must have contiguous [num_kv_heads, head_dim] rows, got strides {t.stride()}")


def _check_cache(name: str, t: torch.Tensor, key: torch.Tensor) -> None:
    check_tensor(name, t, ndim=4, contiguous=True)
    check_same_dtype(name, t, "key", key)
    check_same_device(name, t, "key", key)
    check_shape(name, t, (None, None, key.shape[1], key.shape[2]))


@_dispatch.traced_as_custom_op("reshape_and_cache")
def reshape_and_cache(
    key: torch.Tensor, value: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Writes ``key``/``value [num_tokens, num_kv_heads, head_dim]`` into ``key_cache``/``value_cache
    [num_blocks, block_size, num_kv_heads, head_dim]`` at ``slot_mapping [num_tokens]`` (int32/int64,
    negative: skip). A slot >= num_blocks * block_size raises ValueError before anything is written, and
    so do caches that share memory with each other or with the other arguments."""
    _check_rows("key", key, key)
    _check_rows("value", value, key)
    _check_cache("key_cache", key_cache, key)
    _check_cache("value_cache", value_cache, key)
    check_shape("value_cache", value_cache, tuple(key_cache.shape))
    check_tensor("slot_mapping", slot_mapping, ndim=1, dtypes=INDEX_DTYPES, contiguous=True)
    check_shape("slot_mapping", slot_mapping, (key.shape[0],))
    check_same_device("slot_mapping", slot_mapping, "key", key)
    if same_view(key_cache, value_cache) and same_view(key, value):  # one cache (DeepSeek's latent rows): one write
        check_no_aliasing({"key_cache": key_cache}, {"key": key, "slot_mapping": slot_mapping})
    else:
        check_no_aliasing({"key_cache": key_cache, "value_cache": value_cache},
                          {"key": key, "value": value, "slot_mapping": slot_mapping})
    _reshape_and_cache(key.device, key, value, key_cache, value_cache, slot_mapping)


# Backends: impl(key, value, key_cache, value_cache, slot_mapping), arguments validated above.
_reshape_and_cache.register("reference", reshape_and_cache_reference)


@_reshape_and_cache.register("cpu")
def _reshape_and_cache_cpu(key, value, key_cache, value_cache, slot_mapping):
    _native.cpu_module().reshape_and_cache(view(key), view(value), view(key_cache), view(value_cache), view(slot_mapping))


@_reshape_and_cache.register("cuda")
def _reshape_and_cache_cuda(key, value, key_cache, value_cache, slot_mapping):
    _native.cuda_module().reshape_and_cache(view(key), view(value), view(key_cache), view(value_cache), view(slot_mapping))


_reshape_and_cache.register_lazy("triton", "inference_pio.kernels.kv_cache:reshape_and_cache")


# torch.compile sees this custom op instead of the raw kernel call.
@torch.library.custom_op("inference_pio::reshape_and_cache", mutates_args=("key_cache", "value_cache"))
def _reshape_and_cache_op(
    key: torch.Tensor, value: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    reshape_and_cache(key, value, key_cache, value_cache, slot_mapping)


@_reshape_and_cache_op.register_fake
def _(key, value, key_cache, value_cache, slot_mapping):
    return None
