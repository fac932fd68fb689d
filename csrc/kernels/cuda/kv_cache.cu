// reshape_and_cache: key/value [T, KH, D] rows copied to the paged caches [num_blocks, block_size, KH, D]
// at slot_mapping[t] (slot = block * block_size + offset); negative slots are skipped (padding).
// One block per token, threads over the KH * D elements of that token's key and value rows.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace pio::cuda {
namespace {

template <class T, class I>
__global__ void reshape_and_cache_kernel(const T* __restrict__ key, int64_t k_stride, const T* __restrict__ value,
                                         int64_t v_stride, T* __restrict__ key_cache, T* __restrict__ value_cache,
                                         const I* __restrict__ slots, int64_t slot_stride, int64_t num_slots,
                                         int64_t row) {
  const int64_t t = blockIdx.x;
  const int64_t slot = int64_t(slots[t * slot_stride]);
  if (slot < 0 || slot >= num_slots) return;  // padding (or out of range: rejected on the host)
  const T* k = key + t * k_stride;
  const T* v = value + t * v_stride;
  T* kc = key_cache + slot * row;
  T* vc = value_cache + slot * row;
  for (int64_t i = threadIdx.x; i < row; i += blockDim.x) {
    kc[i] = k[i];
    vc[i] = v[i];
  }
}

void check_source(const TensorView& t, const char* name, const TensorView& key) {
  check_on_device(t, name, key.device_index);
  check_ndim(t, name, 3);
  check_dim(t, name, 0, key.size(0));
  check_dim(t, name, 1, key.size(1));
  check_dim(t, name, 2, key.size(2));
  check_same_dtype(t, name, key, "key");
  PIO_CHECK(t.stride(2) == 1 && (t.size(1) <= 1 || t.stride(1) == t.size(2)), name,
            ": each token's [heads, head_dim] block must be contiguous");
}

void check_cache(const TensorView& t, const char* name, const TensorView& key) {
  check_on_device(t, name, key.device_index);
  check_ndim(t, name, 4);
  check_dim(t, name, 2, key.size(1));
  check_dim(t, name, 3, key.size(2));
  check_contiguous(t, name);
  check_same_dtype(t, name, key, "key");
}

}  // namespace

void reshape_and_cache(const TensorView& key, const TensorView& value, const TensorView& key_cache,
                       const TensorView& value_cache, const TensorView& slot_mapping) {
  check_cuda(key, "key");
  check_float(key, "key");
  check_ndim(key, "key", 3);
  check_source(key, "key", key);
  check_source(value, "value", key);
  check_cache(key_cache, "key_cache", key);
  check_cache(value_cache, "value_cache", key);
  PIO_CHECK(value_cache.size(0) == key_cache.size(0) && value_cache.size(1) == key_cache.size(1),
            "value_cache must have key_cache's shape ", key_cache.shape_str(), ", got ", value_cache.shape_str());
  check_on_device(slot_mapping, "slot_mapping", key.device_index);
  check_ndim(slot_mapping, "slot_mapping", 1);
  check_dim(slot_mapping, "slot_mapping", 0, key.size(0));
  PIO_CHECK(slot_mapping.dtype == DType::Int64 || slot_mapping.dtype == DType::Int32,
            "slot_mapping must be int64 or int32, got ", dtype_name(slot_mapping.dtype));
  const int64_t tokens = key.size(0), row = key.size(1) * key.size(2);
  if (tokens == 0 || row == 0) return;
  PIO_CHECK(tokens <= 0x7fffffff, "too many tokens for one launch: ", tokens);
  DeviceGuard guard(key);
  const int64_t num_slots = key_cache.size(0) * key_cache.size(1);
  const int threads = int(std::min<int64_t>(512, (row + 31) / 32 * 32));
  PIO_CUDA_DISPATCH_FLOAT(key.dtype, "key", [&] {
    using T = scalar_t;
    auto go = [&](const auto* slots) {
      reshape_and_cache_kernel<<<unsigned(tokens), threads, 0, stream_of(key)>>>(
          static_cast<const T*>(key.data), key.stride(0), static_cast<const T*>(value.data), value.stride(0),
          static_cast<T*>(key_cache.data), static_cast<T*>(value_cache.data), slots, slot_mapping.stride(0),
          num_slots, row);
    };
    if (slot_mapping.dtype == DType::Int64) go(static_cast<const int64_t*>(slot_mapping.data));
    else go(static_cast<const int32_t*>(slot_mapping.data));
  });
  check_launch("reshape_and_cache");
}

}  // namespace pio::cuda
